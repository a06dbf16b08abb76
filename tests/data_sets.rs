//! Data sources: synthetic faces, image folders (temporary ones and the shared real data sets),
//! IDX and CIFAR-10 files.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the point

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use convscope::data::decode::decode_planes;
use convscope::data::idx::write_idx;
use convscope::data::{
    Channels, CifarSet, Confound, DataError, FolderOptions, IdxSet, ImageFolder, Preprocess, Split,
    SyntheticFaces,
};

// ---------------------------------------------------------------- synthetic faces

#[test]
fn synthetic_same_seed_same_pixels_different_seed_differs() {
    let a = SyntheticFaces::new(11, 8);
    let b = SyntheticFaces::new(11, 8);
    let c = SyntheticFaces::new(12, 8);
    for i in 0..8 {
        let (fa, fb, fc) = (a.draw(i), b.draw(i), c.draw(i));
        assert_eq!(fa.pixels, fb.pixels, "face {i} differs under the same seed");
        assert_ne!(
            fa.pixels, fc.pixels,
            "face {i} is the same under another seed"
        );
        assert_eq!(fa.pixels.len(), 3 * 64 * 64);
        assert!(fa.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
    }
    // Items are independent of each other: drawing out of order gives the same face.
    assert_eq!(
        a.draw(5).pixels,
        SyntheticFaces::new(11, 100).draw(5).pixels
    );
}

#[test]
fn synthetic_labels_are_balanced_and_faces_vary() {
    let set = SyntheticFaces::new(3, 1000);
    let smiles = (0..1000).filter(|&i| set.label(i) == 1).count();
    assert_eq!(smiles, 500);
    let t = set.load_raw(0).unwrap();
    assert_eq!(t.shape(), &[3, 64, 64]);
    // Nuisance factors really vary: face sizes and skin tones spread out.
    let params: Vec<_> = (0..200).map(|i| set.params(i)).collect();
    let rx: Vec<f32> = params.iter().map(|p| p.radii.0).collect();
    let spread =
        rx.iter().cloned().fold(f32::MIN, f32::max) - rx.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 4.0, "face widths hardly vary: {spread}");
    assert!(
        params
            .iter()
            .all(|p| (p.mouth_depth > 0.0) == (p.label == 1))
    );
    assert!(set.load_raw(1000).is_err());
}

#[test]
fn synthetic_mouth_is_drawn_where_its_curvature_says() {
    // The label lives in the mouth's curvature (its middle below the corners for a smile, see
    // the unit tests); here: the drawn mouth passes through the middle point that the
    // parameters give, after the head's rotation, so the pixels carry the label.
    let set = SyntheticFaces::new(9, 300);
    let mut checked = 0;
    for i in 0..300 {
        let p = set.params(i);
        if p.mouth_thickness < 2.0 {
            continue;
        }
        let v = p.mouth_y + p.mouth_depth; // face-local middle of the mouth curve
        let (s, c) = p.tilt.sin_cos();
        let (x, y) = (p.centre.0 - s * v, p.centre.1 + c * v);
        let at = (y.floor() as usize) * 64 + x.floor() as usize;
        let px = set.draw(i).pixels;
        for ch in 0..3 {
            let got = px[ch * 4096 + at];
            assert!(
                (got - p.mouth_colour[ch]).abs() < 0.25,
                "face {i} channel {ch}: {got} vs mouth {:?}",
                p.mouth_colour
            );
        }
        checked += 1;
    }
    assert!(checked > 50);
}

