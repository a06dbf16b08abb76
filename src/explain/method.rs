//! One entry point for every explanation method: [`Method`] (the closed set, with the names the
//! CLI takes), [`MethodOptions`] (the knobs of each method) and [`Explainer::explain`], which
//! runs one method on one image and returns an [`Explanation`] in a common shape. The CLI's
//! `explain` and the GUI call this, so both show the same maps.
//!
//! `Explanation::raw` follows DESIGN.md's `--raw` definition: the un-normalised map, for CAM
//! methods at the layer's resolution `[h', w']`, for gradient methods the attribution `[c, h, w]`
//! (the input gradient for saliency), for occlusion the score drop per patch position
//! `[rows, cols]`, and for attention rollout the class token's share of each patch `[gh, gw]`.

use serde::{Deserialize, Serialize};

use super::Map;
use super::cam::{GradCamVariant, ScoreCamOptions};
use super::faithfulness::CurveOptions;
use super::gradient::{IntegratedGradientsOptions, SmoothGradOptions};
use super::occlusion::OcclusionOptions;
use super::target::{Explainer, ResolvedTarget, Target};
use super::{Control, ExplainError, ExplainResult, single_image_dims};
use crate::engine::Tensor;
use crate::engine::graph::{ValueId, ValueKind};

/// Every explanation method `explain` offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    Saliency,
    SmoothGrad,
    IntegratedGradients,
    GradientXInput,
    GuidedBackprop,
    GradCam,
    GradCamPlusPlus,
    ScoreCam,
    Occlusion,
    /// Transformers only; class-agnostic.
    AttentionRollout,
}

impl Method {
    pub const ALL: [Method; 10] = [
        Method::Saliency,
        Method::SmoothGrad,
        Method::IntegratedGradients,
        Method::GradientXInput,
        Method::GuidedBackprop,
        Method::GradCam,
        Method::GradCamPlusPlus,
        Method::ScoreCam,
        Method::Occlusion,
        Method::AttentionRollout,
    ];

    /// The command-line name (also the file name part `<stem>.<name>.png`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Saliency => "saliency",
            Method::SmoothGrad => "smoothgrad",
            Method::IntegratedGradients => "integrated-gradients",
            Method::GradientXInput => "gradient-x-input",
            Method::GuidedBackprop => "guided-backprop",
            Method::GradCam => "gradcam",
            Method::GradCamPlusPlus => "gradcam++",
            Method::ScoreCam => "scorecam",
            Method::Occlusion => "occlusion",
            Method::AttentionRollout => "attention-rollout",
        }
    }

    /// The method called `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Method> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Every CLI name, comma-separated, for messages and help.
    pub fn names() -> String {
        Self::ALL.map(Method::name).join(", ")
    }

    /// A name for people (menus, captions).
    pub fn label(self) -> &'static str {
        match self {
            Method::Saliency => "Saliency",
            Method::SmoothGrad => "SmoothGrad",
            Method::IntegratedGradients => "Integrated Gradients",
            Method::GradientXInput => "Gradient × Input",
            Method::GuidedBackprop => "Guided backprop",
            Method::GradCam => "Grad-CAM",
            Method::GradCamPlusPlus => "Grad-CAM++",
            Method::ScoreCam => "Score-CAM",
            Method::Occlusion => "Occlusion",
            Method::AttentionRollout => "Attention rollout",
        }
    }

    /// The CAM family explains at a 4-D layer; the others ignore the layer.
    pub fn uses_layer(self) -> bool {
        matches!(
            self,
            Method::GradCam | Method::GradCamPlusPlus | Method::ScoreCam
        )
    }

    /// Guided backpropagation barely changes when the model's top layers are re-initialised
    /// (Adebayo et al. 2018): it shows image edges more than what the model uses.
    pub fn fails_sanity_check(self) -> bool {
        matches!(self, Method::GuidedBackprop)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The options of every method; each method reads its own field.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MethodOptions {
    pub smooth_grad: SmoothGradOptions,
    pub integrated_gradients: IntegratedGradientsOptions,
    pub score_cam: ScoreCamOptions,
    /// A patch larger than the image's shorter side becomes a quarter of that side (stride at
    /// most half the patch), so the default (32 px, for 224-pixel inputs) also works on small
    /// inputs.
    pub occlusion: OcclusionOptions,
}

/// One method's explanation of one image.
#[derive(Clone, Debug)]
pub struct Explanation {
    pub method: Method,
    pub target: ResolvedTarget,
    /// The target class probability for the input (softmax, or sigmoid of a single logit).
    pub probability: f32,
    /// The layer a CAM method used (its graph name); `None` for the other methods.
    pub layer: Option<String>,
    /// At the input's resolution `[h, w]`, in [0, 1].
    pub map: Map,
    /// The un-normalised map (module docs): `[h', w']`, `[c, h, w]` or `[rows, cols]`.
    pub raw: Tensor,
}

/// Deletion and insertion areas of a map (RISE protocol, [`super::faithfulness`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaithfulnessScores {
    /// Small is good: the probability falls fast when the top pixels are removed.
    pub deletion_auc: f32,
    /// Large is good: the probability rises fast when the top pixels are restored.
    pub insertion_auc: f32,
}

