//! `convscope microscope` through the real binary on the bundled EfficientNet-Lite0: every
//! output is written and consistent; a hit's score is the layer's activation computed another
//! way (`convscope activations` on the unfused graph); the streaming batch size does not change
//! what is found; and bad input (a channel out of range, an unreadable image, a missing folder,
//! a layer with no channels to probe) is one sentence, never a panic.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{convscope, json_lines, stderr};
use serde_json::Value;

const LAYER: &str = "/_blocks.6/_swish/Clip";
const LAYER_VALUE: &str = "/_blocks.6/_swish/Clip_output_0";

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/images")
}

fn run(args: &[&str]) -> std::process::Output {
    let mut all = vec!["microscope", "--model", "efficientnet-lite0"];
    all.extend_from_slice(args);
    convscope(&all)
}

fn index(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap()
}

#[test]
fn the_bundled_model_and_photos_write_every_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let o = run(&[
        "--layer",
        LAYER,
        "--channels",
        "0..3,7",
        "--steps",
        "6",
        "--size",
        "64",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 5, "a line per unit and a summary");
    let units: Vec<u64> = lines[..4]
        .iter()
        .map(|l| l["unit"].as_u64().unwrap())
        .collect();
    assert_eq!(units, vec![0, 1, 2, 7]);
    let summary = &lines[4];
    assert_eq!(summary["layer"], LAYER_VALUE);
    assert_eq!(summary["images"], 3, "the three bundled photos");
    assert!(summary["visualise_seconds"].as_f64().unwrap() > 0.0);
    for c in [0, 1, 2, 7] {
        let png = image::open(out.join(format!("units/unit_{c:04}.png"))).unwrap();
        assert_eq!((png.width(), png.height()), (64, 64));
        for rank in 1..=3 {
            assert!(
                out.join(format!("patches/unit_{c:04}_top{rank}.png"))
                    .is_file()
            );
        }
    }
    let idx = index(&out);
    for u in idx["units"].as_array().unwrap() {
        let top = u["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let scores: Vec<f64> = top.iter().map(|t| t["score"].as_f64().unwrap()).collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "best first: {scores:?}"
        );
        for t in top {
            let b = &t["box"];
            let (top_, left, bottom, right) = (
                b["top"].as_u64().unwrap(),
                b["left"].as_u64().unwrap(),
                b["bottom"].as_u64().unwrap(),
                b["right"].as_u64().unwrap(),
            );
            assert!(
                top_ < bottom && bottom <= 224 && left < right && right <= 224,
                "{b}"
            );
            // the patch is the box's size
            let patch = image::open(out.join(t["patch"].as_str().unwrap())).unwrap();
            assert_eq!(
                (patch.height() as u64, patch.width() as u64),
                (bottom - top_, right - left)
            );
        }
        assert!(!u["histogram"].as_array().unwrap().is_empty());
    }
    let sheet = image::open(out.join("contact_sheet.png")).unwrap();
    assert!(sheet.height() > 4 * 96, "a row per unit");
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("id=\"unit-7\"") && html.matches("data:image/png;base64,").count() >= 16);
    assert!(
        !html.contains("src=\"units/"),
        "self-contained: no file references"
    );
}

/// The scan runs the fused prefix of the graph in batches; `convscope activations` runs the
/// whole unfused graph one image at a time. A hit's score must be the channel's maximum there.
#[test]
fn a_hit_s_score_is_the_channel_s_peak_from_the_activations_command() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let o = run(&[
        "--layer",
        LAYER,
        "--channels",
        "5,11",
        "--no-vis",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let idx = index(&out);
    for u in idx["units"].as_array().unwrap() {
        let channel = u["unit"].as_u64().unwrap() as usize;
        for hit in u["top"].as_array().unwrap() {
            let name = hit["image"]
                .as_str()
                .unwrap()
                .trim_start_matches("bundled:");
            let npy = tmp.path().join(format!("{name}.{channel}.npy"));
            let a = convscope(&[
                "activations",
                "--model",
                "efficientnet-lite0",
                "--layer",
                LAYER_VALUE,
                "--out",
                npy.to_str().unwrap(),
                assets().join(name).to_str().unwrap(),
            ]);
            assert!(a.status.success(), "{}", stderr(&a));
            let arr: ndarray::ArrayD<f32> = ndarray_npy::read_npy(&npy).unwrap();
            let plane = arr.index_axis(ndarray::Axis(1), channel);
            let peak = plane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mean = plane.iter().map(|&v| f64::from(v)).sum::<f64>() / plane.len() as f64;
            let score = hit["score"].as_f64().unwrap();
            // fused batch norms and activations change float rounding only
            assert!(
                (score - f64::from(peak)).abs() <= 1e-4 * (1.0 + score.abs()),
                "{name} channel {channel}: {score} vs {peak}"
            );
            assert!((hit["mean"].as_f64().unwrap() - mean).abs() <= 1e-4 * (1.0 + mean.abs()));
            // the position is the peak's
            let (y, x) = (
                hit["at"][0].as_u64().unwrap() as usize,
                hit["at"][1].as_u64().unwrap() as usize,
            );
            assert_eq!(plane[[0, y, x]], peak);
        }
    }
}

/// Streaming in batches of 1 or of 16 finds the same images with the same scores.
#[test]
fn the_scan_batch_does_not_change_what_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let mut found = Vec::new();
    for batch in ["1", "16"] {
        let out = tmp.path().join(batch);
        let o = run(&[
            "--layer",
            "/_blocks.3/_swish/Clip",
            "--channels",
            "0..6",
            "--no-vis",
            "--scan-batch",
            batch,
            "--top",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let idx = index(&out);
        let tops: Vec<Vec<(String, f64)>> = idx["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                u["top"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| {
                        (
                            t["image"].as_str().unwrap().to_string(),
                            t["score"].as_f64().unwrap(),
                        )
                    })
                    .collect()
            })
            .collect();
        found.push(tops);
    }
    for (a, b) in found[0].iter().zip(&found[1]) {
        for ((fa, sa), (fb, sb)) in a.iter().zip(b) {
            assert_eq!(fa, fb);
            assert!((sa - sb).abs() <= 1e-4 * (1.0 + sa.abs()), "{sa} vs {sb}");
        }
    }
}

