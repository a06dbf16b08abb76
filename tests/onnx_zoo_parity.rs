//! Parity of imported torchvision models (ResNet50, VGG16, MobileNetV2, SqueezeNet 1.1, seeded
//! random weights) with PyTorch and onnxruntime: logits within 1e-4 relative (max abs
//! difference over max abs value) of both and the same top-5; the activation of the last conv
//! block and the input gradient of the top class's logit within 1e-3 of PyTorch — or, where
//! PyTorch's own float32 gradient is less stable than that (random-weight ReLU networks: see
//! `gradient_sensitivity` in the script), within PyTorch's own spread under a 1e-6 nudge of
//! the input, by max relative error and by relative L2.
//!
//! The models are too big to commit (VGG16 is 528 MB). They live in a cache directory,
//! `$CONVSCOPE_MODEL_ZOO` or else `target/model-zoo`, made by `tools/make_zoo_fixtures.py`.
//! When a model is missing the test runs that script with `$CONVSCOPE_PYTHON` (else `python3`);
//! when that fails too it prints which model was not checked and why, and passes — unless
//! `CONVSCOPE_REQUIRE_ZOO=1`, which turns "not checked" into a failure (for CI runs that have
//! the reference environment).

#![allow(clippy::unwrap_used)] // tests unwrap freely

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use convscope::engine::{ForwardOptions, Graph, Tensor};
use convscope::explain::cam::GradCamVariant;
use convscope::explain::{Explainer, Target};
use convscope::models::onnx::import_onnx;
use ndarray::ArrayD;

const LOGIT_TOL: f32 = 1e-4;
const ACT_TOL: f32 = 1e-3;
const GRAD_TOL: f32 = 1e-3;

/// Making models runs one script at a time (tests run on parallel threads).
static MAKING: Mutex<()> = Mutex::new(());

fn zoo_dir() -> PathBuf {
    match std::env::var_os("CONVSCOPE_MODEL_ZOO") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/model-zoo"),
    }
}

fn python() -> String {
    std::env::var("CONVSCOPE_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// What the script writes today (format 2 added the Grad-CAM, Grad-CAM++ and saliency maps).
const FORMAT: u64 = 2;

/// The script writes `NAME.json` last, so its presence means the model is complete; an older
/// format is made again.
fn is_made(dir: &Path, name: &str) -> bool {
    std::fs::read_to_string(dir.join(format!("{name}.json")))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|m| m["format"].as_u64())
        .is_some_and(|f| f >= FORMAT)
}

/// The zoo directory holding `name`, made if needed, or why it cannot be had.
fn find_or_make(name: &str) -> Result<PathBuf, String> {
    let dir = zoo_dir();
    let _guard = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    if is_made(&dir, name) {
        return Ok(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/make_zoo_fixtures.py");
    let py = python();
    eprintln!(
        "{name}: not in {}; making it with {py} {} (needs torch, torchvision, onnx, onnxruntime)",
        dir.display(),
        script.display()
    );
    let out = Command::new(&py)
        .arg(&script)
        .arg("--out")
        .arg(&dir)
        .arg("--models")
        .arg(name)
        .output()
        .map_err(|e| {
            format!("cannot run '{py}' ({e}); set CONVSCOPE_PYTHON to a Python with torch")
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!(
            "'{py} {}' failed ({}): {last}; set CONVSCOPE_PYTHON to a Python with torch, \
             torchvision, onnx and onnxruntime (see /work/shared/tools/reference/setup_ref_env.sh)",
            script.display(),
            out.status
        ));
    }
    if is_made(&dir, name) {
        Ok(dir)
    } else {
        Err(format!(
            "the script succeeded but {} is missing",
            dir.join(format!("{name}.json")).display()
        ))
    }
}

fn npy(dir: &Path, file: &str) -> Tensor {
    let path = dir.join(file);
    let a: ArrayD<f32> = ndarray_npy::read_npy(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); delete the model's files there to remake them",
            path.display()
        )
    });
    Tensor::from_array(a)
}

/// ||a - b|| / ||b|| in f64.
fn rel_l2(a: &[f32], b: &[f32]) -> f32 {
    let (mut d, mut n) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        d += (f64::from(x) - f64::from(y)).powi(2);
        n += f64::from(y).powi(2);
    }
    (d.sqrt() / n.sqrt().max(1e-300)) as f32
}

fn top5(logits: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    idx.truncate(5);
    idx
}