impl Explainer<'_> {
    /// Runs `method` on one image `x` `[1, c, h, w]`. `layer` is the CAM layer (default: the
    /// last spatial layer, [`Self::default_cam_layer`]); other methods ignore it.
    pub fn explain(
        &self,
        x: &Tensor,
        method: Method,
        target: Target,
        layer: Option<ValueId>,
        opts: &MethodOptions,
        control: Control,
    ) -> ExplainResult<Explanation> {
        let [_, h, w] = single_image_dims(x)?;
        let layer = self.method_layer(method, layer)?;
        // One forward pass resolves the target and gives its probability; the method then
        // explains that fixed class.
        let logits = self.logits(x)?;
        let logits = &logits[..self.head.logits];
        let t = self.head.resolve(target, logits)?;
        let probability = self.head.probability(&t, logits);
        let class = Target::Class(t.class);
        let (map, raw) = match method {
            Method::Saliency => split(self.saliency(x, class)?),
            Method::GradientXInput => split(self.gradient_x_input(x, class)?),
            Method::GuidedBackprop => split(self.guided_backprop(x, class)?),
            Method::SmoothGrad => split(self.smooth_grad(x, class, &opts.smooth_grad, control)?),
            Method::IntegratedGradients => split(
                self.integrated_gradients(x, class, &opts.integrated_gradients, control)?
                    .attribution,
            ),
            Method::GradCam | Method::GradCamPlusPlus => {
                let variant = if method == Method::GradCam {
                    GradCamVariant::GradCam
                } else {
                    GradCamVariant::GradCamPlusPlus
                };
                let cam = self.grad_cam(x, class, layer, variant)?;
                (cam.map, cam.raw.to_tensor())
            }
            Method::ScoreCam => {
                let cam = self.score_cam(x, class, layer, &opts.score_cam, control)?;
                (cam.map, cam.raw.to_tensor())
            }
            Method::Occlusion => {
                let mut o = opts.occlusion.clone();
                let side = h.min(w);
                if o.patch > side {
                    o.patch = (side / 4).max(1);
                    o.stride = o.stride.min((o.patch / 2).max(1));
                }
                let occ = self.occlusion(x, class, &o, control)?;
                (occ.map, occ.raw.to_tensor())
            }
            Method::AttentionRollout => {
                let r = self.attention_rollout(x)?;
                (r.map, r.raw.to_tensor())
            }
        };
        Ok(Explanation {
            method,
            target: t,
            probability,
            layer: layer.map(|l| self.graph.value(l).name.clone()),
            map,
            raw,
        })
    }

    /// The layer `method` will explain at: `None` for methods without one, else `layer` after
    /// [checking](Self::check_cam_layer) it, or the default CAM layer. Lets a caller reject a
    /// bad `--layer` before any image is processed.
    pub fn method_layer(
        &self,
        method: Method,
        layer: Option<ValueId>,
    ) -> ExplainResult<Option<ValueId>> {
        if method == Method::AttentionRollout {
            // a model without attention fails here, before any image
            self.attention_layers()?;
        }
        if !method.uses_layer() {
            return Ok(None);
        }
        Ok(Some(match layer {
            Some(l) => self.check_cam_layer(l, method)?,
            None => self.default_cam_layer()?,
        }))
    }

    /// `layer` if a CAM can use it: a value computed from the input (not a parameter) on the
    /// image grid ([`super::layout`]) with more than one pixel; else an error naming the
    /// layer and its shape.
    fn check_cam_layer(&self, layer: ValueId, method: Method) -> ExplainResult<ValueId> {
        let info = self
            .graph
            .values()
            .get(layer)
            .ok_or_else(|| ExplainError::invalid(format!("unknown value id {layer}")))?;
        if matches!(info.kind, ValueKind::Param(_)) {
            return Err(ExplainError::invalid(format!(
                "'{}' is a parameter of the model, not a layer output; {} needs a layer",
                info.name,
                method.label()
            )));
        }
        let grid = self.layout(layer).map(|l| l.grid());
        if grid.is_none_or(|(h, w)| h * w <= 1) {
            return Err(ExplainError::invalid(format!(
                "layer '{}' has shape {:?} without spatial dimensions; {} needs a layer on the image grid with more than one pixel (a 4-D map [n, k, h, w], a channels-last map or patch tokens)",
                info.name,
                info.shape,
                method.label()
            )));
        }
        Ok(layer)
    }

    /// Deletion and insertion areas of `e`'s map for its target on `x` `[1, c, h, w]`.
    pub fn faithfulness_scores(
        &self,
        x: &Tensor,
        e: &Explanation,
        opts: &CurveOptions,
        control: Control,
    ) -> ExplainResult<FaithfulnessScores> {
        let t = Target::Class(e.target.class);
        let deletion = self.deletion_curve(x, t, &e.map, opts, control)?;
        let insertion = self.insertion_curve(x, t, &e.map, opts, control)?;
        Ok(FaithfulnessScores {
            deletion_auc: deletion.auc,
            insertion_auc: insertion.auc,
        })
    }
}

