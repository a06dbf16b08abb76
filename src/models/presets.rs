//! Bundled model architectures, freshly initialised from a seed.
//!
//! The smile CNN mirrors `SmileCNN` in `tools/reference/refmodels.py` (the Keras book's smile
//! detector in NCHW): node names are the PyTorch module paths (`features.conv1`, ...) and
//! parameter names are exactly its `state_dict` keys (`features.bn1.running_mean`, ...), so
//! weights move between the two by name. PyTorch's integer `num_batches_tracked` counters are
//! not stored (convscope's batch norm does not use them).

use rand_chacha::ChaCha8Rng;

use super::ModelError;
use super::description::{ModelDescription, ParamDesc, Preprocess, Weights};
use crate::engine::graph::{InputDef, NodeDef};
use crate::engine::init;
use crate::engine::ops::{Activation, BatchNormSpec, Conv2dSpec, GemmSpec, Padding2d, Pool2dSpec};
use crate::engine::{Op, Tensor};

/// Names of the bundled models that [`bundled`] knows.
pub const BUNDLED: &[&str] = &["smile-cnn"];

/// The bundled model `name` initialised from `seed`, or `None` for an unknown name.
pub fn bundled(name: &str, seed: u64) -> Option<Result<(ModelDescription, Weights), ModelError>> {
    match name {
        "smile-cnn" => Some(smile_cnn(&SmileCnnConfig::default(), seed)),
        _ => None,
    }
}

/// Knobs of the smile CNN.
#[derive(Clone, Debug, PartialEq)]
pub struct SmileCnnConfig {
    /// PyTorch convention (running = (1 − m)·running + m·batch). Keras' 0.99 is PyTorch's 0.01,
    /// whose running statistics do not converge on small data sets and collapse evaluation
    /// accuracy; 0.1 (PyTorch's default) is the default here.
    pub bn_momentum: f32,
    /// Keras' default epsilon.
    pub bn_eps: f32,
    pub dropout: f32,
    /// Scores of the last layer: 1 (the book's single logit, smiling vs not) or one per class
    /// for data sets with more than two classes (MNIST, CIFAR-10, folders).
    pub outputs: usize,
}

impl Default for SmileCnnConfig {
    fn default() -> Self {
        Self {
            bn_momentum: 0.1,
            bn_eps: 1e-3,
            dropout: 0.25,
            outputs: 1,
        }
    }
}

/// Appends layers to a description and initialises their parameters, PyTorch style.
struct Builder {
    description: ModelDescription,
    weights: Weights,
    rng: ChaCha8Rng,
    /// The value the next layer reads.
    last: String,
}

impl Builder {
    fn new(description: ModelDescription, seed: u64) -> Self {
        let last = description
            .inputs
            .first()
            .map(|i| i.name.clone())
            .unwrap_or_default();
        Self {
            description,
            weights: Weights::new(),
            rng: init::rng(seed),
            last,
        }
    }

    fn param(&mut self, name: String, tensor: Tensor, trainable: bool) -> String {
        self.description.params.push(ParamDesc {
            name: name.clone(),
            shape: tensor.shape().to_vec(),
            trainable,
        });
        self.weights.insert(name.clone(), tensor);
        name
    }

    /// A node reading the previous value (and `params`), named `name`, becoming the new last.
    fn node(&mut self, name: &str, op: Op, params: Vec<String>) {
        let mut inputs = vec![self.last.clone()];
        inputs.extend(params);
        self.description.nodes.push(NodeDef {
            name: name.to_string(),
            op,
            inputs,
            output: name.to_string(),
        });
        self.last = name.to_string();
    }

    /// `nn.Conv2d(c_in, c_out, k, padding=pad)` with PyTorch's default init.
    fn conv(
        &mut self,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        pad: usize,
    ) -> Result<(), ModelError> {
        let w_shape = [c_out, c_in, k, k];
        let w = init::torch_default_weight(&w_shape, &mut self.rng)
            .map_err(|e| ModelError::weight(name, e.0))?;
        let b = init::torch_default_bias(&w_shape, &mut self.rng)
            .map_err(|e| ModelError::weight(name, e.0))?;
        let w = self.param(format!("{name}.weight"), w, true);
        let b = self.param(format!("{name}.bias"), b, true);
        let spec = Conv2dSpec::stride1(pad);
        self.node(name, Op::Conv2d(spec), vec![w, b]);
        Ok(())
    }

    /// `nn.BatchNorm2d(c)`: gamma 1, beta 0, running mean 0, running var 1.
    fn batch_norm(&mut self, name: &str, c: usize, spec: BatchNormSpec) {
        let gamma = self.param(format!("{name}.weight"), Tensor::full(&[c], 1.0), true);
        let beta = self.param(format!("{name}.bias"), Tensor::zeros(&[c]), true);
        let mean = self.param(format!("{name}.running_mean"), Tensor::zeros(&[c]), false);
        let var = self.param(
            format!("{name}.running_var"),
            Tensor::full(&[c], 1.0),
            false,
        );
        self.node(name, Op::BatchNorm2d(spec), vec![gamma, beta, mean, var]);
    }

