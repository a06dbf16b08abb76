//! One image → tensor path: training and evaluation read exactly the pixels prediction reads.
//!
//! Before, the data layer had its own preprocessing (a plain bilinear squash, no antialiasing,
//! no crop, RGB NCHW only), so `convscope evaluate` and `convscope predict` fed a model
//! different tensors for the same file. These tests hold the two paths together: per file and
//! preset bit for bit, and through the real binary as the same loss.
//!
//! Photos: the bundled sample photos in `assets/images/` (451x300 and similar, not square),
//! plus generated gray and 16-bit PNGs.

#![allow(clippy::unwrap_used)] // tests unwrap freely

mod common;

use std::path::{Path, PathBuf};

use convscope::data::{
    Channels, Dataset, Filter, FolderOptions, ImageFolder, Layout, Preprocess, Resize,
};
use convscope::models::{self, Model, preprocess::load_image, presets};

fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/images")
        .join(name)
}

/// Two classes of images: `frown/` the cat and a gray gradient, `smile/` the coffee, the
/// rocket and a 16-bit gradient (5 files; the photos are RGB PNGs of different shapes).
fn photo_folder(root: &Path) {
    for (class, files) in [
        ("frown", &["chelsea.png"][..]),
        ("smile", &["coffee.png", "rocket.png"][..]),
    ] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for f in files {
            std::fs::copy(asset(f), root.join(class).join(f)).unwrap();
        }
    }
    let gray =
        image::GrayImage::from_fn(90, 41, |x, y| image::Luma([((x * 3 + y * 5) % 256) as u8]));
    gray.save(root.join("frown/gray.png")).unwrap();
    let deep = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(37, 70, |x, y| {
        image::Rgb([(x * 1700) as u16, (y * 900) as u16, ((x + y) * 600) as u16])
    });
    deep.save(root.join("smile/deep.png")).unwrap();
}

/// Presets that exercise every step of the path: squash, the ImageNet crop, a shorter side
/// with bicubic, BGR, NHWC and gray.
fn presets_to_try() -> Vec<Preprocess> {
    let mut bgr_nhwc = Preprocess::imagenet().with_size([40, 48]);
    bgr_nhwc.resize = Resize::ShorterSideTo { shorter: 52 };
    bgr_nhwc.filter = Filter::Bicubic;
    bgr_nhwc.channels = Channels::Bgr;
    bgr_nhwc.layout = Layout::Nhwc;
    bgr_nhwc.scale = 1.0;
    bgr_nhwc.mean = [103.9, 116.8, 123.7];
    bgr_nhwc.std = [1.0; 3];
    let mut gray = Preprocess::unit().with_size([28, 28]);
    gray.channels = Channels::Gray;
    gray.mean = [0.5; 3];
    gray.std = [0.25; 3];
    vec![
        Preprocess::unit(),
        Preprocess::imagenet().with_size([64, 64]),
        bgr_nhwc,
        gray,
    ]
}

#[test]
fn data_sets_and_prediction_give_the_same_tensor_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    photo_folder(tmp.path());
    for preset in presets_to_try() {
        let options = FolderOptions {
            preprocess: preset.clone(),
            ..FolderOptions::default()
        };
        let folder = ImageFolder::open(tmp.path(), &options).unwrap();
        let all = folder.all();
        let paths: Vec<PathBuf> = (0..all.len())
            .map(|i| all.path(i).unwrap().to_path_buf())
            .collect();
        let data = Dataset::Folder(all);
        assert_eq!(data.len(), 5, "{preset:?}");
        for (i, path) in paths.iter().enumerate() {
            let (sample, _) = data.load(i).unwrap();
            let predicted = load_image(path, &preset).unwrap(); // [1, ...sample]
            assert_eq!(
                &predicted.shape()[1..],
                sample.shape(),
                "{}",
                path.display()
            );
            assert_eq!(sample.shape(), preset.sample_shape());
            let same = sample
                .data()
                .iter()
                .zip(predicted.data())
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{} under {preset:?}: the data set's tensor differs from predict's",
                path.display()
            );
        }
    }
}

/// Binary cross-entropy of one logit `z` against `truth` (0 or 1), in f64.
fn bce(z: f64, truth: usize) -> f64 {
    // −ln σ(z) = ln(1 + e^−z); −ln(1 − σ(z)) = ln(1 + e^z)
    let z = if truth == 1 { -z } else { z };
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

#[test]
fn evaluate_and_predict_agree_on_a_folder_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("faces");
    photo_folder(&data);
    // The smile CNN (one logit) with an ImageNet-style preset: shorter side, centre crop,
    // mean and std, BGR. The old data path ignored all of these but the size.
    let (mut description, weights) = presets::bundled("smile-cnn", 3).unwrap().unwrap();
    let mut preset = Preprocess::imagenet().with_size([64, 64]);
    preset.channels = Channels::Bgr;
    description.preprocess = preset;
    let graph = description.build(weights).unwrap();
    let model = Model { description, graph };
    let ckpt = tmp.path().join("model");
    models::save_model(&ckpt, &model).unwrap();
    let ckpt_s = ckpt.to_str().unwrap();

    let eval = common::convscope(&[
        "evaluate",
        "--model",
        ckpt_s,
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(eval.status.success(), "{}", common::stderr(&eval));
    let report: serde_json::Value = serde_json::from_str(common::stdout(&eval).trim()).unwrap();
    let loss = report["test_loss"].as_f64().unwrap();
    assert_eq!(report["classes"], serde_json::json!(["frown", "smile"]));

    let mut total = 0.0;
    let mut n = 0;
    for (class, truth) in [("frown", 0usize), ("smile", 1)] {
        for entry in std::fs::read_dir(data.join(class)).unwrap() {
            let path = entry.unwrap().path();
            let out = common::convscope(&[
                "predict",
                "--model",
                ckpt_s,
                path.to_str().unwrap(),
                "--json",
            ]);
            assert!(out.status.success(), "{}", common::stderr(&out));
            let v: serde_json::Value = serde_json::from_str(common::stdout(&out).trim()).unwrap();
            let z = v["logits"][0].as_f64().unwrap();
            total += bce(z, truth);
            n += 1;
        }
    }
    assert_eq!(n, 5);
    let from_predict = total / n as f64;
    // f32 logits through batch 1 (predict) and one batch of 5 (evaluate), the loss summed in
    // f32 by evaluate: agreement to 1e-5 relative. The old path differed by far more.
    let rel = (loss - from_predict).abs() / from_predict.abs().max(1e-12);
    assert!(
        rel < 1e-5,
        "evaluate's loss {loss} but predict's logits give {from_predict} (relative {rel:.2e})"
    );
}
