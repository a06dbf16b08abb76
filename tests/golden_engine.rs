//! Golden parity: whole small networks built with the engine against PyTorch.
//!
//! The fixtures under `tests/fixtures/engine/` come from `tools/make_engine_fixtures.py` (see
//! tools/README.md): weights with PyTorch's state-dict names, inputs, logits, a few
//! intermediate activations (named by module path), the input gradient of one class logit, and
//! parameter gradients of `sum(logits * R)` for a fixed random `R`. The networks are rebuilt
//! here node by node with the same names, so a mismatch points at a layer.
//!
//! Tolerances (in each case's meta.json) are relative: max |engine - reference| / max |reference|.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{assert_close, engine_case_dir, get, meta, npy, safetensors, subsample, tolerance};
use convscope::engine::graph::InputDef;
use convscope::engine::loss::bce_with_logits;
use convscope::engine::ops::{
    Activation, BatchNormSpec, BinaryOp, Conv2dSpec, GemmSpec, PadSpec, Padding2d, Pool2dSpec,
};
use convscope::engine::optim::{Optimizer, OptimizerConfig};
use convscope::engine::{BackwardRequest, ForwardOptions, Graph, GraphDef, Op, Param, Tensor};
use convscope::models::description::Weights;
use convscope::models::presets::{self, SmileCnnConfig};

// --------------------------------------------------------------------------- graph building

/// A `GraphDef` under construction whose parameters come from a PyTorch state dict.
struct Net<'a> {
    def: GraphDef,
    weights: &'a BTreeMap<String, Tensor>,
}

impl<'a> Net<'a> {
    fn new(weights: &'a BTreeMap<String, Tensor>, input_shape: &[usize]) -> Self {
        let mut def = GraphDef::default();
        def.inputs.push(InputDef {
            name: "input".into(),
            shape: input_shape.to_vec(),
        });
        Self { def, weights }
    }

    /// Registers the state-dict tensor `name`; running statistics are not trainable.
    fn param(&mut self, name: &str) -> String {
        let t = get(self.weights, name, "weights.safetensors").clone();
        let trainable = !name.ends_with(".running_mean") && !name.ends_with(".running_var");
        self.def.param(name, t, trainable)
    }

    fn node(&mut self, name: &str, op: Op, inputs: &[&str]) -> String {
        self.def.push(name, op, inputs)
    }

