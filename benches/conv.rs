//! Convolution layers timed through `ops::conv`: `cargo bench --bench conv [-- --json]`.
//!
//! Threads come from `RAYON_NUM_THREADS` (default: rayon's). For each layer it prints the median
//! forward time, the median backward time (d_x + grad_w, as for a trainable layer) and the
//! forward rate in GFLOP/s (2 · MACs / time). `--json` prints one JSON object per line instead,
//! for tools/bench_conv.py.
//!
//! `cargo bench --bench conv -- --model PATH.onnx` instead times every node of the model's
//! inference graph (batch 1, forward only) and lists the slowest first, with shapes and the
//! multiply-add rate of convolutions: where a network's time goes, layer by layer.

mod common;

use common::median_secs;
use convscope::engine::Tensor;
use convscope::engine::gradcheck::test_tensor;
use convscope::engine::ops::conv::{self, Conv2dSpec, Padding2d};

/// (name, n, c_in, h, w, c_out, k, stride, pad, groups)
type Layer = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

pub const LAYERS: &[Layer] = &[
    ("conv3x3_64_56", 1, 64, 56, 56, 64, 3, 1, 1, 1),
    ("conv3x3_256_14", 1, 256, 14, 14, 256, 3, 1, 1, 1),
    ("dw3x3_144_56_s1", 1, 144, 56, 56, 144, 3, 1, 1, 144),
    ("dw3x3_144_56_s2", 1, 144, 56, 56, 144, 3, 2, 1, 144),
    ("mb_pw_16_96_112", 1, 16, 112, 112, 96, 1, 1, 0, 1),
    ("mb_pw_24_144_56", 1, 24, 56, 56, 144, 1, 1, 0, 1),
    ("mb_pw_144_24_56", 1, 144, 56, 56, 24, 1, 1, 0, 1),
    ("mb_pw_960_320_7", 1, 960, 7, 7, 320, 1, 1, 0, 1),
    ("dw3x3_96_112_s2", 1, 96, 112, 112, 96, 3, 2, 1, 96),
    ("dw3x3_960_7_s1", 1, 960, 7, 7, 960, 3, 1, 1, 960),
    ("dw5x5_144_56_s2", 1, 144, 56, 56, 144, 5, 2, 2, 144),
    ("stem3x3_s2_224", 1, 3, 224, 224, 32, 3, 2, 1, 1),
    ("smile_conv1_b32", 32, 3, 64, 64, 16, 5, 1, 2, 1),
    ("smile_conv2_b32", 32, 16, 64, 64, 16, 5, 1, 2, 1),
    ("smile_conv3_b32", 32, 16, 32, 32, 32, 3, 1, 1, 1),
    ("smile_conv4_b32", 32, 32, 32, 32, 32, 3, 1, 1, 1),
    ("smile_conv1_b1", 1, 3, 64, 64, 16, 5, 1, 2, 1),
    ("smile_conv2_b1", 1, 16, 64, 64, 16, 5, 1, 2, 1),
    ("smile_conv3_b1", 1, 16, 32, 32, 32, 3, 1, 1, 1),
    ("smile_conv4_b1", 1, 32, 32, 32, 32, 3, 1, 1, 1),
    ("vgg_conv1_1", 1, 3, 224, 224, 64, 3, 1, 1, 1),
    ("conv3x3_128_28", 1, 128, 28, 28, 128, 3, 1, 1, 1),
    ("conv3x3_512_7", 1, 512, 7, 7, 512, 3, 1, 1, 1),
    ("r50_pw_64_256_56", 1, 64, 56, 56, 256, 1, 1, 0, 1),
    ("r50_pw_256_64_56", 1, 256, 56, 56, 64, 1, 1, 0, 1),
    ("r50_pw_1024_256_14", 1, 1024, 14, 14, 256, 1, 1, 0, 1),
];