#[test]
fn synthetic_confounds_follow_the_label_and_masks_mark_their_region() {
    assert!(
        SyntheticFaces::new(1, 4)
            .with_confound(Confound::HeadTilt { correlation: 1.5 })
            .is_err()
    );
    let tilt = SyntheticFaces::new(1, 200)
        .with_confound(Confound::HeadTilt { correlation: 1.0 })
        .unwrap();
    assert!((0..200).all(|i| {
        let p = tilt.params(i);
        (p.tilt > 0.0) == (p.label == 1)
    }));
    let free = SyntheticFaces::new(1, 400)
        .with_confound(Confound::HeadTilt { correlation: 0.0 })
        .unwrap();
    let agree = (0..400)
        .filter(|&i| {
            let p = free.params(i);
            (p.tilt > 0.0) == (p.label == 1)
        })
        .count();
    assert!(
        (140..260).contains(&agree),
        "correlation 0 agreed {agree}/400 times"
    );

    let bright = SyntheticFaces::new(2, 200)
        .with_confound(Confound::BackgroundBrightness { correlation: 1.0 })
        .unwrap();
    for i in 0..200 {
        let p = bright.params(i);
        assert_eq!(p.bg_level > 0.5, p.label == 1, "face {i}");
    }
    // Background mask: the corners are background, the face centre is not.
    let face = bright.draw(0);
    let p = bright.params(0);
    let centre = (p.centre.1 as usize) * 64 + p.centre.0 as usize;
    assert_eq!(face.mask[0], 1.0);
    assert_eq!(face.mask[centre], 0.0);
    let m = bright.confound_mask(0).unwrap();
    assert_eq!(m.shape(), &[64, 64]);
    // Tilt mask: covers some of the image (outline, eyes) but not the face centre or corners.
    let tm = tilt.draw(3).mask;
    let p = tilt.params(3);
    let covered: f32 = tm.iter().sum();
    assert!(
        covered > 200.0 && covered < 2500.0,
        "tilt mask covers {covered} px"
    );
    assert_eq!(tm[0], 0.0);
    let below_eyes = ((p.centre.1 + 0.1 * p.radii.1) as usize) * 64 + p.centre.0 as usize;
    assert_eq!(tm[below_eyes], 0.0);
    // No confound: empty mask.
    assert!(
        SyntheticFaces::new(2, 2)
            .draw(1)
            .mask
            .iter()
            .all(|&v| v == 0.0)
    );
}

#[test]
fn synthetic_preprocess_resizes_and_grays() {
    let set = SyntheticFaces::new(4, 2)
        .with_preprocess(Preprocess::plain(Channels::Gray, [32, 32]))
        .unwrap()
        .with_confound(Confound::BackgroundBrightness { correlation: 0.5 })
        .unwrap();
    assert_eq!(set.load_raw(1).unwrap().shape(), &[1, 32, 32]);
    assert_eq!(set.confound_mask(1).unwrap().shape(), &[32, 32]);
}

// ---------------------------------------------------------------- image folders

fn write_png(path: &Path, w: u32, h: u32, rgb: bool, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if rgb {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 30) as u8 ^ seed, (y * 20) as u8, seed.wrapping_mul(7)])
        });
        img.save(path).unwrap();
    } else {
        let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 16 + y) as u8 ^ seed]));
        img.save(path).unwrap();
    }
}

fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 9) as u8, (y * 5) as u8, 77]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// cats/ (3 gray PNGs, one nested), dogs/ (2 RGB PNGs, a good JPEG, a truncated JPEG, a text
/// file, a text file named .png).
fn mixed_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write_png(&r.join("cats/a.png"), 8, 8, false, 1);
    write_png(&r.join("cats/b.png"), 8, 8, false, 2);
    write_png(&r.join("cats/deeper/c.png"), 8, 8, false, 3);
    write_png(&r.join("dogs/d.png"), 8, 8, true, 4);
    write_png(&r.join("dogs/e.png"), 8, 8, true, 5);
    let jpg = jpeg_bytes(16, 16);
    std::fs::write(r.join("dogs/good.jpg"), &jpg).unwrap();
    std::fs::write(r.join("dogs/truncated.jpg"), &jpg[..jpg.len() / 2]).unwrap();
    std::fs::write(r.join("dogs/notes.txt"), "not an image").unwrap();
    std::fs::write(r.join("dogs/fake.png"), "not a png either").unwrap();
    std::fs::write(r.join("README.md"), "top-level files are ignored").unwrap();
    dir
}

fn all_opts() -> FolderOptions {
    FolderOptions {
        test_fraction: 0.0,
        preprocess: Preprocess::plain(Channels::Rgb, [8, 8]),
        ..FolderOptions::default()
    }
}

