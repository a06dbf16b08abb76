//! Optimisers: SGD (momentum, Nesterov), Adam, AdamW, weight decay.
//!
//! The update rules are PyTorch's (`torch.optim.SGD`, `Adam`, `AdamW`, single-tensor
//! implementation, `maximize=False`, `amsgrad=False`), step for step, so that a training run can
//! be compared with a PyTorch one. State (momentum buffers, Adam moments and step counts) is kept
//! per parameter id, i.e. the parameter's index in the slice passed to [`Optimizer::step`];
//! always pass the same graph's parameters.

use crate::engine::simd;
use serde::{Deserialize, Serialize};

use super::error::OpError;
use super::graph::Param;
use super::tensor::Tensor;

/// Which rule and its hyper-parameters. `weight_decay` is L2 (added to the gradient) for SGD
/// and Adam, and decoupled (`p ← p·(1 − lr·wd)`) for AdamW.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OptimizerConfig {
    Sgd {
        lr: f32,
        momentum: f32,
        dampening: f32,
        nesterov: bool,
        weight_decay: f32,
    },
    Adam {
        lr: f32,
        betas: (f32, f32),
        eps: f32,
        weight_decay: f32,
    },
    AdamW {
        lr: f32,
        betas: (f32, f32),
        eps: f32,
        weight_decay: f32,
    },
}

