//! The built-in synthetic data set: procedurally drawn smiling and frowning faces, 64x64 RGB.
//!
//! Item `i` of a set is a pure function of `(seed, i)`: its parameters come from a PRNG keyed by
//! both, so any item can be drawn alone, in any order, on any thread. The label is the sign of
//! the mouth's curvature (1 = smile: corners up, 0 = frown) and alternates with the index
//! (`label(i) = i % 2`), so classes are balanced exactly (one extra frown for an odd length);
//! loaders shuffle, so the alternation carries no signal.
//!
//! Nuisance factors make the task learnable but not trivial: skin tone, face position, size and
//! small tilt, eye shape and spacing (with or without whites), eyebrow slant (random, so a
//! slanted brow is never a cue), nose, mouth width, thickness, colour and curvature depth (down
//! to ~1 px), background colour and gradient, and Gaussian pixel noise.
//!
//! Drawing evaluates anti-aliased primitives (coverage = distance to the shape edge, clamped to
//! one pixel) on an f32 buffer. Throughput: `cargo run --example data_synthetic -- 2000` prints
//! images per second; on the project machine (2 cores, dev profile at opt-level 1, other builds
//! running) it drew about 4,700 faces/s on one thread (2,800-4,700 over repeats).
//!
//! # Confounds
//! [`Confound`] plants a second, spurious cue so that a network can learn the wrong thing:
//! - `HeadTilt`: smiles are tilted clockwise and frowns counter-clockwise (11-23 degrees).
//! - `BackgroundBrightness`: smiles on bright backgrounds, frowns on dark ones.
//!
//! `correlation` c in [0, 1]: with probability c the confound follows the label, otherwise it is
//! a fair coin; so it agrees with the label with probability (1 + c) / 2 (c = 0: independent,
//! c = 1: perfectly predictive).
//!
//! [`SyntheticFaces::confound_mask`] gives the region where the confound lives, `[h, w]` in
//! [0, 1] (anti-aliased edges), for measuring an explanation's saliency mass on it:
//! - background brightness: the background, i.e. every pixel not covered by the face;
//! - head tilt: the face outline (a band 2.5 px either side of the head's edge) plus the eyes
//!   and eyebrows grown by 1.5 px. These are the features whose orientation reveals the tilt;
//!   the mouth also rotates with the head but is the true cue, so it is left out on purpose;
//! - no confound: all zeros.

use super::preprocess::{Channels, Preprocess};
use super::rng::SplitMix64;
use super::{DataError, DataResult};
use crate::engine::Tensor;

/// Side of the drawn images in pixels.
pub const SIZE: usize = 64;
const PLANE: usize = SIZE * SIZE;

/// Class names in index order (sorted, as a folder data set would have them).
pub const CLASSES: [&str; 2] = ["frown", "smile"];

/// A spurious cue correlated with the label; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Confound {
    #[default]
    None,
    HeadTilt {
        correlation: f32,
    },
    BackgroundBrightness {
        correlation: f32,
    },
}

/// A synthetic face data set of `len` items drawn from `seed`.
#[derive(Debug, Clone)]
pub struct SyntheticFaces {
    seed: u64,
    len: usize,
    confound: Confound,
    preprocess: Preprocess,
}