    /// `nn.Linear(n_in, n_out)` as Gemm with weight `[out, in]`, PyTorch's default init.
    fn linear(&mut self, name: &str, n_in: usize, n_out: usize) -> Result<(), ModelError> {
        let w_shape = [n_out, n_in];
        let w = init::torch_default_weight(&w_shape, &mut self.rng)
            .map_err(|e| ModelError::weight(name, e.0))?;
        let b = init::torch_default_bias(&w_shape, &mut self.rng)
            .map_err(|e| ModelError::weight(name, e.0))?;
        let w = self.param(format!("{name}.weight"), w, true);
        let b = self.param(format!("{name}.bias"), b, true);
        self.node(name, Op::Gemm(GemmSpec::linear()), vec![w, b]);
        Ok(())
    }

    fn relu(&mut self, name: &str) {
        self.node(name, Op::Activation(Activation::Relu), vec![]);
    }

    /// `nn.MaxPool2d(2)`.
    fn max_pool2(&mut self, name: &str) {
        let spec = Pool2dSpec {
            kernel: [2, 2],
            stride: [2, 2],
            padding: Padding2d::default(),
            ceil_mode: false,
            count_include_pad: false,
        };
        self.node(name, Op::MaxPool2d(spec), vec![]);
    }

    fn finish(self) -> (ModelDescription, Weights) {
        (self.description, self.weights)
    }
}