impl OptimizerConfig {
    /// Plain SGD (PyTorch defaults: no momentum, no decay).
    pub fn sgd(lr: f32) -> Self {
        Self::Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    /// Adam with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, no decay.
    pub fn adam(lr: f32) -> Self {
        Self::Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    /// AdamW with PyTorch's defaults for betas and eps.
    /// SGD with classical momentum, no dampening, no weight decay.
    pub fn sgd_momentum(lr: f32, momentum: f32) -> Self {
        Self::Sgd {
            lr,
            momentum,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    pub fn adamw(lr: f32, weight_decay: f32) -> Self {
        Self::AdamW {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay,
        }
    }

    pub fn lr(&self) -> f32 {
        match self {
            Self::Sgd { lr, .. } | Self::Adam { lr, .. } | Self::AdamW { lr, .. } => *lr,
        }
    }

    fn lr_mut(&mut self) -> &mut f32 {
        match self {
            Self::Sgd { lr, .. } | Self::Adam { lr, .. } | Self::AdamW { lr, .. } => lr,
        }
    }

    /// The checks PyTorch's constructors make, as errors.
    pub fn validate(&self) -> Result<(), OpError> {
        check_lr(self.lr())?;
        match *self {
            Self::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
                ..
            } => {
                check_non_negative("momentum", momentum)?;
                check_non_negative("weight decay", weight_decay)?;
                if nesterov && (momentum <= 0.0 || dampening != 0.0) {
                    crate::op_bail!("Nesterov momentum needs momentum > 0 and dampening 0");
                }
                Ok(())
            }
            Self::Adam {
                betas,
                eps,
                weight_decay,
                ..
            }
            | Self::AdamW {
                betas,
                eps,
                weight_decay,
                ..
            } => {
                for (i, b) in [betas.0, betas.1].into_iter().enumerate() {
                    if !(0.0..1.0).contains(&b) {
                        crate::op_bail!("Adam beta{} must lie in [0, 1), got {b}", i + 1);
                    }
                }
                check_non_negative("epsilon", eps)?;
                check_non_negative("weight decay", weight_decay)
            }
        }
    }
}

fn check_lr(lr: f32) -> Result<(), OpError> {
    check_non_negative("learning rate", lr)
}

fn check_non_negative(what: &str, v: f32) -> Result<(), OpError> {
    if !(v.is_finite() && v >= 0.0) {
        crate::op_bail!("the {what} must be a finite number >= 0, got {v}");
    }
    Ok(())
}

/// Per-parameter state, created on the parameter's first update.
#[derive(Clone, Debug, Default)]
enum ParamState {
    #[default]
    Empty,
    /// SGD momentum buffer (shaped like the parameter, flat).
    Momentum(Vec<f32>),
    /// Adam: number of updates so far, first and second moment (flat).
    Adam { step: u64, m: Vec<f32>, v: Vec<f32> },
}

#[derive(Clone, Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    /// Indexed by parameter id.
    state: Vec<ParamState>,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig) -> Result<Self, OpError> {
        config.validate()?;
        Ok(Self {
            config,
            state: Vec::new(),
        })
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    pub fn lr(&self) -> f32 {
        self.config.lr()
    }

    /// Changes the learning rate (for schedules); state is kept.
    pub fn set_lr(&mut self, lr: f32) -> Result<(), OpError> {
        check_lr(lr)?;
        *self.config.lr_mut() = lr;
        Ok(())
    }

    /// Forgets all momentum and moment state.
    pub fn reset(&mut self) {
        self.state.clear();
    }

    /// Updates every trainable parameter that has a gradient. `grads[i]` belongs to
    /// `params[i]` (as `Gradients::params` from `Graph::backward`).
    pub fn step(&mut self, params: &mut [Param], grads: &[Option<Tensor>]) -> Result<(), OpError> {
        if params.len() != grads.len() {
            crate::op_bail!(
                "the optimiser got {} gradients for {} parameters",
                grads.len(),
                params.len()
            );
        }
        // Check everything first so that a bad gradient leaves no parameter half-updated.
        for (p, g) in params.iter().zip(grads) {
            if let Some(g) = g
                && g.shape() != p.tensor.shape()
            {
                crate::op_bail!(
                    "gradient of '{}' has shape {:?}, the parameter has shape {:?}",
                    p.name,
                    g.shape(),
                    p.tensor.shape()
                );
            }
        }
        if self.state.len() < params.len() {
            self.state.resize(params.len(), ParamState::Empty);
        }
        for ((p, g), state) in params.iter_mut().zip(grads).zip(&mut self.state) {
            let Some(g) = g else { continue };
            if !p.trainable {
                continue;
            }
            let numel = p.tensor.numel();
            if state_len(state).is_some_and(|n| n != numel) {
                crate::op_bail!(
                    "parameter '{}' changed size since the optimiser last saw it",
                    p.name
                );
            }
            update(&self.config, p.tensor.data_mut(), g.data(), state);
        }
        Ok(())
    }
}

fn state_len(state: &ParamState) -> Option<usize> {
    match state {
        ParamState::Empty => None,
        ParamState::Momentum(b) => Some(b.len()),
        ParamState::Adam { m, .. } => Some(m.len()),
    }
}

/// One parameter's update; `p`, `g` are flat and of equal length.
fn update(config: &OptimizerConfig, p: &mut [f32], g: &[f32], state: &mut ParamState) {
    match *config {
        OptimizerConfig::Sgd {
            lr,
            momentum,
            dampening,
            nesterov,
            weight_decay,
        } => sgd_update(p, g, state, lr, momentum, dampening, nesterov, weight_decay),
        OptimizerConfig::Adam {
            lr,
            betas,
            eps,
            weight_decay,
        } => adam_update(p, g, state, lr, betas, eps, weight_decay, false),
        OptimizerConfig::AdamW {
            lr,
            betas,
            eps,
            weight_decay,
        } => adam_update(p, g, state, lr, betas, eps, weight_decay, true),
    }
}

/// torch.optim.SGD: g ← g + wd·p; buf ← g (first step) or μ·buf + (1−τ)·g;
/// g ← g + μ·buf (Nesterov) or buf; p ← p − lr·g.
fn sgd_update(
    p: &mut [f32],
    g: &[f32],
    state: &mut ParamState,
    lr: f32,
    momentum: f32,
    dampening: f32,
    nesterov: bool,
    weight_decay: f32,
) {
    if momentum == 0.0 {
        for (p, &g) in p.iter_mut().zip(g) {
            *p -= lr * (g + weight_decay * *p);
        }
        return;
    }
    let first = !matches!(state, ParamState::Momentum(_));
    if first {
        *state = ParamState::Momentum(vec![0.0; p.len()]);
    }
    let ParamState::Momentum(buf) = state else {
        return;
    };
    for ((p, &g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
        let g = g + weight_decay * *p;
        *b = if first {
            g
        } else {
            momentum * *b + (1.0 - dampening) * g
        };
        let d = if nesterov { g + momentum * *b } else { *b };
        *p -= lr * d;
    }
}

/// torch.optim.Adam / AdamW: t ← t+1; (AdamW) p ← p·(1 − lr·wd), (Adam) g ← g + wd·p;
/// m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
/// p ← p − lr/(1−β1ᵗ) · m / (√v / √(1−β2ᵗ) + ε).
fn adam_update(
    p: &mut [f32],
    g: &[f32],
    state: &mut ParamState,
    lr: f32,
    (beta1, beta2): (f32, f32),
    eps: f32,
    weight_decay: f32,
    decoupled: bool,
) {
    if !matches!(state, ParamState::Adam { .. }) {
        *state = ParamState::Adam {
            step: 0,
            m: vec![0.0; p.len()],
            v: vec![0.0; p.len()],
        };
    }
    let ParamState::Adam { step, m, v } = state else {
        return;
    };
    *step += 1;
    // PyTorch computes the bias corrections as Python floats (f64).
    let t = *step as f64;
    let bias_c1 = 1.0 - (beta1 as f64).powf(t);
    let bias_c2_sqrt = (1.0 - (beta2 as f64).powf(t)).sqrt() as f32;
    let step_size = (lr as f64 / bias_c1) as f32;
    let k = AdamStep {
        beta1,
        beta2,
        eps,
        weight_decay,
        decay: 1.0 - lr * weight_decay,
        decoupled,
        bias_c2_sqrt,
        step_size,
    };
    // Element-wise, so any split gives the same bits; large tensors (the smile CNN's 1M-weight
    // linear layer) are split across threads.
    if p.len() >= 2 * PAR_CHUNK {
        use rayon::prelude::*;
        p.par_chunks_mut(PAR_CHUNK)
            .zip(g.par_chunks(PAR_CHUNK))
            .zip(m.par_chunks_mut(PAR_CHUNK).zip(v.par_chunks_mut(PAR_CHUNK)))
            .for_each(|((p, g), (m, v))| adam_chunk(&k, p, g, m, v));
    } else {
        adam_chunk(&k, p, g, m, v);
    }
}

/// Elements per parallel task of an optimiser update.
const PAR_CHUNK: usize = 1 << 15;

/// The per-step constants of one Adam update.
struct AdamStep {
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    /// `1 − lr·wd` (AdamW's decoupled decay).
    decay: f32,
    decoupled: bool,
    bias_c2_sqrt: f32,
    step_size: f32,
}

simd::kernel! {
    /// The Adam rule over equal-length slices. Plain loops without reductions, which LLVM
    /// vectorises (IEEE sqrt and division give the same bits as scalar code); compiled once
    /// per instruction-set level (`simd::kernel!`).
    fn adam_chunk(k: &AdamStep, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = if k.decoupled {
                *p *= k.decay;
                g
            } else {
                g + k.weight_decay * *p
            };
            *m += (1.0 - k.beta1) * (g - *m);
            *v = k.beta2 * *v + (1.0 - k.beta2) * g * g;
            let denom = v.sqrt() / k.bias_c2_sqrt + k.eps;
            *p -= k.step_size * *m / denom;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
// The reference numbers are PyTorch's printed f32 values, kept as printed.
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;

    /// The gradients fed at steps 1..3 in the PyTorch reference runs below.
    const GRADS: [[f32; 4]; 3] = [
        [0.1, -0.2, 0.3, 0.0],
        [-0.5, 0.4, 0.05, 1.0],
        [0.2, 0.2, -0.1, -2.0],
    ];

    /// Runs three steps from p = [0.5, -1, 2, 0] and returns p.
    fn run(config: OptimizerConfig) -> Vec<f32> {
        let mut params = vec![Param {
            name: "p".into(),
            tensor: Tensor::new(vec![4], vec![0.5, -1.0, 2.0, 0.0]).unwrap(),
            trainable: true,
        }];
        let mut opt = Optimizer::new(config).unwrap();
        for g in GRADS {
            let g = Tensor::new(vec![4], g.to_vec()).unwrap();
            opt.step(&mut params, &[Some(g)]).unwrap();
        }
        params[0].tensor.data().to_vec()
    }

    fn assert_close(got: &[f32], want: &[f32]) {
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1e-2),
                "got {got:?}\nwant {want:?}"
            );
        }
    }

    // Reference numbers from torch 2.15 (CPU), this script:
    //   import torch
    //   def run(make):
    //       p = torch.tensor([0.5, -1.0, 2.0, 0.0], requires_grad=True); opt = make([p])
    //       for g in [[0.1,-0.2,0.3,0.0], [-0.5,0.4,0.05,1.0], [0.2,0.2,-0.1,-2.0]]:
    //           p.grad = torch.tensor(g); opt.step()
    //       print(p.tolist())
    //   run(lambda ps: torch.optim.SGD(ps, lr=0.1))
    //   run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9))
    //   run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01))
    //   run(lambda ps: torch.optim.Adam(ps, lr=0.01))
    //   run(lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1))
    //   run(lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1))

    #[test]
    fn sgd_matches_pytorch() {
        let want = [0.520_000_04, -1.039_999_96, 1.975_000_02, 0.100_000_001];
        assert_close(&run(OptimizerConfig::sgd(0.1)), &want);
    }

    #[test]
    fn sgd_momentum_matches_pytorch() {
        let mut c = OptimizerConfig::sgd(0.1);
        if let OptimizerConfig::Sgd { momentum, .. } = &mut c {
            *momentum = 0.9;
        }
        let want = [0.547_900_02, -1.041_800_02, 1.919_200_06, 0.010_000_002_6];
        assert_close(&run(c), &want);
    }

    #[test]
    fn sgd_nesterov_with_weight_decay_matches_pytorch() {
        let c = OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 0.01,
        };
        let want = [0.559_014_86, -1.069_646_36, 1.886_536_60, 0.109_361_000];
        assert_close(&run(c), &want);
    }

