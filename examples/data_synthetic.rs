//! Measures how fast the synthetic faces are drawn and optionally writes a contact sheet.
//!
//! `cargo run --release --example data_synthetic -- [N] [sheet.png] [confound]`
//! (confound: none | tilt | background). Prints images per second on one thread and on rayon's
//! pool.

use std::time::Instant;

use convscope::data::{Confound, SyntheticFaces};
use rayon::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let confound = match args.get(3).map(String::as_str) {
        Some("tilt") => Confound::HeadTilt { correlation: 1.0 },
        Some("background") => Confound::BackgroundBrightness { correlation: 1.0 },
        _ => Confound::None,
    };
    let set = SyntheticFaces::new(0, n).with_confound(confound)?;

    let t = Instant::now();
    let mut checksum = 0.0f32;
    for i in 0..n {
        checksum += set.draw(i).pixels[i % 4096];
    }
    let one = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let sum: f32 = (0..n).into_par_iter().map(|i| set.draw(i).pixels[0]).sum();
    let pool = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "{n} faces: {one:.0} images/s on one thread, {pool:.0} images/s on {} threads (checksum {:.3})",
        rayon::current_num_threads(),
        checksum + sum
    );

    if let Some(path) = args.get(2) {
        write_sheet(&set, path)?;
        println!("wrote {path}");
    }
    Ok(())
}

/// An 8x4 grid of faces (top half of each cell: the face, with the confound mask tinted red),
/// smiles and frowns alternating.
fn write_sheet(set: &SyntheticFaces, path: &str) -> Result<(), Box<dyn std::error::Error>> {
    const COLS: u32 = 8;
    const ROWS: u32 = 4;
    let mut sheet = image::RgbImage::new(COLS * 64, ROWS * 64 * 2);
    for k in 0..(COLS * ROWS) as usize {
        if k >= set.len() {
            break;
        }
        let face = set.draw(k);
        let (cx, cy) = ((k as u32 % COLS) * 64, (k as u32 / COLS) * 128);
        for y in 0..64usize {
            for x in 0..64usize {
                let at = y * 64 + x;
                let px = |c: usize| (face.pixels[c * 4096 + at] * 255.0) as u8;
                sheet.put_pixel(
                    cx + x as u32,
                    cy + y as u32,
                    image::Rgb([px(0), px(1), px(2)]),
                );
                let m = face.mask[at];
                let tint = |c: usize, w: f32| {
                    ((face.pixels[c * 4096 + at] * (1.0 - 0.6 * m) + w * 0.6 * m) * 255.0) as u8
                };
                sheet.put_pixel(
                    cx + x as u32,
                    cy + 64 + y as u32,
                    image::Rgb([tint(0, 1.0), tint(1, 0.0), tint(2, 0.0)]),
                );
            }
        }
    }
    sheet.save(path)?;
    Ok(())
}