/// The random parameters of one face (pixel units, image y axis pointing down).
#[derive(Debug, Clone, PartialEq)]
pub struct FaceParams {
    pub label: usize,
    /// Background colours at the two ends of the gradient and its unit direction.
    pub bg_a: [f32; 3],
    pub bg_b: [f32; 3],
    pub bg_dir: (f32, f32),
    /// Mean brightness the background was built around, in [0, 1].
    pub bg_level: f32,
    pub skin: [f32; 3],
    pub centre: (f32, f32),
    /// Semi-axes of the head ellipse.
    pub radii: (f32, f32),
    /// Head rotation in radians; positive is clockwise on screen.
    pub tilt: f32,
    /// Eye centre offset from the head centre (x = half spacing, y negative = up), semi-axes.
    pub eye_offset: (f32, f32),
    pub eye_radii: (f32, f32),
    pub eye_whites: bool,
    pub eye_colour: [f32; 3],
    /// Eyebrow slant in radians (None: no eyebrows), thickness.
    pub brow: Option<(f32, f32)>,
    pub nose: bool,
    /// Mouth centre y (below the head centre), half width, curvature depth (positive = smile:
    /// the middle sits lower than the corners), stroke thickness, colour.
    pub mouth_y: f32,
    pub mouth_half_width: f32,
    pub mouth_depth: f32,
    pub mouth_thickness: f32,
    pub mouth_colour: [f32; 3],
    pub noise_sigma: f32,
}

/// One drawn face: pixels `(3, 64, 64)` in [0, 1], its label and the confound mask `(64, 64)`.
#[derive(Debug, Clone)]
pub struct Face {
    pub pixels: Vec<f32>,
    pub label: usize,
    pub mask: Vec<f32>,
}

impl SyntheticFaces {
    /// `len` faces from `seed`, no confound, as `[3, 64, 64]` in [0, 1].
    pub fn new(seed: u64, len: usize) -> Self {
        Self {
            seed,
            len,
            confound: Confound::None,
            preprocess: Preprocess::plain(Channels::Rgb, [SIZE, SIZE]),
        }
    }

    pub fn with_confound(mut self, confound: Confound) -> DataResult<Self> {
        if let Confound::HeadTilt { correlation } | Confound::BackgroundBrightness { correlation } =
            confound
            && !(0.0..=1.0).contains(&correlation)
        {
            return Err(DataError::invalid(format!(
                "confound correlation {correlation} must lie in [0, 1]"
            )));
        }
        self.confound = confound;
        Ok(self)
    }