    fn conv(&mut self, name: &str, x: &str, spec: Conv2dSpec, bias: bool) -> String {
        let w = self.param(&format!("{name}.weight"));
        let mut inputs = vec![x.to_string(), w];
        if bias {
            inputs.push(self.param(&format!("{name}.bias")));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.node(name, Op::Conv2d(spec), &refs)
    }

    fn bn(&mut self, name: &str, x: &str, eps: f32, momentum: f32) -> String {
        let inputs = [
            x.to_string(),
            self.param(&format!("{name}.weight")),
            self.param(&format!("{name}.bias")),
            self.param(&format!("{name}.running_mean")),
            self.param(&format!("{name}.running_var")),
        ];
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.node(
            name,
            Op::BatchNorm2d(BatchNormSpec { eps, momentum }),
            &refs,
        )
    }

    fn act(&mut self, name: &str, x: &str, a: Activation) -> String {
        self.node(name, Op::Activation(a), &[x])
    }

    /// `nn.Linear`: x `[n, in]` @ weight `[out, in]`ᵀ + bias `[out]`.
    fn linear(&mut self, name: &str, x: &str) -> String {
        let w = self.param(&format!("{name}.weight"));
        let b = self.param(&format!("{name}.bias"));
        self.node(name, Op::Gemm(GemmSpec::linear()), &[x, &w, &b])
    }

    fn finish(mut self, outputs: &[&str]) -> GraphDef {
        self.def.outputs = outputs.iter().map(|s| s.to_string()).collect();
        self.def
    }
}

fn conv_spec(stride: usize, padding: Padding2d, dilation: usize, groups: usize) -> Conv2dSpec {
    Conv2dSpec {
        stride: [stride, stride],
        padding,
        dilation: [dilation, dilation],
        groups,
    }
}

/// Padding (top, left, bottom, right), PyTorch's `padding=(ph, pw)` being `pads(ph, pw, ph, pw)`.
fn pads(top: usize, left: usize, bottom: usize, right: usize) -> Padding2d {
    Padding2d {
        top,
        left,
        bottom,
        right,
    }
}

fn pool(
    kernel: usize,
    stride: usize,
    padding: usize,
    ceil_mode: bool,
    count_include_pad: bool,
) -> Pool2dSpec {
    Pool2dSpec {
        kernel: [kernel, kernel],
        stride: [stride, stride],
        padding: Padding2d::uniform(padding),
        ceil_mode,
        count_include_pad,
    }
}

/// The smile CNN as the app builds it (`models::presets::smile_cnn`), with the fixture's
/// weights: so these tests pin the preset's architecture and names to PyTorch's, not a copy.
fn smile_cnn(weights: &BTreeMap<String, Tensor>, dropout: f32, bn_momentum: f32) -> GraphDef {
    let cfg = SmileCnnConfig {
        bn_momentum,
        bn_eps: 1e-3,
        dropout,
        outputs: 1,
    };
    let (description, _fresh) = presets::smile_cnn(&cfg, 0).unwrap_or_else(|e| panic!("{e}"));
    let weights: Weights = weights
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    description
        .graph_def(weights)
        .unwrap_or_else(|e| panic!("fixture weights do not fit the smile CNN preset: {e}"))
}

/// The op zoo exactly as `Zoo` in the fixture script. Input `[2, 3, 23, 19]`; outputs
/// `fc` (logits `[n, 5]`) and `probs` (softmax of the logits).
fn zoo(weights: &BTreeMap<String, Tensor>, batch: usize) -> GraphDef {
    const EPS: f32 = 1e-5;
    const MOM: f32 = 0.1;
    let mut net = Net::new(weights, &[batch, 3, 23, 19]);
    // TF "SAME"-style asymmetric padding: nothing before, one row/column after.
    let x = net.node(
        "stem_pad",
        Op::Pad(PadSpec {
            pads: vec![(0, 0), (0, 0), (0, 1), (0, 1)],
            value: 0.0,
        }),
        &["input"],
    ); // (n, 3, 24, 20)
    let x = net.conv(
        "stem.conv",
        &x,
        conv_spec(2, Padding2d::default(), 1, 1),
        true,
    ); // (n, 8, 11, 9)
    let x = net.bn("stem.bn", &x, EPS, MOM);
    let x = net.act("stem.act", &x, Activation::Clip { min: 0.0, max: 6.0 });
    let d = net.conv(
        "dilated",
        &x,
        conv_spec(1, Padding2d::uniform(2), 2, 1),
        true,
    );
    let d = net.act("dilated_act", &d, Activation::LeakyRelu { alpha: 0.1 }); // (n, 8, 11, 9)
    let g = net.conv(
        "grouped.conv",
        &d,
        conv_spec(1, pads(1, 2, 1, 2), 1, 2),
        true,
    ); // (n, 12, 11, 9), kernel (3, 5)
    let g = net.bn("grouped.bn", &g, EPS, MOM);
    let g = net.act("grouped.act", &g, Activation::Silu);
    let g = net.conv(
        "depthwise",
        &g,
        conv_spec(1, Padding2d::uniform(1), 1, 12),
        true,
    );
    let g = net.act("depthwise_act", &g, Activation::HardSwish); // (n, 12, 11, 9)
    // squeeze-excite: (n, 12, 1, 1) gate broadcast over (n, 12, 11, 9)
    let s = net.node("se.pool", Op::GlobalAvgPool, &[&g]);
    let s = net.conv(
        "se.reduce",
        &s,
        conv_spec(1, Padding2d::default(), 1, 1),
        true,
    ); // (n, 4, 1, 1)
    let s = net.act("se.relu", &s, Activation::Relu);
    let s = net.conv(
        "se.expand",
        &s,
        conv_spec(1, Padding2d::default(), 1, 1),
        true,
    ); // (n, 12, 1, 1)
    let s = net.act("se.gate", &s, Activation::Sigmoid);
    let g = net.node("se", Op::Binary(BinaryOp::Mul), &[&g, &s]);
    let p = net.conv(
        "project",
        &g,
        conv_spec(1, Padding2d::default(), 1, 1),
        false,
    ); // (n, 8, 11, 9)
    let p = net.bn("project_bn", &p, EPS, MOM);
    let r = net.node("residual", Op::Binary(BinaryOp::Add), &[&p, &d]);
    let a = net.node("maxpool", Op::MaxPool2d(pool(3, 2, 1, true, false)), &[&r]); // (n, 8, 6, 5)
    let b = net.node("avgpool", Op::AvgPool2d(pool(3, 2, 1, false, false)), &[&r]); // (n, 8, 6, 5)
    let t = net.act("tanh", &r, Activation::Tanh);
    let c = net.node(
        "avgpool_pad",
        Op::AvgPool2d(pool(3, 2, 1, false, true)),
        &[&t],
    ); // (n, 8, 6, 5)
    let cat = net.node("concat", Op::Concat { axis: 1 }, &[&a, &b, &c]); // (n, 24, 6, 5)
    let m = net.conv(
        "mix.conv",
        &cat,
        conv_spec(1, Padding2d::uniform(1), 1, 1),
        true,
    ); // (n, 16, 6, 5)
    let m = net.bn("mix.bn", &m, EPS, MOM);
    let m = net.act(
        "mix.act",
        &m,
        Activation::HardSigmoid {
            alpha: 1.0 / 6.0,
            beta: 0.5,
        },
    );
    let m = net.node("gap", Op::GlobalAvgPool, &[&m]); // (n, 16, 1, 1)
    let m = net.node("flatten", Op::Flatten { axis: 1 }, &[&m]); // (n, 16)
    let logits = net.linear("fc", &m); // (n, 5)
    net.node("probs", Op::Softmax { axis: 1 }, &[&logits]);
    net.finish(&["fc", "probs"])
}

// --------------------------------------------------------------------------- checks

fn build(def: GraphDef) -> Graph {
    Graph::from_def(def).unwrap_or_else(|e| panic!("building the graph: {e}"))
}

fn id(g: &Graph, name: &str) -> usize {
    g.value_id(name)
        .unwrap_or_else(|| panic!("the graph has no value '{name}'"))
}

/// `[n, k]` zeros with 1 at column `target` of every row: d(sum_n logits[n, target]) / d logits.
fn one_hot_rows(shape: &[usize], target: usize) -> Tensor {
    let mut t = Tensor::zeros(shape);
    let k = shape[1];
    for row in t.data_mut().chunks_exact_mut(k) {
        row[target] = 1.0;
    }
    t
}

/// Forward, activations, input gradient and parameter gradients of an eval-mode case.
/// `outputs` pairs graph values with reference files: the first is the logits, any second one
/// is checked and also seeded with `grad_projection_probs.npy`.
fn check_eval_case(dir: &Path, graph: &Graph, outputs: &[(&str, &str)]) {
    let meta = meta(dir);
    let x = npy(dir, "input.npy");
    let pass = graph
        .forward(&[x], &ForwardOptions::eval_for_backward())
        .unwrap_or_else(|e| panic!("forward: {e}"));
    let value = |name: &str| {
        graph
            .lookup(&pass, id(graph, name))
            .unwrap_or_else(|| panic!("the pass did not keep '{name}'"))
            .clone()
    };

    for (i, (name, file)) in outputs.iter().enumerate() {
        let key = if i == 0 { "logits" } else { "probs" };
        assert_close(name, &value(name), &npy(dir, file), tolerance(&meta, key));
    }
    let acts = meta["activations"]
        .as_object()
        .unwrap_or_else(|| panic!("meta.json of {} lists no activations", dir.display()));
    assert!(!acts.is_empty(), "meta.json lists no activations");
    for name in acts.keys() {
        let want = npy(dir, &format!("act_{name}.npy"));
        assert_close(
            &format!("activation {name}"),
            &value(name),
            &want,
            tolerance(&meta, "activations"),
        );
    }

    // Input gradient of sum_n logits[n, target].
    let logits_id = id(graph, outputs[0].0);
    let target = meta["target_class"]
        .as_u64()
        .unwrap_or_else(|| panic!("meta.json has no target_class")) as usize;
    let logits_shape = value(outputs[0].0).shape().to_vec();
    let input_id = id(graph, "input");
    let grads = graph
        .backward(
            &pass,
            &BackwardRequest {
                seeds: vec![(logits_id, one_hot_rows(&logits_shape, target))],
                param_grads: false,
                value_grads: vec![input_id],
            },
        )
        .unwrap_or_else(|e| panic!("backward (input gradient): {e}"));
    let gx = grads
        .values
        .get(&input_id)
        .unwrap_or_else(|| panic!("no input gradient was returned"));
    assert_close(
        "input gradient",
        gx,
        &npy(dir, "input_grad.npy"),
        tolerance(&meta, "input_grad"),
    );

    // Parameter gradients of sum(logits * R) [+ sum(probs * Rp)].
    let mut seeds = vec![(logits_id, npy(dir, "grad_projection.npy"))];
    if let Some((probs, _)) = outputs.get(1) {
        seeds.push((id(graph, probs), npy(dir, "grad_projection_probs.npy")));
    }
    let grads = graph
        .backward(
            &pass,
            &BackwardRequest {
                seeds,
                param_grads: true,
                value_grads: vec![],
            },
        )
        .unwrap_or_else(|e| panic!("backward (parameter gradients): {e}"));
    let want = safetensors(dir, "param_grads.safetensors");
    check_param_grads(graph, &grads.params, &want, &meta, "param_grads");
}

/// Every trainable parameter has a reference gradient and matches it (after the case's
/// subsampling of very large weights).
fn check_param_grads(
    graph: &Graph,
    got: &[Option<Tensor>],
    want: &BTreeMap<String, Tensor>,
    meta: &serde_json::Value,
    tol_key: &str,
) {
    let trainable: Vec<&str> = graph
        .params()
        .iter()
        .filter(|p| p.trainable)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        trainable.len(),
        want.len(),
        "trainable parameters {trainable:?} vs reference gradients {:?}",
        want.keys().collect::<Vec<_>>()
    );
    for name in trainable {
        let pid = graph
            .param_id(name)
            .unwrap_or_else(|| panic!("no parameter '{name}'"));
        let g = got
            .get(pid)
            .and_then(|g| g.as_ref())
            .unwrap_or_else(|| panic!("no gradient was returned for '{name}'"));
        let reference = get(want, name, "reference gradients");
        assert_close(
            &format!("grad {name}"),
            &subsample(meta, name, g),
            reference,
            tolerance(meta, tol_key),
        );
    }
}

