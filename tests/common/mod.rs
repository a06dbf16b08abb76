//! Reading the reference fixtures under `tests/fixtures/` and comparing tensors with them.
//!
//! Every reader fails with a message that names the missing or broken file and the command
//! that regenerates it, so that a missing fixture is never mistaken for an engine bug.

#![allow(dead_code)] // each integration test binary uses its own subset of these helpers

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use convscope::engine::{BackwardRequest, Graph, Tensor, ValueId};
use ndarray::ArrayD;
use safetensors::{Dtype, SafeTensors};

/// The command that (re)makes the engine fixtures, run from the repository root.
pub const REGENERATE_ENGINE: &str = "/work/refenv/venv/bin/python tools/make_engine_fixtures.py \
     (any Python with torch, numpy and safetensors; see tools/README.md)";

/// `tests/fixtures/engine/<case>`.
pub fn engine_case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join("engine")
        .join(case)
}

/// The path of a fixture file, or a panic naming it and the regeneration command.
pub fn require(dir: &Path, file: &str) -> PathBuf {
    let path = dir.join(file);
    if !path.is_file() {
        panic!(
            "fixture file {} is missing; regenerate the fixtures with: {REGENERATE_ENGINE}",
            path.display()
        );
    }
    path
}

/// A float32 `.npy` file as a tensor.
pub fn npy(dir: &Path, file: &str) -> Tensor {
    let path = require(dir, file);
    let a: ArrayD<f32> = ndarray_npy::read_npy(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} as a float32 .npy ({e}); regenerate with: {REGENERATE_ENGINE}",
            path.display()
        )
    });
    Tensor::from_array(a)
}

/// The float32 tensors of a `.safetensors` file by name (other dtypes, such as batch norm's
/// int64 `num_batches_tracked`, are skipped: the engine does not use them).
pub fn safetensors(dir: &Path, file: &str) -> BTreeMap<String, Tensor> {
    let path = require(dir, file);
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| {
        panic!(
            "{} is not a safetensors file ({e}); regenerate with: {REGENERATE_ENGINE}",
            path.display()
        )
    });
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            continue;
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let t = Tensor::new(view.shape().to_vec(), data)
            .unwrap_or_else(|e| panic!("{}: tensor '{name}': {e}", path.display()));
        out.insert(name, t);
    }
    out
}

/// `meta.json` of a case.
pub fn meta(dir: &Path) -> serde_json::Value {
    let path = require(dir, "meta.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// A tolerance from `meta.json` ("tolerances" → key).
pub fn tolerance(meta: &serde_json::Value, key: &str) -> f32 {
    meta["tolerances"][key].as_f64().unwrap_or_else(|| {
        panic!("meta.json has no tolerances.{key}; regenerate with: {REGENERATE_ENGINE}")
    }) as f32
}

/// Looks a tensor up by name, naming the file set when it is absent.
pub fn get<'a>(map: &'a BTreeMap<String, Tensor>, name: &str, what: &str) -> &'a Tensor {
    map.get(name).unwrap_or_else(|| {
        panic!(
            "{what} has no tensor '{name}' (has: {:?})",
            map.keys().collect::<Vec<_>>()
        )
    })
}

/// max |got - want| / max |want| (computed in f64), after checking the shapes agree.
/// A reference that is all zeros is compared absolutely.
pub fn rel_err(what: &str, got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(
        got.shape(),
        want.shape(),
        "{what}: engine shape vs reference shape"
    );
    let mut max_diff = 0.0f64;
    let mut max_ref = 0.0f64;
    for (&g, &w) in got.data().iter().zip(want.data()) {
        assert!(
            g.is_finite(),
            "{what}: the engine produced a non-finite value {g}"
        );
        max_diff = max_diff.max((f64::from(g) - f64::from(w)).abs());
        max_ref = max_ref.max(f64::from(w).abs());
    }
    if max_ref > 0.0 {
        max_diff / max_ref
    } else {
        max_diff
    }
}

/// Panics with the measured error, the tolerance and the worst element when `got` is not
/// within `tol` (relative, see [`rel_err`]) of `want`.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let err = rel_err(what, got, want);
    if err > f64::from(tol) {
        let (i, g, w) = got
            .data()
            .iter()
            .zip(want.data())
            .enumerate()
            .map(|(i, (&g, &w))| (i, g, w))
            .max_by(|a, b| (a.1 - a.2).abs().total_cmp(&(b.1 - b.2).abs()))
            .unwrap_or((0, 0.0, 0.0));
        panic!(
            "{what}: relative error {err:.3e} > tolerance {tol:.1e} (shape {:?}; worst flat index {i}: \
             engine {g}, reference {w}; reference max |.| {})",
            want.shape(),
            want.max_abs()
        );
    }
    eprintln!("{what}: relative error {err:.2e} (tolerance {tol:.0e})");
}