    /// A tensor large enough for the parallel, vectorised path, tiled with the 4-element
    /// reference run's values, ends bit-identical to that (scalar-tail) run.
    /// At every instruction-set level of this CPU.
    #[test]
    fn adam_on_a_large_tensor_matches_the_small_run_bit_for_bit() {
        simd::for_each_level(2, |_| {
            adam_on_a_large_tensor_matches_the_small_run_bit_for_bit_here()
        });
    }

    fn adam_on_a_large_tensor_matches_the_small_run_bit_for_bit_here() {
        for config in [
            OptimizerConfig::adamw(1e-2, 0.1),
            OptimizerConfig::Adam {
                lr: 1e-2,
                betas: (0.9, 0.999),
                eps: 1e-8,
                weight_decay: 0.05,
            },
        ] {
            let n = 2 * PAR_CHUNK + 7;
            let init = [0.5f32, -1.0, 2.0, 0.0];
            let tiled = |v: &[f32]| Tensor::new(vec![n], (0..n).map(|i| v[i % 4]).collect());
            let mut params = vec![Param {
                name: "p".into(),
                tensor: tiled(&init).unwrap(),
                trainable: true,
            }];
            let mut opt = Optimizer::new(config.clone()).unwrap();
            for g in GRADS {
                opt.step(&mut params, &[Some(tiled(&g).unwrap())]).unwrap();
            }
            let small = run(config);
            for (i, v) in params[0].tensor.data().iter().enumerate() {
                assert_eq!(v.to_bits(), small[i % 4].to_bits(), "element {i}");
            }
        }
    }

