//! `convscope explain` through the real binary: output files, shapes and ranges for every
//! method (smile CNN), the Grad-CAM map of the bundled EfficientNet-Lite0 against the PyTorch
//! fixture of tools/make_explain_fixtures.py (tests/fixtures/explain), folders with broken
//! files, thread counts that do not change results, and the bad-input messages.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use serde_json::Value;

mod common;

use common::{convscope, json_lines, stderr};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/explain")
        .join(name)
}

fn read(path: &Path) -> ArrayD<f32> {
    ndarray_npy::read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A 64x64 RGB test picture with structure (a bright disc on a gradient), varied by `k`.
fn write_face(path: &Path, k: u32) {
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        let (dx, dy) = (x as i32 - 20 - k as i32 * 7, y as i32 - 32);
        let disc = dx * dx + dy * dy < 150;
        let base = (x * 3 + y * 2 + k * 20) as u8;
        if disc {
            image::Rgb([250, 220, 40])
        } else {
            image::Rgb([base, 255 - base, (y * 4) as u8])
        }
    });
    img.save(path).unwrap();
}

fn assert_unit_map(path: &Path, h: usize, w: usize) -> ArrayD<f32> {
    let a = read(path);
    assert_eq!(a.shape(), &[h, w], "{}", path.display());
    assert!(
        a.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)),
        "{}: values outside [0, 1]",
        path.display()
    );
    a
}

#[test]
fn every_method_writes_png_npy_and_raw() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("face.png");
    write_face(&img, 0);
    let out = tmp.path().join("out");
    for name in [
        "saliency",
        "smoothgrad",
        "integrated-gradients",
        "gradient-x-input",
        "guided-backprop",
        "gradcam",
        "gradcam++",
        "scorecam",
        "occlusion",
    ] {
        let o = convscope(&[
            "explain",
            "--model",
            "smile-cnn",
            "--method",
            name,
            "--out",
            s(&out),
            "--raw",
            "--json",
            s(&img),
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let lines = json_lines(&o);
        assert_eq!(lines.len(), 1, "{name}");
        let l = &lines[0];
        assert_eq!(l["method"], name);
        assert_eq!(l["input"], s(&img));
        let class = l["target"].as_u64().unwrap();
        assert!(class < 2);
        let labels = ["not smiling", "smiling"];
        assert_eq!(l["label"], labels[class as usize]);
        let p = l["probability"].as_f64().unwrap();
        assert!((0.5..1.0).contains(&p), "{name}: top class probability {p}");
        for key in ["deletion_auc", "insertion_auc"] {
            let a = l[key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&a), "{name}: {key} {a}");
        }
        let png = out.join(format!("face.{name}.png"));
        let npy = out.join(format!("face.{name}.npy"));
        let raw = out.join(format!("face.{name}.raw.npy"));
        assert_eq!(l["png"], s(&png));
        assert_eq!(l["npy"], s(&npy));
        assert_eq!(l["raw"], s(&raw));
        assert_eq!(image::open(&png).unwrap().width(), 64);
        let map = assert_unit_map(&npy, 64, 64);
        assert!(map.iter().any(|&v| v > 0.0), "{name}: all-zero map");
        let raw = read(&raw);
        match name {
            "gradcam" | "gradcam++" | "scorecam" => {
                // The default layer: the input of the flatten, [1, 32, 16, 16].
                assert_eq!(l["layer"], "features.drop2");
                assert_eq!(raw.shape(), &[16, 16], "{name}");
            }
            "occlusion" => {
                assert!(l["layer"].is_null());
                assert_eq!(raw.ndim(), 2, "{name}");
            }
            _ => {
                assert!(l["layer"].is_null());
                assert_eq!(raw.shape(), &[3, 64, 64], "{name}");
            }
        }
        if name == "saliency" {
            // Saliency's map is max_c |raw| / max.
            let max = raw.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for y in (0..64).step_by(9) {
                for x in (0..64).step_by(7) {
                    let m = (0..3).fold(0.0f32, |m, c| m.max(raw[[c, y, x]].abs())) / max;
                    assert!((m - map[[y, x]]).abs() < 1e-6);
                }
            }
        }
    }
}

