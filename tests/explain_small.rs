//! Explanation methods on graphs small enough to check by hand, and finite differences on the
//! smile CNN.

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use convscope::engine::graph::InputDef;
use convscope::engine::ops::{Activation, Conv2dSpec, GemmSpec};
use convscope::engine::{Graph, GraphDef, Op, Tensor};
use convscope::explain::cam::{GradCamVariant, ScoreCamOptions};
use convscope::explain::gradient::{Baseline, IntegratedGradientsOptions, SmoothGradOptions};
use convscope::explain::occlusion::OcclusionOptions;
use convscope::explain::{Control, ExplainError, Explainer, Map, Progress, Target};

/// x [1,1,2,2] -> conv1x1 (weights 1, -1) -> relu = A [1,2,2,2] -> global avg -> flatten
/// -> linear V [3, 2] + b. So y_c = sum_k V[c][k] mean(A_k) + b_c.
fn tiny() -> Graph {
    let mut d = GraphDef {
        inputs: vec![InputDef {
            name: "x".into(),
            shape: vec![1, 1, 2, 2],
        }],
        outputs: vec!["probs".into()],
        ..GraphDef::default()
    };
    d.param(
        "w",
        Tensor::new(vec![2, 1, 1, 1], vec![1.0, -1.0]).unwrap(),
        true,
    );
    d.param(
        "v",
        Tensor::new(vec![3, 2], vec![1.0, 2.0, -1.0, 0.5, 0.0, 0.0]).unwrap(),
        true,
    );
    d.param(
        "b",
        Tensor::new(vec![3], vec![0.0, 0.1, 0.2]).unwrap(),
        true,
    );
    let conv = Conv2dSpec::stride1(0);
    d.push("conv", Op::Conv2d(conv), &["x", "w"]);
    d.push("relu", Op::Activation(Activation::Relu), &["conv"]);
    d.push("gap", Op::GlobalAvgPool, &["relu"]);
    d.push("flat", Op::Flatten { axis: 1 }, &["gap"]);
    d.push("logits", Op::Gemm(GemmSpec::linear()), &["flat", "v", "b"]);
    // A trailing softmax: explanations must differentiate the logits behind it.
    d.push("probs", Op::Softmax { axis: 1 }, &["logits"]);
    Graph::from_def(d).unwrap()
}

fn x_tiny() -> Tensor {
    Tensor::new(vec![1, 1, 2, 2], vec![1.0, 2.0, -3.0, 0.5]).unwrap()
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
    }
}

#[test]
fn gradcam_by_hand() {
    let g = tiny();
    let ex = Explainer::new(&g).unwrap();
    assert_eq!(ex.head.value, ex.value("logits").unwrap());
    assert_eq!(ex.default_cam_layer().unwrap(), ex.value("relu").unwrap());
    // A0 = relu(x) = [1, 2, 0, .5], A1 = relu(-x) = [0, 0, 3, 0].
    let x = x_tiny();
    let c1 = ex
        .grad_cam(&x, Target::Class(1), None, GradCamVariant::GradCam)
        .unwrap();
    close(&c1.weights, &[-0.25, 0.125], 1e-6);
    close(c1.raw.data(), &[0.0, 0.0, 0.375, 0.0], 1e-6);
    let c0 = ex
        .grad_cam(&x, Target::Class(0), None, GradCamVariant::GradCam)
        .unwrap();
    close(&c0.weights, &[0.25, 0.5], 1e-6);
    close(c0.raw.data(), &[0.25, 0.5, 1.5, 0.125], 1e-6);
    // Same resolution: the map is just min-max scaled.
    close(c0.map.data(), &[1.0 / 11.0, 3.0 / 11.0, 1.0, 0.0], 1e-6);
    // Grad-CAM++: g constant per channel, alpha = 1 / (2 + s g), w = sum alpha g.
    let pp = ex
        .grad_cam(&x, Target::Class(0), None, GradCamVariant::GradCamPlusPlus)
        .unwrap();
    close(&pp.weights, &[1.0 / 2.875, 2.0 / 3.5], 1e-5);
    // Top class: logits = [A0m + 2 A1m, ...] = [0.875 + 1.5, -0.875 + 0.375 + 0.1, 0.2].
    assert_eq!(ex.resolve(&x, Target::Top).unwrap().class, 0);
    assert!(
        ex.grad_cam(&x, Target::Class(3), None, GradCamVariant::GradCam)
            .is_err()
    );
}