/// Per-node forward medians of an ONNX model's fused inference graph, slowest first.
fn profile_model(path: &str, runs: usize) {
    use convscope::engine::graph::{Graph, ValueKind};
    use convscope::engine::ops::{ForwardCtx, Mode, Op};
    let model = convscope::models::onnx::import_onnx(std::path::Path::new(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let graph = Graph::from_def(model.def).unwrap_or_else(|e| panic!("{path}: {e}"));
    let fast = graph
        .inference(&[])
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut values: Vec<Option<Tensor>> = vec![None; fast.values().len()];
    for &id in fast.inputs() {
        let mut shape = fast.value(id).shape.clone();
        shape[0] = 1;
        values[id] = Some(test_tensor(&shape, 1));
    }
    let ctx = ForwardCtx {
        mode: Mode::Eval,
        seed: 1,
    };
    let mut rows = Vec::new();
    for node in fast.nodes() {
        let ins: Vec<Tensor> = node
            .inputs
            .iter()
            .map(|&v| match fast.value(v).kind {
                ValueKind::Param(p) => fast.params()[p].tensor.clone(),
                _ => values[v].clone().expect("nodes are in topological order"),
            })
            .collect();
        let refs: Vec<&Tensor> = ins.iter().collect();
        let ms = median_secs(runs, || {
            std::hint::black_box(node.op.forward(&refs, ctx).expect("forward"));
        }) * 1e3;
        let y = node.op.forward(&refs, ctx).expect("forward").y;
        let macs = match &node.op {
            Op::Conv2d(_) | Op::FusedConv2d(_) => {
                let w = ins[1].shape();
                (y.numel() * w[1] * w[2] * w[3]) as f64
            }
            _ => 0.0,
        };
        let kind = match &node.op {
            Op::Conv2d(s) => format!("Conv s{} g{}", s.stride[0], s.groups),
            Op::FusedConv2d(s) => format!("FConv s{} g{}", s.conv.stride[0], s.conv.groups),
            op => op.kind_name().to_string(),
        };
        let shapes = format!(
            "{:?} w{:?} -> {:?}",
            ins[0].shape(),
            ins.get(1).map(|t| t.shape().to_vec()).unwrap_or_default(),
            y.shape()
        );
        rows.push((ms, kind, shapes, macs));
        values[node.output] = Some(y);
    }
    let total: f64 = rows.iter().map(|r| r.0).sum();
    println!(
        "threads: {}, sum of node medians {total:.3} ms",
        rayon::current_num_threads()
    );
    let mut by_kind: std::collections::BTreeMap<String, f64> = Default::default();
    for r in &rows {
        *by_kind.entry(r.1.clone()).or_default() += r.0;
    }
    for (k, ms) in by_kind {
        println!("{k:<16} {ms:>8.3} ms");
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (ms, kind, shapes, macs) in rows {
        let rate = if macs > 0.0 { macs / ms / 1e6 } else { 0.0 };
        println!("{ms:>8.3} ms {rate:>6.1} GMAC/s {kind:<14} {shapes}");
    }
}

fn main() {
    common::init();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--model") {
        let path = args.get(i + 1).expect("--model takes a path");
        profile_model(path, common::bench_runs(21));
        return;
    }
    let json = std::env::args().any(|a| a == "--json");
    let runs = common::bench_runs(21);
    if !json {
        println!("threads: {}", rayon::current_num_threads());
        println!(
            "{:<18} {:>10} {:>10} {:>9} {:>8}",
            "layer", "fwd ms", "bwd ms", "bwd/fwd", "GF/s"
        );
        println!("(bwd = d_x + grad_w; then d_x alone and grad_w alone, ms)");
    }
    // Other arguments (not `--json`, not cargo's `--bench`) select layers by substring.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for &(name, n, c_in, h, w, c_out, k, s, p, groups) in LAYERS {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let spec = Conv2dSpec {
            stride: [s, s],
            padding: Padding2d::uniform(p),
            dilation: [1, 1],
            groups,
        };
        let x = test_tensor(&[n, c_in, h, w], 1);
        let wt = test_tensor(&[c_out, c_in / groups, k, k], 2);
        let b = test_tensor(&[c_out], 3);
        let y = conv::forward(&spec, &x, &wt, Some(&b)).expect("bench layer is valid");
        let dy = test_tensor(y.shape(), 4);
        let macs = (y.numel() * (c_in / groups) * k * k) as f64;
        let fwd = median_secs(runs, || {
            std::hint::black_box(conv::forward(&spec, &x, &wt, Some(&b)).expect("forward"));
        });
        let bwd = median_secs(runs, || {
            std::hint::black_box(
                conv::backward(&spec, &x, &wt, true, &dy, &[true, true, false]).expect("backward"),
            );
        });
        let bwd_x = median_secs(runs, || {
            std::hint::black_box(
                conv::backward(&spec, &x, &wt, true, &dy, &[true, false, false]).expect("backward"),
            );
        });
        let bwd_w = median_secs(runs, || {
            std::hint::black_box(
                conv::backward(&spec, &x, &wt, true, &dy, &[false, true, false]).expect("backward"),
            );
        });
        let gflops = 2.0 * macs / fwd / 1e9;
        if json {
            println!(
                "{{\"layer\": \"{name}\", \"fwd_ms\": {:.4}, \"bwd_ms\": {:.4}, \"bwd_x_ms\": {:.4}, \"bwd_w_ms\": {:.4}, \"gflops\": {gflops:.2}}}",
                fwd * 1e3,
                bwd * 1e3,
                bwd_x * 1e3,
                bwd_w * 1e3
            );
        } else {
            println!(
                "{name:<18} {:>10.3} {:>10.3} {:>9.2} {gflops:>8.1} {:>9.3} {:>9.3}",
                fwd * 1e3,
                bwd * 1e3,
                bwd / fwd,
                bwd_x * 1e3,
                bwd_w * 1e3
            );
        }
    }
}