/// The model input of the explain fixtures, as the fixture script builds it:
/// (u8 / 255 - mean) / std, NCHW.
fn chelsea_input(path: &Path) {
    const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    const STD: [f32; 3] = [0.229, 0.224, 0.225];
    let u8: ArrayD<u8> = ndarray_npy::read_npy(fixture("chelsea_u8.npy")).unwrap(); // (224, 224, 3)
    let mut x = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 224, 224]));
    for ((y, xx, c), &v) in u8
        .into_dimensionality::<ndarray::Ix3>()
        .unwrap()
        .indexed_iter()
    {
        x[[0, c, y, xx]] = (v as f32 / 255.0 - MEAN[c]) / STD[c];
    }
    ndarray_npy::write_npy(path, &x).unwrap();
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn gradcam_npy_matches_pytorch() {
    common::shared_path("data/models/efficientnet_lite0.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let x = tmp.path().join("chelsea.npy");
    chelsea_input(&x);
    let out = tmp.path().join("out");
    let o = convscope(&[
        "explain",
        "--model",
        "efficientnet-lite0",
        "--method",
        "gradcam",
        "--target",
        "285",
        "--input-npy",
        s(&x),
        "--out",
        s(&out),
        "--raw",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let l = &json_lines(&o)[0];
    assert_eq!(l["target"], 285);
    assert_eq!(l["label"], "Egyptian cat");
    assert_eq!(l["layer"], "/_head_act/Clip_output_0");
    // The probability is the softmax of the PyTorch logits at 285.
    let logits = read(&fixture("chelsea_logits.npy"));
    let m = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let p_ref = (logits[285] - m).exp() / logits.iter().map(|v| (v - m).exp()).sum::<f32>();
    let p = l["probability"].as_f64().unwrap() as f32;
    assert!(
        (p - p_ref).abs() < 1e-3,
        "probability {p} vs PyTorch {p_ref}"
    );
    let (del, ins) = (
        l["deletion_auc"].as_f64().unwrap(),
        l["insertion_auc"].as_f64().unwrap(),
    );
    println!("chelsea Grad-CAM: p {p:.4}, deletion area {del:.3}, insertion area {ins:.3}");
    assert!(del < ins);

    let map = assert_unit_map(&out.join("chelsea.gradcam.npy"), 224, 224);
    // The fixture keeps every 4th pixel of the 224x224 map.
    let every_4th: Vec<f32> = (0..224)
        .step_by(4)
        .flat_map(|y| (0..224).step_by(4).map(move |x| (y, x)))
        .map(|(y, x)| map[[y, x]])
        .collect();
    let want = read(&fixture("chelsea_gradcam.npy"));
    let e_map = rel_err(&every_4th, want.as_slice().unwrap());
    let raw = read(&out.join("chelsea.gradcam.raw.npy"));
    assert_eq!(raw.shape(), &[7, 7]);
    let want_raw = read(&fixture("chelsea_gradcam_raw.npy"));
    let e_raw = rel_err(raw.as_slice().unwrap(), want_raw.as_slice().unwrap());
    println!("CLI Grad-CAM vs PyTorch: map {e_map:.2e}, raw {e_raw:.2e} (relative)");
    assert!(e_map < 1e-3 && e_raw < 1e-3);
    let png = image::open(out.join("chelsea.gradcam.png")).unwrap();
    assert_eq!((png.width(), png.height()), (224, 224));
}

#[test]
fn folder_with_broken_files_and_thread_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("faces");
    std::fs::create_dir(&dir).unwrap();
    for k in 0..3 {
        write_face(&dir.join(format!("f{k}.png")), k);
    }
    std::fs::write(dir.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    std::fs::write(dir.join("notes.txt"), "hello").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    let mut maps = Vec::new();
    for threads in ["1", "2"] {
        let out = tmp.path().join(format!("out{threads}"));
        let o = convscope(&[
            "explain",
            "--model",
            "smile-cnn",
            "--method",
            "gradcam",
            "--out",
            s(&out),
            "--threads",
            threads,
            "--json",
            s(&dir),
        ]);
        let err = stderr(&o);
        assert!(!o.status.success(), "a broken file must fail the run");
        assert!(
            err.contains("broken.png") && err.contains("notes.txt") && err.contains("2 of 5"),
            "{err}"
        );
        let mut inputs: Vec<String> = json_lines(&o)
            .iter()
            .map(|l| l["input"].as_str().unwrap().to_string())
            .collect();
        inputs.sort();
        let want: Vec<String> = (0..3)
            .map(|k| s(&dir.join(format!("f{k}.png"))).to_string())
            .collect();
        assert_eq!(inputs, want, "threads {threads}");
        let m: Vec<ArrayD<f32>> = (0..3)
            .map(|k| assert_unit_map(&out.join(format!("f{k}.gradcam.npy")), 64, 64))
            .collect();
        assert!(!out.join("broken.gradcam.png").exists());
        maps.push(m);
    }
    // One image per worker computes the same maps as one thread.
    for (a, b) in maps[0].iter().zip(&maps[1]) {
        let d = a
            .iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(d < 1e-5, "threads 1 vs 2 differ by {d}");
    }
}

#[test]
fn bad_input_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("face.png");
    write_face(&img, 1);
    let out = tmp.path().join("out");
    let run = |extra: &[&str]| {
        let mut args = vec!["explain", "--model", "smile-cnn", "--out", s(&out), s(&img)];
        args.extend_from_slice(extra);
        let o = convscope(&args);
        assert!(!o.status.success(), "{extra:?} should fail");
        let e = stderr(&o);
        assert_eq!(e.trim().lines().count(), 1, "one sentence: {e}");
        e
    };
    let e = run(&["--method", "gradcom"]);
    assert!(
        e.contains("unknown method 'gradcom'") && e.contains("gradcam++"),
        "{e}"
    );
    let e = run(&["--method", "gradcam", "--layer", "features.conv9"]);
    assert!(
        e.contains("no layer or value named 'features.conv9'") && e.contains("features.conv"),
        "{e}"
    );
    let e = run(&["--method", "gradcam", "--layer", "classifier.fc1"]);
    assert!(
        e.contains("'classifier.fc1'") && e.contains("without spatial dimensions"),
        "{e}"
    );
    let e = run(&["--method", "saliency", "--layer", "features.conv1"]);
    assert!(e.contains("saliency does not use a layer"), "{e}");
    let e = run(&["--method", "saliency", "--target", "2"]);
    assert!(e.contains("class 2 is out of range"), "{e}");
    let e = run(&["--method", "saliency", "--target", "grinning"]);
    assert!(e.contains("no class named 'grinning'"), "{e}");
    let e = run(&["--method", "saliency", "--colormap", "rainbow"]);
    assert!(e.contains("unknown colormap 'rainbow'"), "{e}");
    // A label works as a target.
    let o = convscope(&[
        "explain",
        "--model",
        "smile-cnn",
        "--method",
        "saliency",
        "--target",
        "smiling",
        "--out",
        s(&out),
        "--json",
        s(&img),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["target"], 1);
    // A missing file names itself.
    let missing = tmp.path().join("nope.png");
    let o = convscope(&[
        "explain",
        "--model",
        "smile-cnn",
        "--method",
        "saliency",
        "--out",
        s(&out),
        s(&missing),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nope.png"), "{}", stderr(&o));
}

/// Token layers and attention rollout from the command line: on the tiny ViT fixture, Grad-CAM
/// picks the last block's first norm (patch tokens behind a class token) and writes its 4x4
/// raw map, attention rollout writes one; on a CNN, rollout is one sentence and a non-zero exit.
#[test]
fn transformer_methods_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("face.png");
    write_face(&img, 1);
    let out = tmp.path().join("out");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/vit_legacy.onnx");
    for (method, layer) in [
        (
            "gradcam",
            Value::from("/encoder/layers/encoder_layer_1/ln_1/LayerNormalization_output_0"),
        ),
        ("attention-rollout", Value::Null),
    ] {
        let o = convscope(&[
            "explain",
            "--model",
            s(&model),
            "--method",
            method,
            "--out",
            s(&out),
            "--raw",
            "--json",
            s(&img),
        ]);
        assert!(o.status.success(), "{method}: {}", stderr(&o));
        let l = &json_lines(&o)[0];
        assert_eq!(l["layer"], layer, "{method}");
        let raw = read(&out.join(format!("face.{method}.raw.npy")));
        assert_eq!(raw.shape(), &[4, 4], "{method}");
        assert!(raw.iter().any(|&v| v > 0.0), "{method}: all-zero map");
        assert_unit_map(&out.join(format!("face.{method}.npy")), 32, 32);
    }
    let o = convscope(&[
        "explain",
        "--model",
        "smile-cnn",
        "--method",
        "attention-rollout",
        "--out",
        s(&out),
        s(&img),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("no attention softmax"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}