#[test]
fn folder_with_bad_files_loads_the_good_ones_and_names_the_bad() {
    let dir = mixed_folder();
    let folder = ImageFolder::open(dir.path(), &all_opts()).unwrap();
    assert_eq!(folder.classes(), &["cats".to_string(), "dogs".to_string()]);
    assert_eq!(folder.split_sizes(), [6, 0, 0]);
    assert_eq!(folder.class_counts(Split::Train), vec![3, 3]);
    let mut bad: Vec<String> = folder
        .skipped()
        .iter()
        .map(|s| {
            Path::new(&s.name)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    bad.sort();
    assert_eq!(bad, vec!["fake.png", "notes.txt", "truncated.jpg"]);
    let trunc = folder
        .skipped()
        .iter()
        .find(|s| s.name.ends_with("truncated.jpg"))
        .unwrap();
    assert!(trunc.reason.contains("truncated"), "{}", trunc.reason);
    let split = folder.split(Split::Train);
    for i in 0..split.len() {
        let t = split.load_raw(i).unwrap();
        assert_eq!(t.shape(), &[3, 8, 8]);
    }
}

#[test]
fn folder_channels_resize_and_normalisation() {
    let dir = mixed_folder();
    // Gray PNG replicated to 3 channels at the same size: exact x / 255.
    let (planes, c, h, w) = decode_planes(&dir.path().join("cats/a.png")).unwrap();
    assert_eq!((c, h, w), (1, 8, 8));
    let expect = ((3 * 16 + 2) as u8 ^ 1) as f32 / 255.0; // pixel (x=3, y=2)
    assert_eq!(planes[2 * 8 + 3], expect);
    let folder = ImageFolder::open(dir.path(), &all_opts()).unwrap();
    let t = folder.split(Split::Train).load_raw(0).unwrap();
    assert_eq!(&t.data()[..64], &t.data()[64..128]);
    // Colour to one channel and a resize.
    let opts = FolderOptions {
        preprocess: Preprocess {
            mean: [0.5; 3],
            std: [0.5; 3],
            ..Preprocess::plain(Channels::Gray, [4, 4])
        },
        ..all_opts()
    };
    let folder = ImageFolder::open(dir.path(), &opts).unwrap();
    let ds = convscope::data::Dataset::Folder(folder.split(Split::Train));
    let (x, label) = ds.load(5).unwrap();
    assert_eq!(x.shape(), &[1, 4, 4]);
    assert_eq!(label, 1);
    assert!(x.data().iter().all(|v| (-1.0..=1.0).contains(v)));
}

#[test]
fn folder_errors_name_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let msg =
        |r: Result<ImageFolder, DataError>| r.err().map(|e| e.to_string()).unwrap_or_default();
    let empty = msg(ImageFolder::open(dir.path(), &all_opts()));
    assert!(
        empty.contains("no class sub-folders") && empty.contains(&*dir.path().to_string_lossy()),
        "{empty}"
    );
    let missing = msg(ImageFolder::open(dir.path().join("nope"), &all_opts()));
    assert!(missing.contains("nope"), "{missing}");
    write_png(&dir.path().join("only/a.png"), 4, 4, false, 0);
    let single = msg(ImageFolder::open(dir.path(), &all_opts()));
    assert!(
        single.contains("single class") && single.contains("only"),
        "{single}"
    );
    std::fs::create_dir_all(dir.path().join("zempty")).unwrap();
    std::fs::write(dir.path().join("zempty/x.txt"), "x").unwrap();
    let no_images = msg(ImageFolder::open(dir.path(), &all_opts()));
    assert!(
        no_images.contains("zempty") && no_images.contains("no images"),
        "{no_images}"
    );
    let bad_split = FolderOptions {
        test_fraction: 0.7,
        val_fraction: 0.4,
        ..all_opts()
    };
    assert!(ImageFolder::open(dir.path(), &bad_split).is_err());
}

#[test]
fn folder_split_subfolders_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for (split, n) in [("train", 3), ("val", 1), ("test", 2)] {
        for class in ["a", "b"] {
            for k in 0..n {
                write_png(
                    &r.join(format!("{split}/{class}/{k}.png")),
                    4,
                    4,
                    true,
                    k as u8,
                );
            }
        }
    }
    let folder = ImageFolder::open(r, &FolderOptions::default()).unwrap();
    assert!(folder.is_presplit());
    assert_eq!(folder.split_sizes(), [6, 2, 4]);
    assert_eq!(folder.class_counts(Split::Test), vec![2, 2]);
}