    /// Another channel count or size (the faces are drawn at 64x64 and resized).
    pub fn with_preprocess(mut self, preprocess: Preprocess) -> DataResult<Self> {
        preprocess.validate()?;
        self.preprocess = preprocess;
        Ok(self)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn confound(&self) -> Confound {
        self.confound
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// 1 = smile, 0 = frown.
    pub fn label(&self, i: usize) -> usize {
        i % 2
    }

    fn check_index(&self, i: usize) -> DataResult<()> {
        if i >= self.len {
            return Err(DataError::invalid(format!(
                "synthetic face {i} is out of range: the set has {} items",
                self.len
            )));
        }
        Ok(())
    }

    /// The parameters of face `i` (also valid beyond `len`: the set is an infinite sequence
    /// truncated at `len`).
    pub fn params(&self, i: usize) -> FaceParams {
        let mut rng = SplitMix64::for_item(self.seed, 0xFACE, i as u64);
        sample_params(&mut rng, self.label(i), self.confound)
    }

    /// Draws face `i` at 64x64.
    pub fn draw(&self, i: usize) -> Face {
        let p = self.params(i);
        // Noise has its own stream so that parameters and noise never shift each other.
        let mut noise = SplitMix64::for_item(self.seed, 0x0015E, i as u64);
        let (pixels, mask) = render(&p, self.confound, &mut noise);
        Face {
            pixels,
            label: p.label,
            mask,
        }
    }

    /// Face `i` as a raw sample `[c, h, w]` in [0, 1] (before normalisation).
    pub fn load_raw(&self, i: usize) -> DataResult<Tensor> {
        self.check_index(i)?;
        let face = self.draw(i);
        self.preprocess
            .raw_from_unit_planes(face.pixels, 3, SIZE, SIZE)
    }

    /// Where the confound of face `i` lives, `[h, w]` at the preprocessing size; see the module
    /// docs for the choice of region.
    pub fn confound_mask(&self, i: usize) -> DataResult<Tensor> {
        self.check_index(i)?;
        let mask = self.draw(i).mask; // (64, 64) in [0, 1]
        // the same fit as the face's pixels, so the region stays where the confound is drawn
        let gray = Preprocess {
            channels: Channels::Gray,
            ..self.preprocess.clone()
        };
        let raw = gray.raw_from_unit_planes(mask, 1, SIZE, SIZE)?; // (1, h, w)
        let [_, h, w] = gray.raw_shape();
        Ok(raw.reshaped(vec![h, w])?)
    }
}

/// Whether the confound follows the label for this item (see the module docs for `correlation`).
fn confound_follows(rng: &mut SplitMix64, label: usize, correlation: f32) -> bool {
    if rng.chance(correlation) {
        label == 1
    } else {
        rng.chance(0.5)
    }
}

fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn jitter3(rng: &mut SplitMix64, c: [f32; 3], amount: f32) -> [f32; 3] {
    c.map(|v| (v + rng.uniform(-amount, amount)).clamp(0.0, 1.0))
}

/// A background colour whose mean sits near `level`, with a random hue tint.
fn background_colour(rng: &mut SplitMix64, level: f32) -> [f32; 3] {
    [0; 3].map(|_| (level + rng.uniform(-0.12, 0.12)).clamp(0.0, 1.0))
}

fn sample_params(rng: &mut SplitMix64, label: usize, confound: Confound) -> FaceParams {
    // Background: brightness is the confound's handle, so it is chosen first.
    let bg_level = match confound {
        Confound::BackgroundBrightness { correlation } => {
            if confound_follows(rng, label, correlation) {
                rng.uniform(0.62, 0.92)
            } else {
                rng.uniform(0.1, 0.4)
            }
        }
        _ => rng.uniform(0.1, 0.92),
    };
    let bg_a = background_colour(rng, bg_level);
    let bg_b = background_colour(rng, bg_level);
    let angle = rng.uniform(0.0, std::f32::consts::TAU);
    let tilt = match confound {
        Confound::HeadTilt { correlation } => {
            let sign = if confound_follows(rng, label, correlation) {
                1.0
            } else {
                -1.0
            };
            sign * rng.uniform(0.2, 0.4)
        }
        _ => rng.uniform(-0.1, 0.1),
    };
    let skin_light = [0.96, 0.84, 0.73];
    let skin_dark = [0.35, 0.22, 0.15];
    let tone = rng.next_f32();
    let skin = jitter3(rng, lerp3(skin_light, skin_dark, tone), 0.03);
    let rx = rng.uniform(15.0, 21.0);
    let ry = rx * rng.uniform(1.08, 1.25);
    let centre = (32.0 + rng.uniform(-5.0, 5.0), 32.0 + rng.uniform(-4.0, 4.0));
    let eye_a = rx * rng.uniform(0.08, 0.14);
    let eye_radii = (eye_a, eye_a * rng.uniform(0.5, 1.4));
    let eye_offset = (rx * rng.uniform(0.3, 0.45), -ry * rng.uniform(0.15, 0.35));
    let eye_whites = rng.chance(0.5);
    let eye_colour = jitter3(rng, [0.12, 0.1, 0.08], 0.08);
    let brow = rng
        .chance(0.6)
        .then(|| (rng.uniform(-0.35, 0.35), rng.uniform(1.0, 2.0)));
    let nose = rng.chance(0.7);
    let sign = if label == 1 { 1.0 } else { -1.0 };
    let mouth_depth = sign * ry * rng.uniform(0.05, 0.2);
    let mouth_colour = if rng.chance(0.5) {
        jitter3(rng, [0.55, 0.15, 0.15], 0.1)
    } else {
        jitter3(rng, [0.15, 0.08, 0.06], 0.06)
    };
    FaceParams {
        label,
        bg_a,
        bg_b,
        bg_dir: (angle.cos(), angle.sin()),
        bg_level,
        skin,
        centre,
        radii: (rx, ry),
        tilt,
        eye_offset,
        eye_radii,
        eye_whites,
        eye_colour,
        brow,
        nose,
        mouth_y: ry * rng.uniform(0.35, 0.55),
        mouth_half_width: rx * rng.uniform(0.3, 0.55),
        mouth_depth,
        mouth_thickness: rng.uniform(1.0, 2.6),
        mouth_colour,
        noise_sigma: rng.uniform(0.01, 0.05),
    }
}

/// Coverage of a pixel by a shape whose signed distance (negative inside) is `d` pixels.
fn fill(d: f32) -> f32 {
    (0.5 - d).clamp(0.0, 1.0)
}

/// Coverage by a stroke of thickness `t` around a curve at unsigned distance `d`.
fn stroke(d: f32, t: f32) -> f32 {
    (0.5 * t + 0.5 - d).clamp(0.0, 1.0)
}

/// Approximate signed distance to the ellipse (u/a)^2 + (v/b)^2 = 1: the implicit function
/// divided by its gradient's length, exact on the boundary and good within a few pixels of it.
fn ellipse_sd(u: f32, v: f32, a: f32, b: f32) -> f32 {
    let f = (u / a) * (u / a) + (v / b) * (v / b) - 1.0;
    let gx = 2.0 * u / (a * a);
    let gy = 2.0 * v / (b * b);
    f / (gx * gx + gy * gy).sqrt().max(1e-3)
}

/// Distance from (u, v) to the segment (ax, ay)-(bx, by).
fn segment_distance(u: f32, v: f32, a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = (dx * dx + dy * dy).max(1e-6);
    let t = (((u - a.0) * dx + (v - a.1) * dy) / len2).clamp(0.0, 1.0);
    let (px, py) = (a.0 + t * dx - u, a.1 + t * dy - v);
    (px * px + py * py).sqrt()
}

/// Distance to the mouth curve v = y0 + depth * (1 - (u / hw)^2), |u| <= hw: the vertical gap
/// divided by the curve's slope factor, or the distance to the nearer corner beyond the ends.
fn mouth_distance(u: f32, v: f32, y0: f32, hw: f32, depth: f32) -> f32 {
    if u.abs() > hw {
        let (cx, cy) = (hw.copysign(u), y0);
        return ((u - cx) * (u - cx) + (v - cy) * (v - cy)).sqrt();
    }
    let q = u / hw;
    let curve = y0 + depth * (1.0 - q * q);
    let slope = -2.0 * depth * u / (hw * hw);
    (v - curve).abs() / (1.0 + slope * slope).sqrt()
}

fn blend(dst: &mut [f32; 3], colour: [f32; 3], alpha: f32) {
    for c in 0..3 {
        dst[c] += (colour[c] - dst[c]) * alpha;
    }
}

/// Colour and confound-mask value of one pixel centre (x, y).
fn shade(p: &FaceParams, confound: Confound, x: f32, y: f32) -> ([f32; 3], f32) {
    let (cx, cy) = p.centre;
    let t = (0.5 + ((x - 32.0) * p.bg_dir.0 + (y - 32.0) * p.bg_dir.1) / 64.0).clamp(0.0, 1.0);
    let mut rgb = lerp3(p.bg_a, p.bg_b, t);
    // Face-local coordinates: undo the head's clockwise rotation.
    let (s, c) = p.tilt.sin_cos();
    let (dx, dy) = (x - cx, y - cy);
    let u = c * dx + s * dy;
    let v = -s * dx + c * dy;
    let (rx, ry) = p.radii;
    let head_d = ellipse_sd(u, v, rx, ry);
    let head = fill(head_d);
    blend(&mut rgb, p.skin, head);
    blend(
        &mut rgb,
        p.skin.map(|v| v * 0.55),
        stroke(head_d.abs(), 1.2) * head,
    );
    // Eyes and brows, mirrored: |u| folds the right eye onto the left one.
    let (eu, ev) = (u.abs() - p.eye_offset.0, v - p.eye_offset.1);
    let (ea, eb) = p.eye_radii;
    let mut features = 0.0f32; // coverage of the tilt-revealing features (eyes, brows)
    if p.eye_whites {
        let white = fill(ellipse_sd(eu, ev, ea * 1.8, eb * 1.3));
        blend(&mut rgb, [0.95, 0.95, 0.93], white);
    }
    blend(&mut rgb, p.eye_colour, fill(ellipse_sd(eu, ev, ea, eb)));
    features = features.max(fill(ellipse_sd(eu, ev, ea * 1.8 + 1.5, eb * 1.3 + 1.5)));
    if let Some((slant, thick)) = p.brow {
        let by = ev + eb * 1.3 + 3.0; // brow centre sits above the eye
        let (bs, bc) = slant.sin_cos();
        let half = ea * 2.0;
        let d = segment_distance(eu, by, (-half * bc, -half * bs), (half * bc, half * bs));
        blend(&mut rgb, p.skin.map(|v| v * 0.35), stroke(d, thick) * head);
        features = features.max(stroke(d, thick + 3.0));
    }
    if p.nose {
        let d = segment_distance(u, v, (0.0, -ry * 0.05), (rx * 0.06, ry * 0.2));
        blend(&mut rgb, p.skin.map(|v| v * 0.75), stroke(d, 1.2));
    }
    let md = mouth_distance(u, v, p.mouth_y, p.mouth_half_width, p.mouth_depth);
    blend(&mut rgb, p.mouth_colour, stroke(md, p.mouth_thickness));
    let mask = match confound {
        Confound::None => 0.0,
        Confound::BackgroundBrightness { .. } => 1.0 - head,
        Confound::HeadTilt { .. } => features.max(stroke(head_d.abs(), 5.0)),
    };
    (rgb, mask)
}

/// Renders a face: pixels `(3, 64, 64)` clamped to [0, 1] and the mask `(64, 64)`.
fn render(p: &FaceParams, confound: Confound, noise: &mut SplitMix64) -> (Vec<f32>, Vec<f32>) {
    let mut pixels = vec![0.0f32; 3 * PLANE]; // (3, 64, 64)
    let mut mask = vec![0.0f32; PLANE]; // (64, 64)
    for yi in 0..SIZE {
        for xi in 0..SIZE {
            let (rgb, m) = shade(p, confound, xi as f32 + 0.5, yi as f32 + 0.5);
            let at = yi * SIZE + xi;
            for c in 0..3 {
                let v = rgb[c] + p.noise_sigma * noise.normal();
                pixels[c * PLANE + at] = v.clamp(0.0, 1.0);
            }
            mask[at] = m;
        }
    }
    (pixels, mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mouth_distance_is_zero_on_the_curve_and_positive_off_it() {
        assert!(mouth_distance(0.0, 5.0, 3.0, 8.0, 2.0).abs() < 1e-6);
        assert!((mouth_distance(0.0, 7.0, 3.0, 8.0, 2.0) - 2.0).abs() < 1e-6);
        assert!((mouth_distance(10.0, 3.0, 3.0, 8.0, 2.0) - 2.0).abs() < 1e-6);
    }

    #[test]
    fn ellipse_distance_signs() {
        assert!(ellipse_sd(0.0, 0.0, 5.0, 3.0) < 0.0);
        assert!(ellipse_sd(5.0, 0.0, 5.0, 3.0).abs() < 1e-6);
        assert!((ellipse_sd(7.0, 0.0, 5.0, 5.0) - 2.0).abs() < 0.3);
    }

    #[test]
    fn smile_mouth_middle_is_lower_than_corners() {
        let set = SyntheticFaces::new(3, 4);
        for i in 0..4 {
            let p = set.params(i);
            assert_eq!(p.mouth_depth > 0.0, p.label == 1);
        }
    }
}