// --------------------------------------------------------------------------- tests

#[test]
fn smile_cnn_eval_matches_pytorch() {
    let dir = engine_case_dir("smile_cnn");
    let weights = safetensors(&dir, "weights.safetensors");
    let m = meta(&dir);
    assert_eq!(
        m["input_shape"][0].as_u64(),
        Some(2),
        "smile_cnn fixture batch"
    );
    let graph = build(smile_cnn(&weights, 0.25, 0.01));
    check_eval_case(&dir, &graph, &[("logit", "logits.npy")]);
}

#[test]
fn zoo_eval_matches_pytorch() {
    let dir = engine_case_dir("zoo");
    let weights = safetensors(&dir, "weights.safetensors");
    let graph = build(zoo(&weights, 2));
    check_eval_case(
        &dir,
        &graph,
        &[("fc", "logits.npy"), ("probs", "probs.npy")],
    );
}

/// Train mode, two full steps against PyTorch: BCE-with-logits (loss and fused gradient),
/// batch-statistics batch norm (forward and backward), running-stat updates with momentum 0.1,
/// parameter gradients, and Adam — first fed with PyTorch's own gradients (tight tolerance),
/// then end to end (engine gradients into engine Adam; compared as a whole by relative L2
/// norm, because a gradient element within float noise of Adam's eps can swing its own update;
/// see `tolerances._note` in meta.json).
#[test]
fn smile_cnn_train_step_matches_pytorch() {
    let dir = engine_case_dir("smile_cnn_train");
    let m = meta(&dir);
    let weights = safetensors(&engine_case_dir("smile_cnn"), "weights.safetensors");
    let x = npy(&dir, "input.npy"); // (4, 3, 64, 64)
    let targets: Vec<f32> = npy(&dir, "targets.npy").data().to_vec();
    let losses = npy(&dir, "loss.npy"); // [loss at step 1, loss at step 2]
    let adam = &m["adam"];
    let lr = adam["lr"].as_f64().unwrap_or(1e-3) as f32;
    let adam_config = || OptimizerConfig::Adam {
        lr,
        betas: (
            adam["beta1"].as_f64().unwrap_or(0.9) as f32,
            adam["beta2"].as_f64().unwrap_or(0.999) as f32,
        ),
        eps: adam["eps"].as_f64().unwrap_or(1e-8) as f32,
        weight_decay: 0.0,
    };
    let mut graph = build(smile_cnn(&weights, 0.0, 0.1));
    let logits_id = id(&graph, "logit");
    let mut optimizer = Optimizer::new(adam_config()).unwrap_or_else(|e| panic!("{e}"));

    for step in 1..=2 {
        let mut pass = graph
            .forward(std::slice::from_ref(&x), &ForwardOptions::train(0))
            .unwrap_or_else(|e| panic!("train forward {step}: {e}"));
        let logits = graph
            .lookup(&pass, logits_id)
            .unwrap_or_else(|| panic!("no logits"))
            .clone();
        let (loss, d_logits) =
            bce_with_logits(&logits, &targets).unwrap_or_else(|e| panic!("loss: {e}"));
        let want_loss = Tensor::scalar(losses.data()[step - 1]);
        let loss_tol = if step == 1 { "loss" } else { "loss_step2" };
        assert_close(
            &format!("loss at step {step}"),
            &Tensor::scalar(loss),
            &want_loss,
            tolerance(&m, loss_tol),
        );
        if step == 1 {
            assert_close(
                "train logits",
                &logits,
                &npy(&dir, "logits_step1.npy"),
                tolerance(&m, "logits"),
            );
            assert_close(
                "d loss / d logits",
                &d_logits,
                &npy(&dir, "dlogits_step1.npy"),
                tolerance(&m, "loss"),
            );
        }
        let grads = graph
            .backward(
                &pass,
                &BackwardRequest {
                    seeds: vec![(logits_id, d_logits)],
                    param_grads: true,
                    value_grads: vec![],
                },
            )
            .unwrap_or_else(|e| panic!("train backward {step}: {e}"));
        if step == 1 {
            let want = safetensors(&dir, "param_grads_step1.safetensors");
            check_param_grads(&graph, &grads.params, &want, &m, "train_param_grads");
        }
        graph.apply_running_stats(&mut pass);
        let stats = safetensors(&dir, &format!("running_stats_step{step}.safetensors"));
        assert_eq!(stats.len(), 8, "four batch norms, mean and variance each");
        for (name, reference) in &stats {
            let pid = graph
                .param_id(name)
                .unwrap_or_else(|| panic!("no parameter '{name}'"));
            assert_close(
                &format!("running stat {name} after step {step}"),
                &graph.params()[pid].tensor,
                reference,
                tolerance(&m, "running_stats"),
            );
        }
        optimizer
            .step(graph.params_mut(), &grads.params)
            .unwrap_or_else(|e| panic!("adam step {step}: {e}"));
    }

    // End to end: the whole update (params after two steps minus initial params).
    let after = safetensors(&dir, "params_after_adam2.safetensors");
    let (mut diff2, mut ref2) = (0.0f64, 0.0f64);
    for (name, want_after) in &after {
        let pid = graph
            .param_id(name)
            .unwrap_or_else(|| panic!("no parameter '{name}'"));
        let got = subsample(&m, name, &graph.params()[pid].tensor);
        let init = subsample(&m, name, get(&weights, name, "weights.safetensors"));
        for ((g, w), i) in got.data().iter().zip(want_after.data()).zip(init.data()) {
            let (du_got, du_ref) = ((g - i) as f64, (w - i) as f64);
            diff2 += (du_got - du_ref).powi(2);
            ref2 += du_ref.powi(2);
        }
    }
    let rel_l2 = (diff2 / ref2.max(1e-30)).sqrt();
    let tol = tolerance(&m, "adam_update_rel_l2") as f64;
    eprintln!("end-to-end Adam update: relative L2 error {rel_l2:.2e} (tolerance {tol:.0e})");
    assert!(
        rel_l2 <= tol,
        "end-to-end Adam update off by {rel_l2:.3e} (relative L2)"
    );
}