#[test]
fn saliency_and_guided_backprop_by_hand() {
    let g = tiny();
    let ex = Explainer::new(&g).unwrap();
    let x = x_tiny();
    // dy1/dx = 1 * dA0 * [x>0] - 1 * dA1 * [x<0] with dA = [-0.25, 0.125].
    let s = ex.saliency(&x, Target::Class(1)).unwrap();
    close(s.raw.data(), &[-0.25, -0.25, -0.125, -0.25], 1e-6);
    close(s.map.data(), &[1.0, 1.0, 0.5, 1.0], 1e-6);
    // Guided: the negative gradient at the ReLU into channel 0 is zeroed.
    let gb = ex.guided_backprop(&x, Target::Class(1)).unwrap();
    close(gb.raw.data(), &[0.0, 0.0, -0.125, 0.0], 1e-6);
    let gi = ex.gradient_x_input(&x, Target::Class(1)).unwrap();
    close(gi.raw.data(), &[-0.25, -0.5, 0.375, -0.125], 1e-6);
}

#[test]
fn occlusion_and_score_cam_by_definition() {
    let g = tiny();
    let ex = Explainer::new(&g).unwrap();
    let x = x_tiny();
    let t = Target::Class(0);
    let logit0 = |v: Vec<f32>| {
        ex.logits(&Tensor::new(vec![1, 1, 2, 2], v).unwrap())
            .unwrap()[0]
    };
    let base = logit0(x.data().to_vec());
    let opts = OcclusionOptions {
        patch: 1,
        stride: 1,
        fill: vec![0.0],
        batch: 3,
    };
    let occ = ex.occlusion(&x, t, &opts, Control::default()).unwrap();
    for i in 0..4 {
        let mut v = x.data().to_vec();
        v[i] = 0.0;
        assert!((occ.raw.data()[i] - (base - logit0(v))).abs() < 1e-6);
    }
    // Hiding pixel 2 (x = -3) removes 3/4 from mean(A1), worth 2 each: the largest drop.
    close(occ.raw.data(), &[0.25, 0.5, 1.5, 0.125], 1e-6);
    assert_eq!(occ.map.argmax(), (1, 0));
    // Score-CAM: weight_k = p0(x * M_k) - p0(0), M_k = channel k scaled to [0, 1].
    let sc = ex
        .score_cam(
            &x,
            t,
            None,
            &ScoreCamOptions {
                max_channels: None,
                batch: 1,
            },
            Control::default(),
        )
        .unwrap();
    let p0 = |v: Vec<f32>| {
        let l = ex
            .logits(&Tensor::new(vec![1, 1, 2, 2], v).unwrap())
            .unwrap();
        let m = l.iter().cloned().fold(f32::MIN, f32::max);
        let s: f32 = l.iter().map(|v| (v - m).exp()).sum();
        (l[0] - m).exp() / s
    };
    let zero = p0(vec![0.0; 4]);
    let masks = [[0.5, 1.0, 0.0, 0.25], [0.0, 0.0, 1.0, 0.0]];
    for (k, m) in masks.iter().enumerate() {
        let v: Vec<f32> = x.data().iter().zip(m).map(|(a, b)| a * b).collect();
        assert!(
            (sc.weights[k] - (p0(v) - zero)).abs() < 1e-6,
            "{:?}",
            sc.weights
        );
    }
}

fn smile() -> Graph {
    let cfg = convscope::models::presets::SmileCnnConfig::default();
    let (desc, weights) = convscope::models::presets::smile_cnn(&cfg, 3).unwrap();
    desc.build(weights).unwrap()
}

fn smile_input(seed: u64) -> Tensor {
    let t = convscope::engine::gradcheck::test_tensor(&[1, 3, 64, 64], seed);
    t.map(|v| (v + 1.0) * 0.5)
}