#[test]
fn unreadable_images_are_skipped_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::copy(assets().join("coffee.png"), data.join("coffee.png")).unwrap();
    std::fs::copy(assets().join("rocket.png"), data.join("sub/rocket.png")).unwrap();
    std::fs::write(data.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    std::fs::write(data.join("notes.txt"), b"not an image").unwrap();
    let out = tmp.path().join("m");
    let o = run(&[
        "--layer",
        LAYER,
        "--channels",
        "3",
        "--no-vis",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("broken.png"), "{}", stderr(&o));
    let idx = index(&out);
    assert_eq!(idx["images"], 2);
    let skipped = idx["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(
        skipped[0]["image"]
            .as_str()
            .unwrap()
            .ends_with("broken.png")
    );
    assert_eq!(idx["units"][0]["top"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_requests_are_one_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let o = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--out", out.to_str().unwrap()]);
        run(&all)
    };
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec!["--layer", LAYER, "--channels", "470..490"],
            &["channel 489 is out of range", "480 channels"],
        ),
        (
            vec!["--layer", "/no/such/layer"],
            &["no layer or value named '/no/such/layer'"],
        ),
        (
            vec!["--layer", LAYER, "--data", "/no/such/folder"],
            &["/no/such/folder"],
        ),
        (vec!["--layer", "input"], &["input"]),
        (
            vec!["--layer", LAYER, "--no-vis", "--no-patches"],
            &["nothing to do"],
        ),
    ];
    for (args, wants) in cases {
        let r = o(&args);
        assert!(!r.status.success(), "{args:?} succeeded");
        let err = stderr(&r);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        for w in wants {
            assert!(err.contains(w), "{args:?}: {err}");
        }
    }
}

/// A dense layer's units are its outputs: each gets a visualisation, and its patches are whole
/// images (a dense unit sees all of them).
#[test]
fn a_dense_layer_s_units_are_its_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let o = run(&[
        "--layer",
        "/_fc/Gemm",
        "--channels",
        "288",
        "--steps",
        "4",
        "--size",
        "64",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let idx = index(&out);
    let unit = &idx["units"][0];
    assert_eq!(unit["unit"], 288);
    for t in unit["top"].as_array().unwrap() {
        assert_eq!(t["box"]["top"], 0);
        assert_eq!(t["box"]["bottom"], 224);
    }
    assert!(out.join("units/unit_0288.png").is_file());
}

/// A 1,280-channel layer, every unit: one contact sheet per 64 units, and a page that links its
/// images instead of embedding 11,520 of them.
#[test]
fn a_wide_layer_is_paged() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let o = run(&[
        "--layer",
        "/_head_act/Clip",
        "--channels",
        "all",
        "--no-vis",
        "--top",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let idx = index(&out);
    assert_eq!(idx["units"].as_array().unwrap().len(), 1280);
    assert!(out.join("contact_sheet.png").is_file() && out.join("contact_sheet_20.png").is_file());
    assert!(!out.join("contact_sheet_21.png").exists());
    let sheet = image::open(out.join("contact_sheet_20.png")).unwrap();
    assert_eq!(sheet.height(), 64 * 98 + 2);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        !html.contains("data:image/png;base64,")
            && html.contains("src=\"patches/unit_1279_top1.png\"")
    );
}
