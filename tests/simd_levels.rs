//! Issue 13, "every CPU": the instruction-set levels agree with each other, and
//! `CONVSCOPE_SIMD` caps the level of the real binary or says in one sentence why it cannot.

#![allow(clippy::unwrap_used)]

mod common;

use common::{stderr, stdout};
use convscope::engine::simd::{self, Level};
use convscope::engine::{Graph, Tensor};

/// `convscope ARGS` with `CONVSCOPE_SIMD` set to `level` (removed when None).
fn convscope_at(level: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_convscope"));
    cmd.args(args);
    match level {
        Some(l) => cmd.env(simd::ENV_VAR, l),
        None => cmd.env_remove(simd::ENV_VAR),
    };
    cmd.output().expect("run convscope")
}

/// The bundled EfficientNet-Lite0's logits and input gradient of logit 285 at `level`.
fn effnet_at(g: &Graph, x: &Tensor, level: Level) -> (Tensor, Tensor) {
    simd::with_level(level, 2, || {
        let (logits, _, d_x) = common::logits_and_input_gradient(g, x, 285, &[]);
        (logits, d_x)
    })
    .unwrap()
}

/// Logits within 1e-5 of the best level's (relative to the largest) at every level this CPU
/// has; the input gradient, a longer chain of float32 sums in another order, within 1e-4.
#[test]
fn bundled_model_agrees_across_levels() {
    let path = common::shared_path("data/models/efficientnet_lite0.onnx");
    let m = convscope::models::onnx::import_onnx(&path).unwrap();
    let g = Graph::from_def(m.def).unwrap();
    let x = convscope::engine::gradcheck::test_tensor(&[1, 3, 224, 224], 3).map(|v| 2.0 * v);
    let (y0, gx0) = effnet_at(&g, &x, Level::best());
    assert!(gx0.max_abs() > 0.0);
    let levels = Level::supported();
    assert!(levels.len() >= 2, "only {levels:?}: nothing to compare");
    for level in levels {
        let (y, gx) = effnet_at(&g, &x, level);
        let vs = Level::best();
        common::assert_close(&format!("logits at {level} vs {vs}"), &y, &y0, 1e-5);
        common::assert_close(
            &format!("input gradient at {level} vs {vs}"),
            &gx,
            &gx0,
            1e-4,
        );
    }
}

#[test]
fn bench_reports_the_level_it_ran_at() {
    let args = [
        "bench",
        "--model",
        "smile-cnn",
        "--runs",
        "1",
        "--threads",
        "1",
        "--json",
    ];
    let level_of = |o: &std::process::Output| {
        assert!(o.status.success(), "{}", stderr(o));
        let line: serde_json::Value = serde_json::from_str(stdout(o).trim()).unwrap();
        line["simd"].as_str().unwrap().to_string()
    };
    assert_eq!(level_of(&convscope_at(None, &args)), Level::best().name());
    for level in Level::supported() {
        assert_eq!(
            level_of(&convscope_at(Some(level.name()), &args)),
            level.name()
        );
    }
}

#[test]
fn a_level_the_cpu_lacks_or_nonsense_is_one_sentence_and_a_failure() {
    let args = ["summary", "--model", "smile-cnn"];
    let unsupported: Vec<Level> = Level::ALL
        .into_iter()
        .filter(|l| !l.is_supported())
        .collect();
    // x86-64 lacks NEON, aarch64 lacks AVX2: every machine has one to try
    assert!(!unsupported.is_empty());
    for level in unsupported {
        let o = convscope_at(Some(level.name()), &args);
        assert!(!o.status.success(), "{level} ran");
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("CONVSCOPE_SIMD") && err.contains("lacks") && !err.contains("panicked"),
            "{err}"
        );
        assert!(stdout(&o).is_empty());
    }
    for nonsense in ["sse9", "AVX-2", "fast"] {
        let o = convscope_at(Some(nonsense), &args);
        assert!(!o.status.success(), "{nonsense} ran");
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("CONVSCOPE_SIMD") && err.contains(nonsense) && err.contains("avx2"),
            "{err}"
        );
    }
    // an empty value is the default, as if unset
    assert!(convscope_at(Some(""), &args).status.success());
}

/// `convscope ARGS` on an emulated CPU (`qemu-x86_64 -cpu CPU`), or None when qemu-user's
/// x86-64 emulator is not installed (CI installs it).
#[cfg(target_arch = "x86_64")]
fn convscope_on(cpu: &str, level: Option<&str>, args: &[&str]) -> Option<std::process::Output> {
    let mut cmd = std::process::Command::new("qemu-x86_64");
    cmd.args(["-cpu", cpu, env!("CARGO_BIN_EXE_convscope")])
        .args(args);
    match level {
        Some(l) => cmd.env(simd::ENV_VAR, l),
        None => cmd.env_remove(simd::ENV_VAR),
    };
    cmd.output().ok()
}

/// The binary on CPUs this machine is not: an AVX2 + FMA laptop without AVX-512 (`Haswell`)
/// and a baseline x86-64 (`qemu64`: SSE2, no AVX, no FMA), emulated by qemu-user, which
/// raises SIGILL on any instruction the model lacks. Each picks its level, runs the bundled
/// model (1x1, depthwise, GEMM, pooling kernels) to the same top class as this machine, trains
/// the smile CNN for a step (5x5 direct kernels, grad_w, batch norm, Adam), and refuses a level
/// above its own in one sentence.
#[cfg(target_arch = "x86_64")]
#[test]
fn emulated_avx2_and_baseline_cpus_run_without_illegal_instructions() {
    let photo = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/images/chelsea.png");
    let predict = ["predict", "--model", "efficientnet-lite0", photo, "--json"];
    let top = |o: &std::process::Output| -> u64 {
        assert!(o.status.success(), "{}", stderr(o));
        let line: serde_json::Value = serde_json::from_str(stdout(o).trim()).unwrap();
        line["top"][0]["index"].as_u64().unwrap()
    };
    let native = top(&convscope_at(None, &predict));
    let bench = [
        "bench",
        "--model",
        "smile-cnn",
        "--runs",
        "1",
        "--threads",
        "2",
        "--train-batch",
        "2",
        "--json",
    ];
    for (cpu, level, lacks) in [
        ("Haswell", "avx2", "avx512"),
        ("qemu64", "portable", "avx2"),
    ] {
        let Some(o) = convscope_on(cpu, None, &predict) else {
            println!(
                "emulated {cpu} NOT CHECKED: qemu-x86_64 is not installed (Debian: qemu-user)"
            );
            return;
        };
        assert_eq!(top(&o), native, "{cpu}: {}", stderr(&o));
        let o = convscope_on(cpu, None, &bench).unwrap();
        assert!(o.status.success(), "{cpu}: {}", stderr(&o));
        let line: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(line["simd"], level, "{cpu}: {line}");
        assert!(line["train_step_ms"].as_f64().is_some_and(|t| t > 0.0));
        let o = convscope_on(cpu, Some(lacks), &["summary", "--model", "smile-cnn"]).unwrap();
        assert!(!o.status.success(), "{cpu} ran at {lacks}");
        let err = stderr(&o);
        assert!(err.contains("lacks") && !err.contains("panicked"), "{err}");
    }
}
