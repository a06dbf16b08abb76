//! Graph-level behaviour: validation errors name the node and shapes; gradients flow through
//! shared values and residual connections; results are deterministic.

#![allow(clippy::unwrap_used)]

use convscope::engine::gradcheck::test_tensor;
use convscope::engine::graph::{InputDef, NodeDef};
use convscope::engine::ops::{Activation, BinaryOp, Conv2dSpec, GemmSpec, Padding2d};
use convscope::engine::{
    BackwardRequest, ForwardOptions, Graph, GraphDef, GraphError, Keep, Op, Tensor,
};

fn conv3x3() -> Op {
    Op::Conv2d(Conv2dSpec::stride1(1))
}

/// x [1,2,5,5] → conv (2→3, 3x3) → relu → add(relu, conv) → gap → flatten → linear 3→2
fn small_def() -> GraphDef {
    let mut d = GraphDef::default();
    d.inputs.push(InputDef {
        name: "x".into(),
        shape: vec![1, 2, 5, 5],
    });
    d.param("conv.w", test_tensor(&[3, 2, 3, 3], 1), true);
    d.param("conv.b", test_tensor(&[3], 2), true);
    d.param("fc.w", test_tensor(&[2, 3], 3), true);
    d.param("fc.b", test_tensor(&[2], 4), true);
    d.push("conv", conv3x3(), &["x", "conv.w", "conv.b"]);
    d.push("relu", Op::Activation(Activation::Relu), &["conv"]);
    d.push("res", Op::Binary(BinaryOp::Add), &["relu", "conv"]);
    d.push("gap", Op::GlobalAvgPool, &["res"]);
    d.push("flat", Op::Flatten { axis: 1 }, &["gap"]);
    d.push(
        "fc",
        Op::Gemm(GemmSpec::linear()),
        &["flat", "fc.w", "fc.b"],
    );
    d.outputs.push("fc".into());
    d
}

fn build(d: GraphDef) -> Graph {
    Graph::from_def(d).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn valid_graph_infers_shapes() {
    let g = build(small_def());
    let fc = g.value_id("fc").unwrap();
    assert_eq!(g.value(fc).shape, vec![1, 2]);
    let conv = g.value_id("conv").unwrap();
    assert_eq!(g.value(conv).shape, vec![1, 3, 5, 5]);
}

#[test]
fn nodes_in_any_order_are_sorted_topologically() {
    let mut d = small_def();
    d.nodes.reverse();
    let g = build(d);
    let names: Vec<&str> = g.nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["conv", "relu", "res", "gap", "flat", "fc"]);
}

#[test]
fn unknown_input_names_the_node_and_the_value() {
    let mut d = small_def();
    d.nodes[1].inputs = vec!["cnov".into()];
    let err = Graph::from_def(d).unwrap_err();
    assert_eq!(
        err,
        GraphError::UnknownValue {
            node: "relu".into(),
            name: "cnov".into()
        }
    );
    assert!(err.to_string().contains("'relu'") && err.to_string().contains("'cnov'"));
}

#[test]
fn cycles_are_reported_with_their_nodes() {
    let mut d = small_def();
    // relu now reads res, which reads relu.
    d.nodes[1].inputs = vec!["res".into()];
    let err = Graph::from_def(d).unwrap_err().to_string();
    assert!(err.contains("cycle"), "{err}");
    assert!(err.contains("'relu'") && err.contains("'res'"), "{err}");
}

#[test]
fn duplicate_names_are_refused() {
    let mut d = small_def();
    d.nodes.push(NodeDef {
        name: "again".into(),
        op: Op::Identity,
        inputs: vec!["x".into()],
        output: "relu".into(),
    });
    assert_eq!(
        Graph::from_def(d).unwrap_err(),
        GraphError::DuplicateName("relu".into())
    );
}

#[test]
fn mismatched_weight_shape_names_node_and_shapes() {
    let mut d = small_def();
    d.params[0].tensor = test_tensor(&[3, 4, 3, 3], 1); // expects 2 input channels
    let err = Graph::from_def(d).unwrap_err().to_string();
    assert!(err.contains("'conv'"), "{err}");
    assert!(
        err.contains("[1, 2, 5, 5]") && err.contains("[3, 4, 3, 3]"),
        "{err}"
    );
}