/// The smile CNN: input `[1, 3, 64, 64]` (x/255) → single logit `[1, 1]` (output `logit`).
///
/// conv5×5(16) relu bn, conv5×5(16) relu bn, maxpool 2, dropout,
/// conv3×3(32) relu bn, conv3×3(32) relu bn, maxpool 2, dropout,
/// flatten (32·16·16 = 8192), linear 128, relu, linear 1.
pub fn smile_cnn(
    cfg: &SmileCnnConfig,
    seed: u64,
) -> Result<(ModelDescription, Weights), ModelError> {
    let description = ModelDescription {
        name: "smile-cnn".into(),
        inputs: vec![InputDef {
            name: "input".into(),
            shape: vec![1, 3, 64, 64],
        }],
        params: Vec::new(),
        nodes: Vec::new(),
        outputs: Vec::new(),
        preprocess: Preprocess::unit(),
        labels: if cfg.outputs == 1 {
            vec!["not smiling".into(), "smiling".into()]
        } else {
            (0..cfg.outputs).map(|i| format!("class {i}")).collect()
        },
    };
    let bn = BatchNormSpec {
        eps: cfg.bn_eps,
        momentum: cfg.bn_momentum,
    };
    let mut b = Builder::new(description, seed);
    // (1, 3, 64, 64) -> (1, 16, 64, 64)
    b.conv("features.conv1", 3, 16, 5, 2)?;
    b.relu("features.relu1");
    b.batch_norm("features.bn1", 16, bn.clone());
    b.conv("features.conv2", 16, 16, 5, 2)?;
    b.relu("features.relu2");
    b.batch_norm("features.bn2", 16, bn.clone());
    // -> (1, 16, 32, 32)
    b.max_pool2("features.pool1");
    b.node("features.drop1", Op::Dropout { p: cfg.dropout }, vec![]);
    // -> (1, 32, 32, 32)
    b.conv("features.conv3", 16, 32, 3, 1)?;
    b.relu("features.relu3");
    b.batch_norm("features.bn3", 32, bn.clone());
    b.conv("features.conv4", 32, 32, 3, 1)?;
    b.relu("features.relu4");
    b.batch_norm("features.bn4", 32, bn);
    // -> (1, 32, 16, 16)
    b.max_pool2("features.pool2");
    b.node("features.drop2", Op::Dropout { p: cfg.dropout }, vec![]);
    // -> (1, 8192)
    b.node("classifier.flatten", Op::Flatten { axis: 1 }, vec![]);
    b.linear("classifier.fc1", 32 * 16 * 16, 128)?;
    b.relu("classifier.relu5");
    // -> (1, outputs)
    if cfg.outputs == 0 {
        return Err(ModelError::Other(
            "the smile CNN needs at least one output".into(),
        ));
    }
    b.linear("classifier.fc2", 128, cfg.outputs)?;
    let (mut description, weights) = b.finish();
    if let Some(fc2) = description.nodes.last_mut() {
        fc2.output = "logit".into();
    }
    description.outputs = vec!["logit".into()];
    Ok((description, weights))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `sum(p.numel() for p in SmileCNN().parameters())` in PyTorch.
    const TORCH_PARAMETER_COUNT: usize = 1_070_545;

    #[test]
    fn smile_cnn_matches_the_pytorch_state_dict() {
        let (d, w) = smile_cnn(&SmileCnnConfig::default(), 0).unwrap();
        d.check_weights(&w).unwrap();
        assert_eq!(d.trainable_count(), TORCH_PARAMETER_COUNT);
        // state_dict keys of refmodels.SmileCNN, in order, without num_batches_tracked
        let mut want = Vec::new();
        for (conv, bn) in [(1, 1), (2, 2), (3, 3), (4, 4)] {
            want.push(format!("features.conv{conv}.weight"));
            want.push(format!("features.conv{conv}.bias"));
            for s in ["weight", "bias", "running_mean", "running_var"] {
                want.push(format!("features.bn{bn}.{s}"));
            }
        }
        for fc in ["fc1", "fc2"] {
            want.push(format!("classifier.{fc}.weight"));
            want.push(format!("classifier.{fc}.bias"));
        }
        let names: Vec<&str> = d.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, want);
        assert_eq!(w["classifier.fc1.weight"].shape(), &[128, 8192]);
        assert_eq!(w["features.conv1.weight"].shape(), &[16, 3, 5, 5]);
        assert!(
            d.params
                .iter()
                .filter(|p| !p.trainable)
                .all(|p| p.name.contains("running"))
        );
        assert_eq!(w["features.bn2.running_var"].data(), &[1.0; 16]);
        assert_eq!(d.outputs, ["logit"]);
        assert_eq!(d.nodes.len(), 20);
        assert_eq!(d.nodes[0].name, "features.conv1");
        assert_eq!(d.nodes[19].name, "classifier.fc2");
        assert_eq!(d.nodes[19].output, "logit");
    }

    #[test]
    fn init_is_seeded_and_bounded_like_pytorch() {
        let (_, a) = smile_cnn(&SmileCnnConfig::default(), 7).unwrap();
        let (_, b) = smile_cnn(&SmileCnnConfig::default(), 7).unwrap();
        let (_, c) = smile_cnn(&SmileCnnConfig::default(), 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a["features.conv1.weight"], c["features.conv1.weight"]);
        // 1/sqrt(fan_in) bounds: conv1 fan_in 75, fc1 fan_in 8192
        assert!(a["features.conv1.weight"].max_abs() <= 1.0 / 75f32.sqrt());
        assert!(a["features.conv1.bias"].max_abs() <= 1.0 / 75f32.sqrt());
        assert!(a["classifier.fc1.weight"].max_abs() <= 1.0 / 8192f32.sqrt());
        assert!(a["classifier.fc1.weight"].max_abs() > 0.9 / 8192f32.sqrt());
    }

    #[test]
    fn bn_settings_are_configurable() {
        let cfg = SmileCnnConfig {
            bn_momentum: 0.01,
            ..SmileCnnConfig::default()
        };
        let (d, _) = smile_cnn(&cfg, 0).unwrap();
        let bns: Vec<&BatchNormSpec> = d
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::BatchNorm2d(s) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(bns.len(), 4);
        assert!(bns.iter().all(|s| s.momentum == 0.01 && s.eps == 1e-3));
    }

    /// Loss, optimiser and graph together: a few Adam steps fit four fixed examples.
    #[test]
    fn smile_cnn_overfits_a_tiny_batch() {
        use crate::engine::gradcheck::test_tensor;
        use crate::engine::loss::bce_with_logits;
        use crate::engine::optim::{Optimizer, OptimizerConfig};
        use crate::engine::{BackwardRequest, ForwardOptions};

        let (d, w) = smile_cnn(&SmileCnnConfig::default(), 3).unwrap();
        let mut graph = d.build(w).unwrap();
        let x = test_tensor(&[4, 3, 64, 64], 11).map(|v| 0.5 + 0.5 * v);
        let targets = [1.0, 0.0, 0.0, 1.0];
        let out = graph.outputs()[0];
        let mut opt = Optimizer::new(OptimizerConfig::adam(1e-3)).unwrap();
        let mut losses = Vec::new();
        for step in 0..12 {
            let mut pass = graph
                .forward(std::slice::from_ref(&x), &ForwardOptions::train(step))
                .unwrap();
            let logits = graph.lookup(&pass, out).unwrap();
            let (loss, d_logits) = bce_with_logits(logits, &targets).unwrap();
            losses.push(loss);
            let request = BackwardRequest {
                seeds: vec![(out, d_logits)],
                param_grads: true,
                value_grads: vec![],
            };
            let grads = graph.backward(&pass, &request).unwrap();
            opt.step(graph.params_mut(), &grads.params).unwrap();
            graph.apply_running_stats(&mut pass);
        }
        let last = losses[losses.len() - 1];
        assert!(last < 0.5 * losses[0], "losses {losses:?}");
        // the running statistics moved away from their initial values
        let id = graph.param_id("features.bn1.running_mean").unwrap();
        assert!(graph.params()[id].tensor.max_abs() > 0.0);
    }

    #[test]
    fn registry_knows_only_bundled_names() {
        assert!(bundled("smile-cnn", 0).is_some());
        assert!(bundled("smile_cnn", 0).is_none());
        assert_eq!(BUNDLED, ["smile-cnn"]);
    }
}
