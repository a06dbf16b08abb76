//! A training pass (`Keep::Backward`) runs each convolution together with the ReLU / Clip that
//! alone reads it. Its reference is the same graph run unfused (`Keep::All`, whose ops are
//! checked by finite differences and against PyTorch elsewhere): outputs, parameter gradients
//! and requested value gradients must be bit-identical, and convolutions the rule excludes
//! (two readers, a graph output, an activation without a read-from-output derivative) must
//! still be computed and kept.

#![allow(clippy::unwrap_used)]

use convscope::engine::gradcheck::test_tensor;
use convscope::engine::graph::InputDef;
use convscope::engine::ops::{Activation, BatchNormSpec, BinaryOp, Conv2dSpec, GemmSpec, Mode};
use convscope::engine::{BackwardRequest, ForwardOptions, Graph, GraphDef, Keep, Op, Tensor};

fn conv(pad: usize) -> Op {
    Op::Conv2d(Conv2dSpec::stride1(pad))
}

/// x [3, 3, 7, 6] →
/// conv_a (3→4, 3x3, bias) → relu_a → bn_a (the smile CNN's order) →
/// conv_b (4→4, 5x5, no bias) → clip_b (ReLU6) →
/// conv_c (1x1) → relu_c, and add_c = relu_c + conv_c (conv_c has two readers) →
/// conv_d (3x3) → leaky_d (no output-derivative form) and relu_d; conv_d is also a graph output
/// → gap → flatten → linear 4→2 (`logits`).
fn def() -> GraphDef {
    let mut d = GraphDef::default();
    d.inputs.push(InputDef {
        name: "x".into(),
        shape: vec![3, 3, 7, 6],
    });
    d.param("a.w", test_tensor(&[4, 3, 3, 3], 1), true);
    d.param("a.b", test_tensor(&[4], 2), true);
    d.param("bn.gamma", Tensor::full(&[4], 1.3), true);
    d.param("bn.beta", test_tensor(&[4], 3), true);
    d.param("bn.mean", Tensor::zeros(&[4]), false);
    d.param("bn.var", Tensor::full(&[4], 1.0), false);
    d.param("b.w", test_tensor(&[4, 4, 5, 5], 4), true);
    d.param("c.w", test_tensor(&[4, 4, 1, 1], 5), true);
    d.param("c.b", test_tensor(&[4], 6), true);
    d.param("d.w", test_tensor(&[4, 4, 3, 3], 7), true);
    d.param("fc.w", test_tensor(&[2, 4], 8), true);
    d.param("fc.b", test_tensor(&[2], 9), true);
    d.push("conv_a", conv(1), &["x", "a.w", "a.b"]);
    d.push("relu_a", Op::Activation(Activation::Relu), &["conv_a"]);
    d.push(
        "bn_a",
        Op::BatchNorm2d(BatchNormSpec {
            eps: 1e-5,
            momentum: 0.1,
        }),
        &["relu_a", "bn.gamma", "bn.beta", "bn.mean", "bn.var"],
    );
    d.push("conv_b", conv(2), &["bn_a", "b.w"]);
    d.push(
        "clip_b",
        Op::Activation(Activation::Clip { min: 0.0, max: 6.0 }),
        &["conv_b"],
    );
    d.push("conv_c", conv(0), &["clip_b", "c.w", "c.b"]);
    d.push("relu_c", Op::Activation(Activation::Relu), &["conv_c"]);
    d.push("add_c", Op::Binary(BinaryOp::Add), &["relu_c", "conv_c"]);
    d.push("conv_d", conv(1), &["add_c", "d.w"]);
    d.push(
        "leaky_d",
        Op::Activation(Activation::LeakyRelu { alpha: 0.1 }),
        &["conv_d"],
    );
    d.push("relu_d", Op::Activation(Activation::Relu), &["leaky_d"]);
    d.push("gap", Op::GlobalAvgPool, &["relu_d"]);
    d.push("flat", Op::Flatten { axis: 1 }, &["gap"]);
    d.push(
        "logits",
        Op::Gemm(GemmSpec::linear()),
        &["flat", "fc.w", "fc.b"],
    );
    d.outputs.push("logits".into());
    d.outputs.push("conv_d".into());
    d
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn fused_training_pass_is_bit_identical_to_the_unfused_one() {
    let g = Graph::from_def(def()).unwrap();
    let x = test_tensor(&[3, 3, 7, 6], 11);
    let id = |name: &str| g.value_id(name).unwrap();
    let fused_opts = ForwardOptions::train(5);
    assert_eq!(fused_opts.keep, Keep::Backward);
    let plain_opts = ForwardOptions {
        keep: Keep::All,
        ..ForwardOptions::train(5)
    };
    assert_eq!(plain_opts.mode, Mode::Train);
    let fused = g.forward(std::slice::from_ref(&x), &fused_opts).unwrap();
    let plain = g.forward(std::slice::from_ref(&x), &plain_opts).unwrap();

    // fused: the pre-activations of conv_a and conv_b are never stored
    for name in ["conv_a", "conv_b"] {
        assert!(fused.get(id(name)).is_none(), "{name} was stored");
        assert!(
            plain.get(id(name)).is_some(),
            "{name} missing from Keep::All"
        );
    }
    // excluded: two readers, a graph output
    for name in ["conv_c", "conv_d"] {
        assert!(fused.get(id(name)).is_some(), "{name} should not be fused");
    }
    for name in [
        "relu_a", "bn_a", "clip_b", "relu_c", "add_c", "leaky_d", "logits",
    ] {
        let (f, p) = (fused.get(id(name)).unwrap(), plain.get(id(name)).unwrap());
        assert_eq!(f.shape(), p.shape(), "{name}");
        assert_eq!(bits(f), bits(p), "{name} differs");
    }

    // seeds at the logits and at a fused-away pre-activation; gradients of every parameter
    // and of both pre-activations
    let logits = id("logits");
    let request = BackwardRequest {
        seeds: vec![
            (logits, test_tensor(&[3, 2], 12)),
            (id("conv_b"), test_tensor(&[3, 4, 7, 6], 13)),
        ],
        param_grads: true,
        value_grads: vec![id("conv_a"), id("conv_b"), id("x")],
    };
    let gf = g.backward(&fused, &request).unwrap();
    let gp = g.backward(&plain, &request).unwrap();
    let mut compared = 0;
    for (p, (a, b)) in gf.params.iter().zip(&gp.params).enumerate() {
        let name = &g.params()[p].name;
        match (a, b) {
            (Some(a), Some(b)) => {
                assert_eq!(bits(a), bits(b), "gradient of {name} differs");
                compared += 1;
            }
            (None, None) => {}
            _ => panic!("gradient of {name} present in only one pass"),
        }
    }
    assert_eq!(compared, 10, "every trainable parameter has a gradient");
    for name in ["conv_a", "conv_b", "x"] {
        let (a, b) = (&gf.values[&id(name)], &gp.values[&id(name)]);
        assert_eq!(bits(a), bits(b), "gradient of value {name} differs");
        assert!(
            a.data().iter().any(|&v| v != 0.0),
            "{name}: all-zero gradient"
        );
    }
}

#[test]
fn an_excluded_activation_still_runs_on_its_own() {
    // conv_d → leaky_d: LeakyReLU's derivative cannot be read from its output, so the graph
    // runs it as a node: its output differs from a ReLU's on negative inputs
    let g = Graph::from_def(def()).unwrap();
    let x = test_tensor(&[3, 3, 7, 6], 11);
    let pass = g
        .forward(std::slice::from_ref(&x), &ForwardOptions::train(1))
        .unwrap();
    let z = pass.get(g.value_id("conv_d").unwrap()).unwrap();
    let y = pass.get(g.value_id("leaky_d").unwrap()).unwrap();
    let negatives = z.data().iter().filter(|&&v| v < 0.0).count();
    assert!(negatives > 0, "the test needs negative pre-activations");
    for (&zv, &yv) in z.data().iter().zip(y.data()) {
        assert_eq!(yv, if zv > 0.0 { zv } else { 0.1 * zv });
    }
}

#[test]
fn evaluation_passes_fuse_too_and_keep_what_they_are_asked_for() {
    // Keep::Outputs and Keep::BackwardAnd fuse the same pairs as training; a listed
    // pre-activation (conv_b) is computed and kept, its pair run apart; results bit-identical
    // to the unfused Keep::All pass
    let g = Graph::from_def(def()).unwrap();
    let x = test_tensor(&[3, 3, 7, 6], 11);
    let id = |name: &str| g.value_id(name).unwrap();
    let plain = g
        .forward(
            std::slice::from_ref(&x),
            &ForwardOptions::eval_for_backward(),
        )
        .unwrap();
    let outputs = g
        .forward(std::slice::from_ref(&x), &ForwardOptions::eval())
        .unwrap();
    let logits = id("logits");
    assert_eq!(
        bits(outputs.get(logits).unwrap()),
        bits(plain.get(logits).unwrap())
    );
    assert!(
        outputs.get(id("relu_a")).is_none(),
        "an intermediate was kept"
    );

    let opts = ForwardOptions::eval_for_backward_keeping(vec![id("conv_b")]);
    let fused = g.forward(std::slice::from_ref(&x), &opts).unwrap();
    assert!(fused.get(id("conv_a")).is_none(), "conv_a was not fused");
    for name in ["conv_b", "clip_b", "relu_a", "logits"] {
        let (f, p) = (fused.get(id(name)).unwrap(), plain.get(id(name)).unwrap());
        assert_eq!(bits(f), bits(p), "{name} differs");
    }
    let request = BackwardRequest {
        seeds: vec![(logits, test_tensor(&[3, 2], 12))],
        param_grads: false,
        value_grads: vec![id("conv_a"), id("conv_b"), id("x")],
    };
    let gf = g.backward(&fused, &request).unwrap();
    let gp = g.backward(&plain, &request).unwrap();
    for name in ["conv_a", "conv_b", "x"] {
        let (a, b) = (&gf.values[&id(name)], &gp.values[&id(name)]);
        assert_eq!(bits(a), bits(b), "gradient of value {name} differs");
        assert!(a.data().iter().any(|&v| v != 0.0), "{name}: all-zero");
    }
}