#[test]
fn wrong_arity_and_broadcast_failures_are_errors() {
    let mut d = small_def();
    d.nodes[2].inputs = vec!["relu".into()];
    let err = Graph::from_def(d).unwrap_err().to_string();
    assert!(
        err.contains("'res'") && err.contains("takes 2 inputs"),
        "{err}"
    );

    let mut d = small_def();
    d.nodes[2].inputs = vec!["relu".into(), "x".into()]; // [1,3,5,5] + [1,2,5,5]
    let err = Graph::from_def(d).unwrap_err().to_string();
    assert!(err.contains("'res'"), "{err}");
}

#[test]
fn invalid_parameters_are_errors_not_panics() {
    let mut d = small_def();
    d.nodes[0].op = Op::Conv2d(Conv2dSpec {
        stride: [0, 1],
        padding: Padding2d::default(),
        dilation: [1, 1],
        groups: 1,
    });
    assert!(Graph::from_def(d).is_err());

    let mut d = small_def();
    d.nodes[0].op = Op::Conv2d(Conv2dSpec {
        stride: [1, 1],
        padding: Padding2d::default(),
        dilation: [1, 1],
        groups: 0,
    });
    assert!(Graph::from_def(d).is_err());

    let mut d = small_def();
    d.params[2].tensor = Tensor::new(vec![2, 3], vec![f32::NAN; 6]).unwrap();
    let err = Graph::from_def(d).unwrap_err().to_string();
    assert!(err.contains("fc.w") && err.contains("NaN"), "{err}");
}

#[test]
fn wrong_input_shape_is_an_error_and_batch_is_dynamic() {
    let g = build(small_def());
    let err = g
        .forward(&[test_tensor(&[1, 3, 5, 5], 9)], &ForwardOptions::eval())
        .unwrap_err()
        .to_string();
    assert!(err.contains("'x'") && err.contains("[1, 3, 5, 5]"), "{err}");

    let pass = g
        .forward(&[test_tensor(&[4, 2, 5, 5], 9)], &ForwardOptions::eval())
        .unwrap();
    let fc = g.value_id("fc").unwrap();
    assert_eq!(pass.get(fc).unwrap().shape(), &[4, 2]);
}

/// A graph whose shapes only work at the declared batch (a reshape to a literal traced at
/// batch 1) says so, and a batch of 2 is an error naming the reshape; the small CNN runs any
/// batch.
#[test]
fn max_batch_follows_the_shapes() {
    assert_eq!(build(small_def()).max_batch(), usize::MAX);
    let mut d = GraphDef::default();
    d.inputs.push(InputDef {
        name: "x".into(),
        shape: vec![1, 2, 4],
    });
    d.push("rows", Op::Reshape { shape: vec![4, 2] }, &["x"]);
    d.outputs.push("rows".into());
    let g = build(d);
    assert_eq!(g.max_batch(), 1);
    let err = g
        .forward(&[test_tensor(&[2, 2, 4], 3)], &ForwardOptions::eval())
        .unwrap_err()
        .to_string();
    assert!(err.contains("rows"), "{err}");
    assert!(
        g.forward(&[test_tensor(&[1, 2, 4], 3)], &ForwardOptions::eval())
            .is_ok()
    );
}

#[test]
fn outputs_only_pass_frees_intermediates() {
    let g = build(small_def());
    let pass = g
        .forward(&[test_tensor(&[1, 2, 5, 5], 9)], &ForwardOptions::eval())
        .unwrap();
    assert!(pass.get(g.value_id("relu").unwrap()).is_none());
    assert!(pass.get(g.value_id("fc").unwrap()).is_some());
    let keep = ForwardOptions {
        keep: Keep::Values(vec![g.value_id("relu").unwrap()]),
        ..ForwardOptions::eval()
    };
    let pass = g.forward(&[test_tensor(&[1, 2, 5, 5], 9)], &keep).unwrap();
    assert!(pass.get(g.value_id("relu").unwrap()).is_some());
}

