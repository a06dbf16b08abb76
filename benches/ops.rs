//! Timing of the memory-bound ops: `cargo bench --bench ops` (median of `BENCH_RUNS`, default 15,
//! after one warm-up call; threads from `RAYON_NUM_THREADS`). A benchmark, not a test: timings
//! never decide pass or fail.

mod common;

use convscope::engine::Tensor;
use convscope::engine::gradcheck::test_tensor;
use convscope::engine::ops::{
    Activation, BatchNormSpec, BinaryOp, ForwardCtx, Mode, Op, Padding2d, Pool2dSpec,
};

/// Median milliseconds of `BENCH_RUNS` (default 15) calls of `f`.
fn median_ms(f: impl FnMut()) -> f64 {
    common::median_secs(common::bench_runs(15), f) * 1e3
}

fn report(name: &str, op: &Op, inputs: &[Tensor], mode: Mode) {
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let ctx = ForwardCtx { mode, seed: 1 };
    let fwd = median_ms(|| {
        op.forward(&refs, ctx)
            .map(drop)
            .unwrap_or_else(|e| panic!("{e}"));
    });
    let out = op.forward(&refs, ctx).unwrap_or_else(|e| panic!("{e}"));
    let needs = vec![true; inputs.len()];
    let bwd = median_ms(|| {
        op.backward(&refs, &out.y, &out.saved, &out.y, &needs, mode)
            .map(drop)
            .unwrap_or_else(|e| panic!("{e}"));
    });
    let mb = inputs[0].numel() as f64 * 4.0 / 1e6;
    println!(
        "{name:<40} in {:>7.1} MB  forward {fwd:>7.3} ms  backward {bwd:>7.3} ms",
        mb
    );
}

fn main() {
    common::init();
    println!("threads: {}", rayon::current_num_threads());
    smile_ops();
    let x = test_tensor(&[8, 64, 56, 56], 1);
    let c = 64;
    report(
        "Clip(0,6) [8,64,56,56]",
        &Op::Activation(Activation::Clip { min: 0.0, max: 6.0 }),
        std::slice::from_ref(&x),
        Mode::Eval,
    );
    report(
        "Silu [8,64,56,56]",
        &Op::Activation(Activation::Silu),
        std::slice::from_ref(&x),
        Mode::Eval,
    );
    let bn = Op::BatchNorm2d(BatchNormSpec {
        eps: 1e-5,
        momentum: 0.1,
    });
    let params = [
        test_tensor(&[c], 2),
        test_tensor(&[c], 3),
        test_tensor(&[c], 4),
        Tensor::full(&[c], 1.0),
    ];
    let mut bn_in = vec![x.clone()];
    bn_in.extend(params.iter().cloned());
    report("BatchNorm train [8,64,56,56]", &bn, &bn_in, Mode::Train);
    report("BatchNorm eval [8,64,56,56]", &bn, &bn_in, Mode::Eval);
    let pool = Pool2dSpec {
        kernel: [3, 3],
        stride: [2, 2],
        padding: Padding2d::uniform(1),
        ceil_mode: false,
        count_include_pad: true,
    };
    let big = test_tensor(&[8, 64, 112, 112], 5);
    report(
        "MaxPool 3x3 s2 p1 [8,64,112,112]",
        &Op::MaxPool2d(pool.clone()),
        std::slice::from_ref(&big),
        Mode::Eval,
    );
    report(
        "AvgPool 3x3 s2 p1 [8,64,112,112]",
        &Op::AvgPool2d(pool),
        &[big],
        Mode::Eval,
    );
    report(
        "GlobalAvgPool [8,64,56,56]",
        &Op::GlobalAvgPool,
        std::slice::from_ref(&x),
        Mode::Eval,
    );
    report(
        "Add same shape [8,64,56,56]",
        &Op::Binary(BinaryOp::Add),
        &[x.clone(), x.clone()],
        Mode::Eval,
    );
    report(
        "Mul [8,64,56,56] * [8,64,1,1]",
        &Op::Binary(BinaryOp::Mul),
        &[x.clone(), test_tensor(&[8, 64, 1, 1], 6)],
        Mode::Eval,
    );
    report(
        "Transpose NCHW->NHWC [8,64,56,56]",
        &Op::Transpose {
            perm: vec![0, 2, 3, 1],
        },
        std::slice::from_ref(&x),
        Mode::Eval,
    );
    report(
        "Transpose [0,3,2,1] [8,64,56,56]",
        &Op::Transpose {
            perm: vec![0, 3, 2, 1],
        },
        std::slice::from_ref(&x),
        Mode::Eval,
    );
    report(
        "Softmax axis 1 [64,1000]",
        &Op::Softmax { axis: 1 },
        &[test_tensor(&[64, 1000], 7)],
        Mode::Eval,
    );
    report(
        "Dropout 0.5 train [8,64,56,56]",
        &Op::Dropout { p: 0.5 },
        std::slice::from_ref(&x),
        Mode::Train,
    );
    report(
        "Concat axis 1 2x[8,64,56,56]",
        &Op::Concat { axis: 1 },
        &[x.clone(), x],
        Mode::Eval,
    );
}

/// The smile CNN's memory-bound layers at the training batch (32): its first block's output.
fn smile_ops() {
    let x = test_tensor(&[32, 16, 64, 64], 11);
    report(
        "Relu [32,16,64,64]",
        &Op::Activation(Activation::Relu),
        std::slice::from_ref(&x),
        Mode::Train,
    );
    let bn = Op::BatchNorm2d(BatchNormSpec {
        eps: 1e-3,
        momentum: 0.1,
    });
    let mut bn_in = vec![x.clone()];
    bn_in.extend([
        test_tensor(&[16], 12),
        test_tensor(&[16], 13),
        test_tensor(&[16], 14),
        Tensor::full(&[16], 1.0),
    ]);
    report("BatchNorm train [32,16,64,64]", &bn, &bn_in, Mode::Train);
    let pool = Pool2dSpec {
        kernel: [2, 2],
        stride: [2, 2],
        padding: Padding2d::uniform(0),
        ceil_mode: false,
        count_include_pad: true,
    };
    report(
        "MaxPool 2x2 s2 [32,16,64,64]",
        &Op::MaxPool2d(pool),
        std::slice::from_ref(&x),
        Mode::Train,
    );
    report(
        "Dropout 0.25 train [32,16,64,64]",
        &Op::Dropout { p: 0.25 },
        std::slice::from_ref(&x),
        Mode::Train,
    );
}