fn split(g: super::gradient::GradientMap) -> (Map, Tensor) {
    (g.map, g.raw)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::graph::InputDef;
    use crate::engine::ops::{Activation, Conv2dSpec, GemmSpec};
    use crate::engine::{Graph, GraphDef, Op};

    #[test]
    fn names_round_trip() {
        for m in Method::ALL {
            assert_eq!(Method::from_name(m.name()), Some(m));
            assert_eq!(Method::from_name(&m.name().to_uppercase()), Some(m));
            assert!(!m.label().is_empty());
        }
        assert_eq!(Method::from_name("grad-cam"), None);
        assert!(Method::names().contains("gradcam++"));
        assert!(Method::GuidedBackprop.fails_sanity_check());
        assert!(!Method::GradCam.fails_sanity_check());
        let layered: Vec<Method> = Method::ALL.into_iter().filter(|m| m.uses_layer()).collect();
        assert_eq!(
            layered,
            vec![Method::GradCam, Method::GradCamPlusPlus, Method::ScoreCam]
        );
    }

    /// x [1,2,6,6] -> conv3x3 pad 1 (3 ch) -> relu [1,3,6,6] -> global avg -> flatten
    /// -> linear [4, 3] -> softmax.
    fn tiny() -> Graph {
        let mut d = GraphDef {
            inputs: vec![InputDef {
                name: "x".into(),
                shape: vec![1, 2, 6, 6],
            }],
            outputs: vec!["probs".into()],
            ..GraphDef::default()
        };
        let w: Vec<f32> = (0..3 * 2 * 9)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
            .collect();
        d.param("w", Tensor::new(vec![3, 2, 3, 3], w).unwrap(), true);
        let v: Vec<f32> = (0..12).map(|i| ((i * 5 % 7) as f32 - 3.0) / 2.0).collect();
        d.param("v", Tensor::new(vec![4, 3], v).unwrap(), true);
        d.param(
            "b",
            Tensor::new(vec![4], vec![0.1, -0.2, 0.0, 0.3]).unwrap(),
            true,
        );
        let conv = Conv2dSpec::stride1(1);
        d.push("conv", Op::Conv2d(conv), &["x", "w"]);
        d.push("relu", Op::Activation(Activation::Relu), &["conv"]);
        d.push("gap", Op::GlobalAvgPool, &["relu"]);
        d.push("flat", Op::Flatten { axis: 1 }, &["gap"]);
        d.push("logits", Op::Gemm(GemmSpec::linear()), &["flat", "v", "b"]);
        d.push("probs", Op::Softmax { axis: 1 }, &["logits"]);
        Graph::from_def(d).unwrap()
    }

    fn x() -> Tensor {
        let data: Vec<f32> = (0..72)
            .map(|i| ((i * 29 % 23) as f32 - 11.0) / 6.0)
            .collect();
        Tensor::new(vec![1, 2, 6, 6], data).unwrap()
    }

    #[test]
    fn every_method_gives_a_unit_map_of_input_size() {
        let g = tiny();
        let ex = Explainer::new(&g).unwrap();
        let x = x();
        let opts = MethodOptions {
            smooth_grad: SmoothGradOptions {
                samples: 4,
                ..SmoothGradOptions::default()
            },
            ..MethodOptions::default()
        };
        for m in Method::ALL {
            let e = ex.explain(&x, m, Target::Top, None, &opts, Control::default());
            if m == Method::AttentionRollout {
                // a CNN: refused with the reason (tests/onnx_import.rs runs it on ViTs)
                let e = e.unwrap_err().to_string();
                assert!(e.contains("no attention softmax"), "{e}");
                continue;
            }
            let e = e.unwrap();
            assert_eq!((e.map.height(), e.map.width()), (6, 6), "{m}");
            assert!(
                e.map.data().iter().all(|v| (0.0..=1.0).contains(v)),
                "{m}: {:?}",
                e.map.data()
            );
            assert!(
                e.map.data().iter().any(|&v| v > 0.0),
                "{m}: an all-zero map"
            );
            assert!(e.probability > 0.0 && e.probability < 1.0, "{m}");
            assert_eq!(e.method, m);
            let raw = e.raw.shape().to_vec();
            match m {
                Method::GradCam | Method::GradCamPlusPlus | Method::ScoreCam => {
                    assert_eq!(e.layer.as_deref(), Some("relu"), "{m}");
                    assert_eq!(raw, vec![6, 6], "{m}");
                }
                Method::Occlusion => {
                    assert_eq!(e.layer, None);
                    assert_eq!(raw.len(), 2, "{m}");
                }
                _ => {
                    assert_eq!(e.layer, None);
                    assert_eq!(raw, vec![2, 6, 6], "{m}");
                }
            }
        }
        // The probability is that of the resolved class.
        let e = ex
            .explain(
                &x,
                Method::Saliency,
                Target::Class(2),
                None,
                &opts,
                Control::default(),
            )
            .unwrap();
        let logits = ex.logits(&x).unwrap();
        let p = ex.head.probability(&e.target, &logits);
        assert_eq!(e.target.class, 2);
        assert!((e.probability - p).abs() < 1e-7);
    }

    #[test]
    fn cam_layers_are_checked() {
        let g = tiny();
        let ex = Explainer::new(&g).unwrap();
        let x = x();
        let opts = MethodOptions::default();
        let run = |layer: &str, m: Method| {
            let id = ex.value(layer)?;
            ex.explain(&x, m, Target::Top, Some(id), &opts, Control::default())
        };
        let e = run("flat", Method::GradCam).unwrap_err().to_string();
        assert!(
            e.contains("'flat'") && e.contains("without spatial dimensions"),
            "{e}"
        );
        let e = run("gap", Method::ScoreCam).unwrap_err().to_string();
        assert!(e.contains("'gap'") && e.contains("[1, 3, 1, 1]"), "{e}");
        let e = run("w", Method::GradCamPlusPlus).unwrap_err().to_string();
        assert!(e.contains("'w' is a parameter"), "{e}");
        let e = run("nope", Method::GradCam).unwrap_err().to_string();
        assert!(e.contains("no value named 'nope'"), "{e}");
        // The layer is ignored by methods that do not use one.
        let e = run("flat", Method::Saliency).unwrap();
        assert_eq!(e.layer, None);
        assert!(run("conv", Method::GradCam).is_ok());
    }

    #[test]
    fn faithfulness_scores_are_areas() {
        let g = tiny();
        let ex = Explainer::new(&g).unwrap();
        let x = x();
        let e = ex
            .explain(
                &x,
                Method::GradCam,
                Target::Top,
                None,
                &MethodOptions::default(),
                Control::default(),
            )
            .unwrap();
        let opts = CurveOptions {
            steps: 4,
            blur_sigma: 1.0,
            ..CurveOptions::default()
        };
        let s = ex
            .faithfulness_scores(&x, &e, &opts, Control::default())
            .unwrap();
        let t = Target::Class(e.target.class);
        let del = ex
            .deletion_curve(&x, t, &e.map, &opts, Control::default())
            .unwrap();
        assert_eq!(s.deletion_auc, del.auc);
        assert!((0.0..=1.0).contains(&s.deletion_auc) && (0.0..=1.0).contains(&s.insertion_auc));
    }
}