/// Whole-graph finite differences: the input gradient and every parameter gradient of
/// L = Σ fc ⊙ r, through a value read twice (conv feeds relu and the residual add).
#[test]
fn whole_graph_gradients_match_finite_differences() {
    let g = build(small_def());
    let x = test_tensor(&[2, 2, 5, 5], 11);
    let fc = g.value_id("fc").unwrap();
    let xid = g.inputs()[0];
    let r = test_tensor(&[2, 2], 5);
    let loss = |g: &Graph, x: &Tensor| -> f64 {
        let pass = g
            .forward(std::slice::from_ref(x), &ForwardOptions::eval())
            .unwrap();
        let y = pass.get(fc).unwrap();
        y.data()
            .iter()
            .zip(r.data())
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    };
    let pass = g
        .forward(
            std::slice::from_ref(&x),
            &ForwardOptions::eval_for_backward(),
        )
        .unwrap();
    let grads = g
        .backward(
            &pass,
            &BackwardRequest {
                seeds: vec![(fc, r.clone())],
                param_grads: true,
                value_grads: vec![xid],
            },
        )
        .unwrap();
    let eps = 1e-2f32;
    let check = |analytic: &Tensor, numeric: &[f64], what: &str| {
        let max_num = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-3);
        for (i, (&a, &n)) in analytic.data().iter().zip(numeric).enumerate() {
            let err = (a as f64 - n).abs() / max_num;
            assert!(err < 2e-2, "{what}[{i}]: analytic {a}, numeric {n}");
        }
    };
    let d_x = &grads.values[&xid];
    let mut numeric = Vec::new();
    for i in 0..x.numel() {
        let mut xp = x.clone();
        xp.data_mut()[i] += eps;
        let mut xm = x.clone();
        xm.data_mut()[i] -= eps;
        numeric.push((loss(&g, &xp) - loss(&g, &xm)) / (2.0 * eps as f64));
    }
    check(d_x, &numeric, "d_x");
    for p in 0..g.params().len() {
        let analytic = grads.params[p].clone().unwrap();
        let mut numeric = Vec::new();
        for i in 0..analytic.numel() {
            let mut gp = g.clone();
            gp.params_mut()[p].tensor.data_mut()[i] += eps;
            let mut gm = g.clone();
            gm.params_mut()[p].tensor.data_mut()[i] -= eps;
            numeric.push((loss(&gp, &x) - loss(&gm, &x)) / (2.0 * eps as f64));
        }
        check(&analytic, &numeric, &g.params()[p].name);
    }
}

#[test]
fn input_only_backward_skips_parameter_gradients() {
    let g = build(small_def());
    let x = test_tensor(&[1, 2, 5, 5], 11);
    let fc = g.value_id("fc").unwrap();
    let pass = g
        .forward(&[x], &ForwardOptions::eval_for_backward())
        .unwrap();
    let grads = g
        .backward(
            &pass,
            &BackwardRequest {
                seeds: vec![(fc, Tensor::full(&[1, 2], 1.0))],
                param_grads: false,
                value_grads: vec![g.inputs()[0]],
            },
        )
        .unwrap();
    assert!(grads.params.iter().all(|p| p.is_none()));
    assert_eq!(grads.values[&g.inputs()[0]].shape(), &[1, 2, 5, 5]);
}

#[test]
fn backward_without_kept_values_is_an_error() {
    let g = build(small_def());
    let fc = g.value_id("fc").unwrap();
    let pass = g
        .forward(&[test_tensor(&[1, 2, 5, 5], 3)], &ForwardOptions::eval())
        .unwrap();
    let err = g
        .backward(
            &pass,
            &BackwardRequest {
                seeds: vec![(fc, Tensor::full(&[1, 2], 1.0))],
                param_grads: true,
                value_grads: vec![],
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("Keep::All"), "{err}");
}

#[test]
fn same_seed_gives_bit_identical_training_passes() {
    let mut d = small_def();
    // A dropout between relu and the add makes training passes random.
    d.nodes[2].inputs = vec!["drop".into(), "conv".into()];
    d.push("drop", Op::Dropout { p: 0.5 }, &["relu"]);
    let g = build(d);
    let x = test_tensor(&[3, 2, 5, 5], 11);
    let fc = g.value_id("fc").unwrap();
    let run = |seed: u64| {
        let pass = g
            .forward(std::slice::from_ref(&x), &ForwardOptions::train(seed))
            .unwrap();
        let grads = g
            .backward(
                &pass,
                &BackwardRequest {
                    seeds: vec![(fc, Tensor::full(&[3, 2], 1.0))],
                    param_grads: true,
                    value_grads: vec![],
                },
            )
            .unwrap();
        let mut bits: Vec<u32> = pass
            .get(fc)
            .unwrap()
            .data()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        for p in grads.params.iter().flatten() {
            bits.extend(p.data().iter().map(|v| v.to_bits()));
        }
        bits
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43), "dropout must depend on the seed");
}