/// Adam alone, fed PyTorch's gradients of both steps: the update formula to 1e-5.
#[test]
fn adam_on_reference_gradients_matches_pytorch() {
    let dir = engine_case_dir("smile_cnn_train");
    let m = meta(&dir);
    let weights = safetensors(&engine_case_dir("smile_cnn"), "weights.safetensors");
    let grads1 = safetensors(&dir, "param_grads_step1.safetensors");
    let grads2 = safetensors(&dir, "param_grads_step2.safetensors");
    let after = safetensors(&dir, "params_after_adam2.safetensors");
    let adam = &m["adam"];
    let mut params: Vec<Param> = after
        .keys()
        .map(|name| Param {
            name: name.clone(),
            tensor: subsample(&m, name, get(&weights, name, "weights.safetensors")),
            trainable: true,
        })
        .collect();
    let mut optimizer = Optimizer::new(OptimizerConfig::Adam {
        lr: adam["lr"].as_f64().unwrap_or(1e-3) as f32,
        betas: (
            adam["beta1"].as_f64().unwrap_or(0.9) as f32,
            adam["beta2"].as_f64().unwrap_or(0.999) as f32,
        ),
        eps: adam["eps"].as_f64().unwrap_or(1e-8) as f32,
        weight_decay: 0.0,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    for grads in [&grads1, &grads2] {
        let g: Vec<Option<Tensor>> = params
            .iter()
            .map(|p| Some(get(grads, &p.name, "param_grads").clone()))
            .collect();
        optimizer
            .step(&mut params, &g)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for p in &params {
        assert_close(
            &format!("{} after two Adam steps", p.name),
            &p.tensor,
            get(&after, &p.name, "params_after_adam2.safetensors"),
            tolerance(&m, "adam_params"),
        );
    }
}
