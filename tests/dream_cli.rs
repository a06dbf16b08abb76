//! `convscope dream` through the real binary: the JSON report format on the smile CNN, and bad
//! input (unknown class, bad weight, unwritable output) as one sentence with a non-zero exit.

#![allow(clippy::unwrap_used)]

mod common;

use common::{convscope, json_lines, stderr, stdout};
use serde_json::Value;

#[test]
fn json_reports_one_line_per_reported_step() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("smile.png");
    let o = convscope(&[
        "dream",
        "--model",
        "smile-cnn",
        "--target",
        "smiling:1",
        "--target",
        "0:0.25",
        "--steps",
        "6",
        "--every",
        "2",
        "--size",
        "40",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&o);
    let steps: Vec<u64> = lines.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![2, 4, 6]);
    for l in &lines {
        let t = l["targets"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["index"], 1);
        assert_eq!(t[0]["label"], "smiling");
        assert_eq!(t[1]["index"], 0);
        let (p1, p0) = (
            t[0]["prob"].as_f64().unwrap(),
            t[1]["prob"].as_f64().unwrap(),
        );
        // the two classes of a single-logit model
        assert!((p1 + p0 - 1.0).abs() < 1e-5, "{p1} + {p0}");
    }
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (40, 40));
}

fn dream_fails(args: &[&str], want: &str) {
    let o = convscope(args);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} should fail");
    assert!(
        err.contains(want),
        "{args:?}: stderr {err:?} should contain {want:?}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err:?}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_is_one_sentence_and_a_non_zero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.png");
    let out = out.to_str().unwrap();
    let base = |target: &'static str, out: &str| -> Vec<String> {
        [
            "dream",
            "--model",
            "smile-cnn",
            "--target",
            target,
            "--steps",
            "1",
            "--size",
            "16",
            "--out",
            out,
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |args: Vec<String>, want: &str| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        dream_fails(&refs, want);
    };
    run(base("frowning", out), "no class named 'frowning'");
    run(
        base("smiling:lots", out),
        "the weight 'lots' is not a number",
    );
    run(base("5", out), "class 5 is out of range");
    assert!(
        !std::path::Path::new(out).exists(),
        "no empty file is left behind"
    );
    run(
        base("1", "/no/such/dir/x.png"),
        "/no/such/dir/x.png: cannot write",
    );
    let txt = tmp.path().join("x.txt");
    run(base("1", txt.to_str().unwrap()), "must be a .png");
    run(
        [
            "dream",
            "--model",
            "smile-cnn",
            "--target",
            "1",
            "--init",
            "/no/such.png",
            "--out",
            out,
        ]
        .map(String::from)
        .to_vec(),
        "/no/such.png: cannot read the image",
    );
}

#[test]
fn deep_dream_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = tmp.path().join("photo.png");
    image::RgbImage::from_fn(80, 72, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 3) as u8, 90])
    })
    .save(&photo)
    .unwrap();
    let out = tmp.path().join("dd.png");
    let (photo, out) = (photo.to_str().unwrap(), out.to_str().unwrap());
    let o = convscope(&[
        "dream",
        "--model",
        "smile-cnn",
        "--photo",
        photo,
        "--layer",
        "features.conv3",
        "--octaves",
        "2",
        "--octave-steps",
        "2",
        "--out",
        out,
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(line["octaves"], 2);
    let img = image::open(out).unwrap();
    assert_eq!((img.width(), img.height()), (80, 72));
    dream_fails(
        &[
            "dream",
            "--model",
            "smile-cnn",
            "--photo",
            photo,
            "--layer",
            "features.conv",
            "--out",
            out,
        ],
        "no layer or value named 'features.conv'",
    );
}
