//! `convscope predict` and `convscope activations` through the real binary: the bundled
//! EfficientNet-Lite0 against the reference predictions of ../shared/data/models/SOURCE.md,
//! `--input-npy` against onnxruntime outputs (tests/fixtures/onnx, tools/make_onnx_fixtures.py),
//! broken inputs and unknown layers. PIL parity of the resize: tests/fixtures/predict, made by
//! tools/make_predict_fixtures.py.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use convscope::models::description::Preprocess;
use convscope::models::preprocess::{Image, Pixels, fit};
use ndarray::{ArrayD, Axis};
use serde_json::Value;

mod common;

use common::{convscope, json_lines, stderr, stdout};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A file of the shared folder beside the checkout; fails with a plain message when it is absent.
fn shared(rel: &str) -> String {
    common::shared_path(rel).to_str().unwrap().to_string()
}

fn fixture(rel: &str) -> String {
    repo("tests/fixtures")
        .join(rel)
        .to_str()
        .unwrap()
        .to_string()
}

/// Top entries as (index, prob).
fn top(line: &Value) -> Vec<(u64, f64)> {
    line["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["index"].as_u64().unwrap(), t["prob"].as_f64().unwrap()))
        .collect()
}

fn assert_top3(line: &Value, want: [(u64, f64); 3]) {
    let got = top(line);
    for ((gi, gp), (wi, wp)) in got.iter().zip(want) {
        assert_eq!(
            *gi, wi,
            "{}: top classes {got:?}, want {want:?}",
            line["input"]
        );
        assert!(
            (gp - wp).abs() < 0.005,
            "{}: class {gi} prob {gp}, want {wp}",
            line["input"]
        );
    }
}

#[test]
fn bundled_efficientnet_matches_the_reference_predictions() {
    let chelsea = shared("data/images/chelsea.png");
    let coffee = shared("data/images/coffee.png");
    let o = convscope(&[
        "predict",
        "--model",
        "efficientnet-lite0",
        &chelsea,
        &coffee,
        "--json",
        "--top",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["input"], chelsea.as_str());
    assert_top3(&lines[0], [(285, 0.799), (282, 0.084), (281, 0.083)]);
    assert_eq!(lines[0]["top"][0]["label"], "Egyptian cat");
    assert_eq!(lines[0]["logits"].as_array().unwrap().len(), 1000);
    assert_top3(&lines[1], [(967, 0.860), (968, 0.101), (504, 0.020)]);
    assert_eq!(lines[1]["top"][0]["label"], "espresso");
}

/// max |a - b| / max |b|
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn logits(line: &Value) -> Vec<f32> {
    line["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// A batch of N in the .npy gives N lines whose outputs are onnxruntime's.
fn check_npy_against_onnxruntime(stem: &str) {
    let model = fixture(&format!("onnx/{stem}.onnx"));
    let input = fixture(&format!("onnx/{stem}.input.npy"));
    let want: ArrayD<f32> =
        ndarray_npy::read_npy(fixture(&format!("onnx/{stem}.output.npy"))).unwrap();
    let o = convscope(&[
        "predict",
        "--model",
        &model,
        "--input-npy",
        &input,
        "--json",
    ]);
    assert!(o.status.success(), "{stem}: {}", stderr(&o));
    let lines = json_lines(&o);
    assert_eq!(
        lines.len(),
        want.shape()[0],
        "{stem}: one line per batch item"
    );
    for (i, (line, row)) in lines.iter().zip(want.axis_iter(Axis(0))).enumerate() {
        assert_eq!(line["input"], format!("{input}[{i}]"));
        let row: Vec<f32> = row.iter().copied().collect();
        let err = rel_err(&logits(line), &row);
        assert!(err < 1e-4, "{stem}[{i}]: relative error {err}");
    }
}

#[test]
fn input_npy_matches_onnxruntime_nchw_and_nhwc() {
    check_npy_against_onnxruntime("torch_flatten");
    // a Keras export: NHWC input, softmax inside (probabilities are used as they are)
    check_npy_against_onnxruntime("keras_idioms");
}

#[test]
fn efficientnet_input_npy_matches_onnxruntime() {
    let _ = shared("data/models");
    let u8s: ArrayD<u8> = ndarray_npy::read_npy(fixture("onnx/effnet.input_u8.npy")).unwrap();
    // the fixture script's formula, exact in f32
    let x = u8s.mapv(|v| (v as f32 - 128.0) / 64.0);
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("x.npy");
    ndarray_npy::write_npy(&npy, &x).unwrap();
    let o = convscope(&[
        "predict",
        "--model",
        "efficientnet-lite0",
        "--input-npy",
        npy.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want: ArrayD<f32> = ndarray_npy::read_npy(fixture("onnx/effnet.logits.npy")).unwrap();
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 1);
    let err = rel_err(&logits(&lines[0]), want.as_slice().unwrap());
    eprintln!("EfficientNet-Lite0 logits vs onnxruntime: relative error {err:e}");
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn a_broken_image_is_reported_and_the_others_still_classified() {
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.png");
    let png = std::fs::read(shared("data/images/chelsea.png")).unwrap();
    std::fs::write(&broken, &png[..png.len() / 3]).unwrap();
    let missing = tmp.path().join("missing.jpg");
    let coffee = shared("data/images/coffee.png");
    let o = convscope(&[
        "predict",
        "--model",
        "efficientnet-lite0",
        broken.to_str().unwrap(),
        &coffee,
        missing.to_str().unwrap(),
        "--json",
    ]);
    assert!(!o.status.success());
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 1, "only the good image gives a line");
    assert_eq!(lines[0]["input"], coffee.as_str());
    assert_eq!(lines[0]["top"][0]["index"], 967);
    let err = stderr(&o);
    assert!(
        err.contains("broken.png") && err.contains("missing.jpg"),
        "{err}"
    );
    assert!(err.contains("2 of 3 inputs"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unknown_and_truncated_models_are_one_sentence_naming_the_file() {
    let o = convscope(&["predict", "--model", "/no/such/net.onnx", "x.png"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("/no/such/net.onnx: does not exist"), "{err}");
    assert!(err.contains("efficientnet-lite0"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut.onnx");
    let bytes = std::fs::read(fixture("onnx/torch_flatten.onnx")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = convscope(&["predict", "--model", cut.to_str().unwrap(), "x.png"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("cut.onnx") && err.contains("not a valid ONNX"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn activations_of_the_head() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("head.npy");
    let o = convscope(&[
        "activations",
        "--model",
        "efficientnet-lite0",
        &shared("data/images/chelsea.png"),
        "--layer",
        "/_head_act/Clip_output_0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a: ArrayD<f32> = ndarray_npy::read_npy(&out).unwrap();
    assert_eq!(a.shape(), &[1, 1280, 7, 7]);
    // ReLU6 output
    assert!(a.iter().all(|&v| (0.0..=6.0).contains(&v)));
    assert!(a.iter().any(|&v| v > 0.0));
}

#[test]
fn an_unknown_layer_lists_close_names() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.npy");
    let o = convscope(&[
        "activations",
        "--model",
        fixture("onnx/torch_flatten.onnx").as_str(),
        "--input-npy",
        fixture("onnx/torch_flatten.input.npy").as_str(),
        "--layer",
        "logit",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("'logit'") && err.contains("logits"), "{err}");
    assert!(!out.exists());
}

#[test]
fn activations_of_a_batch_stack_per_item() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("y.npy");
    let o = convscope(&[
        "activations",
        "--model",
        fixture("onnx/pools_acts.onnx").as_str(),
        "--input-npy",
        fixture("onnx/pools_acts.input.npy").as_str(),
        "--layer",
        "out",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: ArrayD<f32> = ndarray_npy::read_npy(&out).unwrap();
    let want: ArrayD<f32> = ndarray_npy::read_npy(fixture("onnx/pools_acts.output.npy")).unwrap();
    assert_eq!(got.shape(), want.shape());
    let err = rel_err(got.as_slice().unwrap(), want.as_slice().unwrap());
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn summary_and_write_preset_for_an_onnx_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("net.onnx");
    std::fs::copy(fixture("onnx/keras_idioms.onnx"), &model).unwrap();
    let o = convscope(&[
        "summary",
        "--model",
        model.to_str().unwrap(),
        "--json",
        "--write-preset",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&o);
    let totals = lines.last().unwrap();
    assert_eq!(totals["input_shape"], serde_json::json!([1, 9, 9, 3]));
    assert_eq!(totals["preset"], "guessed from the shapes");
    assert_eq!(totals["preprocess"]["layout"], "Nhwc");
    let sidecar = tmp.path().join("net.preset.ron");
    assert!(sidecar.is_file());
    // an edited sidecar is read back
    let text = std::fs::read_to_string(&sidecar).unwrap();
    std::fs::write(&sidecar, text.replace("Squash", "ShorterSideCrop")).unwrap();
    let o = convscope(&["summary", "--model", model.to_str().unwrap(), "--json"]);
    let totals = json_lines(&o).pop().unwrap();
    assert_eq!(totals["preprocess"]["resize"], "ShorterSideCrop");
    assert!(
        totals["preset"]
            .as_str()
            .unwrap()
            .contains("net.preset.ron")
    );
}

// ---------------------------------------------------------------- PIL parity of the resize

fn decode(path: &str) -> Image {
    Image::open(Path::new(path)).unwrap()
}

/// `(h, w, c)` bytes of a PIL fixture vs our `(c, h, w)` resize: the count of differing values.
fn differences(ours: &Image, pil_fixture: &str) -> usize {
    let pil: ArrayD<u8> = ndarray_npy::read_npy(fixture(pil_fixture)).unwrap();
    let (h, w, c) = (pil.shape()[0], pil.shape()[1], pil.shape()[2]);
    assert_eq!((ours.height, ours.width, ours.channels), (h, w, c));
    let Pixels::U8(p) = &ours.pixels else {
        panic!("8-bit input must stay 8-bit")
    };
    let mut diff = 0;
    for ((y, x, ch), &v) in pil.indexed_iter().map(|(i, v)| ((i[0], i[1], i[2]), v)) {
        if p[(ch * h + y) * w + x] != v {
            diff += 1;
        }
    }
    diff
}

#[test]
fn resize_is_bit_identical_to_pil() {
    let chelsea = decode(&shared("data/images/chelsea.png"));
    let squash = fit(
        &chelsea,
        &Preprocess::imagenet().with_size([224, 224]).squashed(),
    );
    assert_eq!(differences(&squash, "predict/chelsea_pil224.npy"), 0);
    let rocket = decode(&shared("data/images/rocket.png"));
    assert_eq!(
        differences(&rocket.resized(47, 31), "predict/rocket_pil31x47.npy"),
        0
    );
}

/// coffee.png's 7x5 patch at PIL crop box (100, 100, 107, 105): x 100..107, y 100..105.
fn coffee_patch() -> Image {
    let coffee = decode(&shared("data/images/coffee.png"));
    let Pixels::U8(p) = &coffee.pixels else {
        panic!("coffee.png is 8-bit")
    };
    let (h, w) = (coffee.height, coffee.width);
    let mut patch = Vec::new(); // (3, 5, 7)
    for ch in 0..3 {
        for y in 100..105 {
            patch.extend_from_slice(&p[(ch * h + y) * w + 100..(ch * h + y) * w + 107]);
        }
    }
    Image {
        pixels: Pixels::U8(patch),
        channels: 3,
        height: 5,
        width: 7,
    }
}

#[test]
fn upscaling_a_patch_is_bit_identical_to_pil() {
    let patch = coffee_patch();
    assert_eq!(
        differences(&patch.resized(11, 16), "predict/coffee_patch_up.npy"),
        0
    );
}

trait Squashed {
    fn squashed(self) -> Self;
}

impl Squashed for Preprocess {
    fn squashed(mut self) -> Self {
        self.resize = convscope::models::description::Resize::Squash;
        self
    }
}

// ---------------------------------------------------------------- fuzz regressions

/// Found by fuzz/fuzz_targets/onnx_import.rs: a Constant feeding shape arithmetic with a product
/// beyond i64 panicked with "attempt to multiply with overflow" in onnx/shape.rs.
#[test]
fn fuzz_shape_overflow_is_an_error() {
    let bytes = std::fs::read(fixture("onnx/fuzz_shape_overflow.onnx")).unwrap();
    let e = convscope::models::onnx::import_onnx_bytes(&bytes, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("overflows"), "{e}");
}

/// Found by the fuzz target: Pad with begin + end pads beyond i64 panicked with "attempt to add
/// with overflow" in onnx/convert.rs.
#[test]
fn fuzz_pad_overflow_is_an_error() {
    let bytes = std::fs::read(fixture("onnx/fuzz_pad_overflow.onnx")).unwrap();
    let e = convscope::models::onnx::import_onnx_bytes(&bytes, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("overflow"), "{e}");
}

/// PIL's BICUBIC, bit for bit: a downscale by non-integer factors and a small upscale.
#[test]
fn bicubic_resize_is_bit_identical_to_pil() {
    use convscope::models::description::Filter;
    let rocket = decode(&shared("data/images/rocket.png"));
    assert_eq!(
        differences(
            &rocket.resized_with(Filter::Bicubic, 47, 31),
            "predict/rocket_bicubic31x47.npy"
        ),
        0
    );
    let patch = coffee_patch();
    assert_eq!(
        differences(
            &patch.resized_with(Filter::Bicubic, 11, 16),
            "predict/coffee_patch_up_bicubic.npy"
        ),
        0
    );
}

/// The presets of torchvision models (by name) resize and crop as torchvision's own transform
/// does on the PIL image: swin_t (shorter side 232, bicubic, crop 224) and inception_v3 (342,
/// bilinear, 299), bit for bit.
#[test]
fn torchvision_presets_match_torchvision_transforms() {
    use convscope::models::torchvision;
    let chelsea = decode(&shared("data/images/chelsea.png"));
    for name in ["swin_t", "inception_v3"] {
        let preset = torchvision::preset(name).unwrap().model_preset().preprocess;
        let ours = fit(&chelsea, &preset);
        assert_eq!(
            differences(&ours, &format!("predict/chelsea_{name}.npy")),
            0,
            "{name}"
        );
    }
}

/// A file named after a torchvision model gets that model's preset (summary says so); the same
/// file under another name gets the guess from its shapes.
#[test]
fn a_file_named_after_a_torchvision_model_gets_its_transform() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(&shared("data/models/efficientnet_lite0.onnx")).to_path_buf();
    let named = tmp.path().join("resnet50.onnx");
    std::fs::copy(&src, &named).unwrap();
    let o = convscope(&["summary", "--model", named.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("torchvision's transform for resnet50 (IMAGENET1K_V2)")
            && out.contains("ShorterSideTo { shorter: 232 }"),
        "{out}"
    );
    let other = tmp.path().join("net.onnx");
    std::fs::copy(&src, &other).unwrap();
    let o = convscope(&["summary", "--model", other.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("guessed from the shapes"),
        "{}",
        stdout(&o)
    );
}