#[test]
fn stratified_split_is_deterministic_and_proportional() {
    let dir = tempfile::tempdir().unwrap();
    for k in 0..10 {
        write_png(&dir.path().join(format!("x/{k}.png")), 2, 2, false, k);
    }
    for k in 0..30 {
        write_png(&dir.path().join(format!("y/{k}.png")), 2, 2, false, k);
    }
    let opts = FolderOptions {
        val_fraction: 0.1,
        ..FolderOptions::default()
    };
    let a = ImageFolder::open(dir.path(), &opts).unwrap();
    assert_eq!(a.class_counts(Split::Test), vec![2, 6]);
    assert_eq!(a.class_counts(Split::Val), vec![1, 3]);
    assert_eq!(a.class_counts(Split::Train), vec![7, 21]);
    let paths = |f: &ImageFolder| {
        let s = f.split(Split::Test);
        (0..s.len())
            .map(|i| s.path(i).unwrap().to_path_buf())
            .collect::<Vec<PathBuf>>()
    };
    let b = ImageFolder::open(dir.path(), &opts).unwrap();
    assert_eq!(paths(&a), paths(&b));
    let c = ImageFolder::open(dir.path(), &FolderOptions { seed: 1, ..opts }).unwrap();
    assert_ne!(paths(&a), paths(&c));
}

fn shared_data(rel: &str) -> PathBuf {
    common::shared_path(&format!("data/{rel}"))
}

#[test]
fn smiles_stratified_80_20_split_with_seed_0() {
    let root = shared_data("smiles");
    let folder = ImageFolder::open(&root, &FolderOptions::default()).unwrap();
    assert_eq!(
        folder.classes(),
        &["negatives".to_string(), "positives".to_string()]
    );
    assert_eq!(folder.split_sizes(), [10_532, 0, 2_633]);
    assert_eq!(folder.class_counts(Split::Train), vec![7_580, 2_952]);
    assert_eq!(folder.class_counts(Split::Test), vec![1_895, 738]);
    // Nothing but the upstream .idx lists is skipped.
    assert!(
        folder.skipped().iter().all(|s| s.name.ends_with(".idx")),
        "{:?}",
        folder.skipped()
    );
    let test = folder.split(Split::Test);
    let x = test.load_raw(0).unwrap();
    assert_eq!(x.shape(), &[3, 64, 64]);
    assert_eq!(
        &x.data()[..4096],
        &x.data()[4096..8192],
        "gray must be replicated"
    );
    // The split is reproducible.
    let again = ImageFolder::open(
        &root,
        &FolderOptions {
            verify: false,
            ..FolderOptions::default()
        },
    )
    .unwrap();
    let again = again.split(Split::Test);
    assert!((0..test.len()).all(|i| test.path(i) == again.path(i)));
}

#[test]
fn happy_test_folder_loads_150_images() {
    let root = shared_data("happy/test");
    let folder = ImageFolder::open(&root, &FolderOptions::default()).unwrap();
    assert_eq!(
        folder.classes(),
        &["frown".to_string(), "smile".to_string()]
    );
    let all = folder.all();
    assert_eq!(all.len(), 150);
    let smiles = (0..150).filter(|&i| all.label(i) == Some(1)).count();
    assert_eq!((smiles, 150 - smiles), (84, 66));
    assert!(folder.skipped().is_empty());
    let x = all.load_raw(0).unwrap();
    assert_eq!(x.shape(), &[3, 64, 64]);
    assert!(x.data().iter().all(|v| (0.0..=1.0).contains(v)));
}