/// The rows `start, start + step, ..` of dimension 0 (how the fixtures store the gradients of
/// very large weights, see "subsampled" in meta.json).
pub fn take_rows(t: &Tensor, start: usize, step: usize) -> Tensor {
    let rows = t.shape()[0];
    let row_len: usize = t.shape()[1..].iter().product();
    let picked: Vec<usize> = (start..rows).step_by(step.max(1)).collect();
    let mut data = Vec::with_capacity(picked.len() * row_len);
    for r in &picked {
        data.extend_from_slice(&t.data()[r * row_len..(r + 1) * row_len]);
    }
    let mut shape = t.shape().to_vec();
    shape[0] = picked.len();
    Tensor::new(shape, data).unwrap_or_else(|e| panic!("take_rows: {e}"))
}

/// Applies the case's "subsampled" rule for parameter `name` (identity when there is none).
pub fn subsample(meta: &serde_json::Value, name: &str, t: &Tensor) -> Tensor {
    let rule = &meta["subsampled"][name];
    if rule.is_null() {
        return t.clone();
    }
    assert_eq!(
        rule["axis"].as_u64(),
        Some(0),
        "only row subsampling is supported"
    );
    let start = rule["start"].as_u64().unwrap_or(0) as usize;
    let step = rule["step"].as_u64().unwrap_or(1) as usize;
    take_rows(t, start, step)
}

/// A path inside the read-only `shared/` folder that sits beside the checkout (pretrained
/// model, sample photos, data sets); fails with a plain message naming it when it is absent.
pub fn shared_path(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel);
    assert!(
        p.exists(),
        "{} is missing: these tests need the shared folder (../shared, with its data/) beside the checkout",
        p.display()
    );
    p
}

/// Runs the real `convscope` binary with `args`.
pub fn convscope(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_convscope"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run convscope: {e}"))
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Each line of a `--json` run's stdout, parsed (a line that is not JSON fails the test,
/// naming the line).
pub fn json_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// The request for d output[class] / d input of a graph's (first) input: a one-hot seed at
/// `out`, shaped like that output (`shape`), no parameter gradients.
pub fn class_to_input_request(
    g: &Graph,
    out: ValueId,
    shape: &[usize],
    class: usize,
) -> BackwardRequest {
    let mut seed = Tensor::zeros(shape);
    seed.data_mut()[class] = 1.0;
    BackwardRequest {
        seeds: vec![(out, seed)],
        param_grads: false,
        value_grads: vec![g.inputs()[0]],
    }
}

/// One evaluation-mode forward and backward pass of `g` on `x`: (the first output, the values
/// named in `keep`, d output[class] / d input).
pub fn logits_and_input_gradient(
    g: &Graph,
    x: &Tensor,
    class: usize,
    keep: &[&str],
) -> (Tensor, Vec<Tensor>, Tensor) {
    let pass = g
        .forward(
            std::slice::from_ref(x),
            &convscope::engine::ForwardOptions::eval_for_backward(),
        )
        .expect("forward pass");
    let out = g.outputs()[0];
    let logits = g.lookup(&pass, out).expect("the output is kept").clone();
    let kept = keep
        .iter()
        .map(|name| {
            let id = g
                .value_id(name)
                .unwrap_or_else(|| panic!("no value {name}"));
            g.lookup(&pass, id).expect("a kept value").clone()
        })
        .collect();
    let req = class_to_input_request(g, out, logits.shape(), class);
    let mut grads = g.backward(&pass, &req).expect("backward pass");
    let d_x = grads
        .values
        .remove(&g.inputs()[0])
        .expect("the input gradient");
    (logits, kept, d_x)
}

/// `tests/fixtures/onnx/<name>` (made by tools/make_onnx_fixtures.py or make_keras_fixture.py).
pub fn onnx_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
}

/// A float32 `.npy` beside the ONNX fixtures, named in the failure.
pub fn onnx_npy(name: &str) -> Tensor {
    let path = onnx_fixture(name);
    let a: ArrayD<f32> = ndarray_npy::read_npy(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (see tools/README.md)", path.display()));
    Tensor::from_array(a)
}

/// The graph's first output for `x` in evaluation mode.
pub fn eval_output(g: &Graph, x: &Tensor) -> Tensor {
    let pass = g
        .forward(
            std::slice::from_ref(x),
            &convscope::engine::ForwardOptions::eval(),
        )
        .unwrap_or_else(|e| panic!("forward pass: {e}"));
    g.lookup(&pass, g.outputs()[0])
        .unwrap_or_else(|| panic!("the forward pass lost the output"))
        .clone()
}