fn as_usizes(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// The zoo directory holding `name`, or None after a plain "NOT CHECKED" line saying why
/// (`what` names the check); a failure instead under `CONVSCOPE_REQUIRE_ZOO=1`.
fn zoo_or_say(name: &str, what: &str) -> Option<PathBuf> {
    match find_or_make(name) {
        Ok(dir) => Some(dir),
        Err(why) => {
            let msg = format!("{name}{what} NOT CHECKED: {why}");
            if std::env::var("CONVSCOPE_REQUIRE_ZOO").is_ok_and(|v| v == "1") {
                panic!("{msg} (CONVSCOPE_REQUIRE_ZOO=1)");
            }
            eprintln!("{msg}");
            println!("{msg}");
            None
        }
    }
}

/// Imports `name`, runs batch 1 forward and backward and checks everything against the
/// references; prints a plain "not checked" line when the model cannot be found or made.
fn check(name: &str) {
    let Some(dir) = zoo_or_say(name, "") else {
        return;
    };
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();

    let t = Instant::now();
    let m = import_onnx(&dir.join(format!("{name}.onnx"))).unwrap();
    let g = Graph::from_def(m.def).unwrap();
    let t_import = t.elapsed();

    let x = npy(&dir, &format!("{name}.input.npy")); // (1, 3, 224, 224)
    let t = Instant::now();
    let pass = g
        .forward(&[x], &ForwardOptions::eval_for_backward())
        .unwrap();
    let t_forward = t.elapsed();
    let out = g.outputs()[0];
    let logits = pass.get(out).unwrap(); // (1, 1000)

    let want_pt = npy(&dir, &format!("{name}.logits_torch.npy"));
    let want_ort = npy(&dir, &format!("{name}.logits_ort.npy"));
    common::assert_close(
        &format!("{name} logits vs PyTorch"),
        logits,
        &want_pt,
        LOGIT_TOL,
    );
    common::assert_close(
        &format!("{name} logits vs onnxruntime"),
        logits,
        &want_ort,
        LOGIT_TOL,
    );
    let ours = top5(logits.data());
    assert_eq!(
        ours,
        as_usizes(&meta["top5_torch"]),
        "{name}: top-5 vs PyTorch"
    );
    assert_eq!(
        ours,
        as_usizes(&meta["top5_ort"]),
        "{name}: top-5 vs onnxruntime"
    );

    let layer = meta["layer_onnx_tensor"].as_str().unwrap();
    let act_id = g.value_id(layer).unwrap_or_else(|| {
        panic!(
            "{name}: the imported graph has no value named '{layer}' (PyTorch module {})",
            meta["layer"]
        )
    });
    common::assert_close(
        &format!("{name} activation of {} ({layer})", meta["layer"]),
        pass.get(act_id).unwrap(),
        &npy(&dir, &format!("{name}.act.npy")),
        ACT_TOL,
    );

    let class = meta["class"].as_u64().unwrap() as usize;
    let input = g.inputs()[0];
    let req = common::class_to_input_request(&g, out, &[1, 1000], class);
    let t = Instant::now();
    let grads = g.backward(&pass, &req).unwrap();
    let t_backward = t.elapsed();
    // A ReLU network's input gradient is piecewise constant: float32 rounding flips
    // pre-activations that sit next to a kink, and with random weights there are always some.
    // The floor is how far PyTorch's own gradient moves under a 1e-6 nudge of the input
    // (measured by the script); the engine is held to that or GRAD_TOL, whichever is larger.
    let sens = |key: &str| meta[key].as_f64().unwrap() as f32;
    let (sens_max, sens_l2) = (
        sens("grad_sensitivity_max_rel"),
        sens("grad_sensitivity_rel_l2"),
    );
    let got = &grads.values[&input];
    let want = npy(&dir, &format!("{name}.grad.npy"));
    common::assert_close(
        &format!(
            "{name} input gradient of logit {class} vs PyTorch (PyTorch's own nudge spread {sens_max:.1e})"
        ),
        got,
        &want,
        GRAD_TOL.max(sens_max),
    );
    let l2 = rel_l2(got.data(), want.data());
    eprintln!(
        "{name} input gradient relative L2 {l2:.2e} (PyTorch's own nudge spread {sens_l2:.1e})"
    );
    assert!(
        l2 <= GRAD_TOL.max(sens_l2),
        "{name}: input gradient relative L2 error {l2:e} > max({GRAD_TOL:e}, {sens_l2:e})"
    );
    eprintln!(
        "{name}: import {t_import:.1?}, forward {t_forward:.1?}, backward to the input {t_backward:.1?} (dev profile)"
    );

    // Explanations through the explain library, against the reference kit's definitions:
    // Grad-CAM and Grad-CAM++ raw maps at the layer (only the head lies between the layer and
    // the logits, so these are stable to 1e-3), saliency to the input gradient's own floor.
    let x = npy(&dir, &format!("{name}.input.npy"));
    let ex = Explainer::new(&g).unwrap();
    for (variant, file) in [
        (GradCamVariant::GradCam, "gradcam_raw"),
        (GradCamVariant::GradCamPlusPlus, "gradcampp_raw"),
    ] {
        let cam = ex
            .grad_cam(&x, Target::Class(class), Some(act_id), variant)
            .unwrap();
        common::assert_close(
            &format!("{name} {variant:?} raw map at {layer}"),
            &cam.raw.to_tensor(),
            &npy(&dir, &format!("{name}.{file}.npy")),
            ACT_TOL,
        );
    }
    let sal = ex.saliency(&x, Target::Class(class)).unwrap();
    common::assert_close(
        &format!("{name} saliency (PyTorch's own nudge spread {sens_max:.1e})"),
        &sal.map.to_tensor(),
        &npy(&dir, &format!("{name}.saliency.npy")),
        GRAD_TOL.max(sens_max),
    );
}

#[test]
fn resnet50_matches_pytorch_and_onnxruntime() {
    check("resnet50");
}

#[test]
fn vgg16_matches_pytorch_and_onnxruntime() {
    check("vgg16");
}

#[test]
fn mobilenet_v2_matches_pytorch_and_onnxruntime() {
    check("mobilenet_v2");
}

#[test]
fn squeezenet1_1_matches_pytorch_and_onnxruntime() {
    check("squeezenet1_1");
}

/// Issue 13: the same logits at every instruction-set level this CPU has (AVX-512, AVX2,
/// portable; NEON on aarch64), each within [`LOGIT_TOL`] of PyTorch, and within the larger of
/// 1e-5 and the fixture's onnxruntime-vs-PyTorch distance of the best level's (relative to the
/// largest logit). Two float32 references already differ by 2.1e-5 on these random-weight
/// logits (max |logit| 1.85, much cancellation); the levels measured 1.3e-5 (AVX2: FMA tiles of
/// other widths, other summation orders) and 1.8e-5 (portable: no FMA). On the pretrained
/// EfficientNet-Lite0 they agree within 4e-7 (tests/simd_levels.rs, bound 1e-5).
#[test]
fn resnet50_logits_agree_across_simd_levels() {
    use convscope::engine::simd::{self, Level};
    let name = "resnet50";
    let Some(dir) = zoo_or_say(name, " across SIMD levels") else {
        return;
    };
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    let references_apart = meta["ort_vs_torch_logits_rel"].as_f64().unwrap() as f32;
    let m = import_onnx(&dir.join(format!("{name}.onnx"))).unwrap();
    let g = Graph::from_def(m.def).unwrap();
    let x = npy(&dir, &format!("{name}.input.npy")); // (1, 3, 224, 224)
    let torch = npy(&dir, &format!("{name}.logits_torch.npy"));
    let logits_at = |level: Level| {
        simd::with_level(level, 2, || {
            let pass = g
                .forward(std::slice::from_ref(&x), &ForwardOptions::eval())
                .unwrap();
            g.lookup(&pass, g.outputs()[0]).unwrap().clone()
        })
        .unwrap()
    };
    let best = logits_at(Level::best());
    let levels: Vec<(Level, Tensor)> = Level::supported()
        .into_iter()
        .map(|l| (l, logits_at(l)))
        .collect();
    for (level, y) in &levels {
        let err = common::rel_err(&format!("{level}"), y, &best);
        println!(
            "{name} logits at {level} vs {}: relative error {err:.2e}",
            Level::best()
        );
    }
    for (level, y) in &levels {
        let tol = 1e-5f32.max(references_apart);
        common::assert_close(
            &format!("{name} logits at {level} vs {}", Level::best()),
            y,
            &best,
            tol,
        );
        common::assert_close(
            &format!("{name} logits at {level} vs PyTorch"),
            y,
            &torch,
            LOGIT_TOL,
        );
    }
}