// ---------------------------------------------------------------- IDX

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_round_trip_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|v| (v * 4) as u8).collect();
    let images = write_idx(&[3, 4, 5], &pixels);
    let labels = write_idx(&[3], &[7, 0, 9]);
    std::fs::write(dir.path().join("img"), &images).unwrap();
    std::fs::write(dir.path().join("lab"), &labels).unwrap();
    std::fs::write(dir.path().join("img.gz"), gz(&images)).unwrap();
    std::fs::write(dir.path().join("lab.gz"), gz(&labels)).unwrap();
    for (i, l) in [("img", "lab"), ("img.gz", "lab.gz")] {
        let set = IdxSet::open(dir.path().join(i), dir.path().join(l)).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.image_size(), (4, 5));
        assert_eq!(set.label(2), Some(9));
        assert_eq!(set.n_classes(), 10);
        let x = set.load_raw(1).unwrap();
        assert_eq!(x.shape(), &[1, 4, 5]);
        assert_eq!(x.data()[0], 80.0 / 255.0);
    }
}

#[test]
fn idx_corrupt_headers_are_errors() {
    let p = Path::new("f");
    let images = write_idx(&[2, 2, 2], &[0; 8]);
    let labels = write_idx(&[2], &[0, 1]);
    let err = |i: &[u8], l: &[u8]| {
        IdxSet::from_bytes(i, p, l, p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let mut bad_magic = images.clone();
    bad_magic[2] = 0x0D; // float type
    assert!(err(&bad_magic, &labels).contains("magic"));
    assert!(err(&images[..images.len() - 1], &labels).contains("declares"));
    assert!(err(&images[..6], &labels).contains("header"));
    assert!(err(&images, &write_idx(&[3], &[0, 1, 1])).contains("3 labels"));
    assert!(
        err(&labels, &labels).contains("magic"),
        "labels file given as images"
    );
    assert!(IdxSet::from_bytes(&images, p, &labels, p).is_ok());
}

// ---------------------------------------------------------------- CIFAR-10

fn cifar_record(label: u8, fill: u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend((0..3072).map(|k| fill.wrapping_add((k / 1024) as u8)));
    r
}

#[test]
fn cifar_round_trip_and_directory_layout() {
    let dir = tempfile::tempdir().unwrap();
    let b1 = [cifar_record(3, 10), cifar_record(9, 20)].concat();
    let b2 = cifar_record(0, 30);
    std::fs::write(dir.path().join("data_batch_1.bin"), &b1).unwrap();
    std::fs::write(dir.path().join("data_batch_2.bin"), &b2).unwrap();
    std::fs::write(dir.path().join("test_batch.bin"), cifar_record(5, 40)).unwrap();
    let train = CifarSet::open_dir(dir.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 3);
    assert_eq!(
        (0..3).map(|i| train.label(i).unwrap()).collect::<Vec<_>>(),
        vec![3, 9, 0]
    );
    let x = train.load_raw(1).unwrap();
    assert_eq!(x.shape(), &[3, 32, 32]);
    assert_eq!(
        (x.data()[0], x.data()[1024], x.data()[2048]),
        (20.0 / 255.0, 21.0 / 255.0, 22.0 / 255.0)
    );
    let test = CifarSet::open_dir(dir.path(), Split::Test).unwrap();
    assert_eq!(test.label(0), Some(5));
    assert!(test.load_raw(1).is_err());
}

#[test]
fn cifar_corrupt_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.bin");
    std::fs::write(&short, &cifar_record(1, 0)[..3000]).unwrap();
    let e = CifarSet::open(&[short]).unwrap_err().to_string();
    assert!(e.contains("short.bin") && e.contains("3073"), "{e}");
    let bad_label = dir.path().join("label.bin");
    std::fs::write(&bad_label, cifar_record(10, 0)).unwrap();
    assert!(
        CifarSet::open(&[bad_label])
            .unwrap_err()
            .to_string()
            .contains("label 10")
    );
    assert!(CifarSet::open_dir(dir.path().join("none"), Split::Train).is_err());
    let empty = dir.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    assert!(CifarSet::open(&[empty]).is_err());
}