    /// At every instruction-set level of this CPU.
    #[test]
    fn adam_matches_pytorch() {
        simd::for_each_level(2, |_| adam_matches_pytorch_here());
    }

    fn adam_matches_pytorch_here() {
        let want = [0.497_955_50, -0.998_853_45, 1.978_412_27, -0.004_298_506_8];
        assert_close(&run(OptimizerConfig::adam(0.01)), &want);
    }

    #[test]
    fn adam_l2_with_custom_betas_matches_pytorch() {
        let c = OptimizerConfig::Adam {
            lr: 0.01,
            betas: (0.8, 0.95),
            eps: 1e-6,
            weight_decay: 0.1,
        };
        let want = [0.495_617_39, -0.993_587_20, 1.972_921_97, -0.004_023_284_2];
        assert_close(&run(c), &want);
    }

    /// At every instruction-set level of this CPU.
    #[test]
    fn adamw_matches_pytorch() {
        simd::for_each_level(2, |_| adamw_matches_pytorch_here());
    }

    fn adamw_matches_pytorch_here() {
        let want = [0.496_471_02, -0.995_872_86, 1.972_446_20, -0.004_291_065_5];
        assert_close(&run(OptimizerConfig::adamw(0.01, 0.1)), &want);
    }

    #[test]
    fn first_adam_step_moves_each_weight_by_lr() {
        // With bias correction, step 1 is lr·g/(|g| + eps') = ±lr for every non-zero g.
        let mut params = vec![Param {
            name: "w".into(),
            tensor: Tensor::zeros(&[3]),
            trainable: true,
        }];
        let mut opt = Optimizer::new(OptimizerConfig::adam(0.5)).unwrap();
        let g = Tensor::new(vec![3], vec![0.1, -7.0, 0.0]).unwrap();
        opt.step(&mut params, &[Some(g)]).unwrap();
        assert_close(params[0].tensor.data(), &[-0.5, 0.5, 0.0]);
    }