#[test]
fn saliency_matches_finite_differences_on_the_smile_cnn() {
    let g = smile();
    let ex = Explainer::new(&g).unwrap();
    assert_eq!(ex.head.logits, 1);
    let x = smile_input(1);
    let s1 = ex.saliency(&x, Target::Class(1)).unwrap();
    let s0 = ex.saliency(&x, Target::Class(0)).unwrap();
    // Class 0 of a single logit is its negation: same map, opposite gradient.
    close(s0.map.data(), s1.map.data(), 1e-6);
    assert!((s0.raw.data()[7] + s1.raw.data()[7]).abs() < 1e-7);
    // Central differences at the largest gradient entries.
    let mut idx: Vec<usize> = (0..x.numel()).collect();
    idx.sort_by(|&a, &b| s1.raw.data()[b].abs().total_cmp(&s1.raw.data()[a].abs()));
    let eps = 1e-2f32;
    for &i in &idx[..3] {
        let mut plus = x.clone();
        plus.data_mut()[i] += eps;
        let mut minus = x.clone();
        minus.data_mut()[i] -= eps;
        let fd = (ex.logits(&plus).unwrap()[0] - ex.logits(&minus).unwrap()[0]) / (2.0 * eps);
        let an = s1.raw.data()[i];
        println!("entry {i}: analytic {an:.6}, finite difference {fd:.6}");
        assert!(
            (fd - an).abs() <= 0.02 * an.abs() + 1e-5,
            "entry {i}: {an} vs {fd}"
        );
    }
}

#[test]
fn integrated_gradients_completeness_and_smoothgrad() {
    let g = smile();
    let ex = Explainer::new(&g).unwrap();
    let x = smile_input(2);
    let opts = IntegratedGradientsOptions {
        baseline: Baseline::Fill(vec![0.0]),
        steps: 64,
        batch: 16,
    };
    let steps = Mutex::new(Vec::new());
    let record = |p: Progress| steps.lock().unwrap().push(p);
    let ctl = Control {
        progress: Some(&record),
        cancel: None,
    };
    let ig = ex
        .integrated_gradients(&x, Target::Class(1), &opts, ctl)
        .unwrap();
    let total: f32 = ig.attribution.raw.data().iter().sum();
    let diff = ig.input_score - ig.baseline_score;
    println!("IG: sum of attributions {total:.5}, score difference {diff:.5}");
    assert!((total - diff).abs() <= 0.05 * diff.abs() + 1e-3);
    assert_eq!(
        steps.lock().unwrap().last(),
        Some(&Progress { done: 4, total: 4 })
    );

    let sg_opts = SmoothGradOptions {
        samples: 6,
        sigma_fraction: 0.1,
        seed: 9,
        batch: 4,
    };
    let a = ex
        .smooth_grad(&x, Target::Class(1), &sg_opts, Control::default())
        .unwrap();
    let b = ex
        .smooth_grad(&x, Target::Class(1), &sg_opts, Control::default())
        .unwrap();
    assert_eq!(a.raw, b.raw, "SmoothGrad is deterministic for a seed");
    let plain = ex.saliency(&x, Target::Class(1)).unwrap();
    assert_ne!(a.raw, plain.raw);
    assert!((a.map.min_max().1 - 1.0).abs() < 1e-6);

    let cancel = AtomicBool::new(true);
    let ctl = Control {
        progress: None,
        cancel: Some(&cancel),
    };
    assert!(matches!(
        ex.smooth_grad(&x, Target::Class(1), &sg_opts, ctl),
        Err(ExplainError::Cancelled)
    ));
}

#[test]
fn bad_inputs_are_errors() {
    let g = tiny();
    let ex = Explainer::new(&g).unwrap();
    let batch2 = Tensor::zeros(&[2, 1, 2, 2]);
    assert!(ex.saliency(&batch2, Target::Top).is_err());
    let flat = ex.value("flat").unwrap();
    let err = ex
        .grad_cam(&x_tiny(), Target::Top, Some(flat), GradCamVariant::GradCam)
        .unwrap_err();
    assert!(err.to_string().contains("4-D"), "{err}");
    assert!(ex.value("nope").is_err());
    let wrong = Map::zeros(3, 3);
    let curve = ex.deletion_curve(
        &x_tiny(),
        Target::Top,
        &wrong,
        &Default::default(),
        Control::default(),
    );
    assert!(curve.is_err());
}