    #[test]
    fn frozen_params_and_missing_grads_are_left_alone() {
        let mut params = vec![
            Param {
                name: "buffer".into(),
                tensor: Tensor::full(&[2], 1.0),
                trainable: false,
            },
            Param {
                name: "w".into(),
                tensor: Tensor::full(&[2], 1.0),
                trainable: true,
            },
        ];
        let mut opt = Optimizer::new(OptimizerConfig::sgd(1.0)).unwrap();
        let g = Tensor::full(&[2], 1.0);
        opt.step(&mut params, &[Some(g), None]).unwrap();
        assert_eq!(params[0].tensor.data(), &[1.0, 1.0]);
        assert_eq!(params[1].tensor.data(), &[1.0, 1.0]);
    }

    #[test]
    fn set_lr_changes_the_step() {
        let mut params = vec![Param {
            name: "w".into(),
            tensor: Tensor::zeros(&[1]),
            trainable: true,
        }];
        let mut opt = Optimizer::new(OptimizerConfig::sgd(1.0)).unwrap();
        opt.set_lr(0.25).unwrap();
        assert_eq!(opt.lr(), 0.25);
        opt.step(&mut params, &[Some(Tensor::full(&[1], 2.0))])
            .unwrap();
        assert_eq!(params[0].tensor.data(), &[-0.5]);
        assert!(opt.set_lr(f32::NAN).is_err());
    }

    #[test]
    fn bad_configs_and_shapes_are_errors() {
        assert!(Optimizer::new(OptimizerConfig::sgd(-1.0)).is_err());
        let nesterov_without_momentum = OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 0.0,
        };
        assert!(Optimizer::new(nesterov_without_momentum).is_err());
        let bad_beta = OptimizerConfig::Adam {
            lr: 0.1,
            betas: (1.0, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        };
        assert!(Optimizer::new(bad_beta).is_err());

        let mut params = vec![Param {
            name: "w".into(),
            tensor: Tensor::zeros(&[2]),
            trainable: true,
        }];
        let mut opt = Optimizer::new(OptimizerConfig::adam(0.1)).unwrap();
        let err = opt
            .step(&mut params, &[Some(Tensor::zeros(&[3]))])
            .unwrap_err();
        assert!(err.0.contains("'w'"), "{err}");
        assert!(opt.step(&mut params, &[]).is_err());
    }
}
