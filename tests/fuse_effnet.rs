//! The inference rewrite (`engine::graph::fuse`) on EfficientNet-Lite0 as imported from ONNX: the fused
//! graph computes the same logits, the same input gradient of a logit (what saliency and
//! Grad-CAM take) and the same kept activation (Grad-CAM's layer) as the imported graph.

#![allow(clippy::unwrap_used)]

mod common;

use convscope::engine::gradcheck::test_tensor;
use convscope::engine::graph::fuse::fuse_for_inference;
use convscope::engine::{Graph, Tensor};

/// Grad-CAM's default layer on this model.
const LAYER: &str = "/_head_act/Clip_output_0";

fn model() -> Graph {
    let path = common::shared_path("data/models/efficientnet_lite0.onnx");
    let m = convscope::models::onnx::import_onnx(&path).unwrap();
    Graph::from_def(m.def).unwrap()
}

/// (logits, kept layer, d logit[class] / d input) of one forward and backward pass.
fn run(g: &Graph, x: &Tensor, class: usize) -> (Tensor, Tensor, Tensor) {
    let (logits, mut kept, d_x) = common::logits_and_input_gradient(g, x, class, &[LAYER]);
    (logits, kept.remove(0), d_x)
}

#[test]
fn fused_effnet_matches_the_imported_graph() {
    let g = model();
    let (f, report) = fuse_for_inference(&g, &[LAYER]).unwrap();
    // every conv of the model carries a batch norm and most a ReLU6; the TF-style convs an
    // explicit Pad
    assert!(report.batch_norms >= 40, "{report:?}");
    assert!(report.activations >= 30, "{report:?}");
    assert!(report.pads >= 4, "{report:?}");
    assert!(f.nodes().len() < g.nodes().len() / 2);

    // an image-like input: standardised values in about [-2, 2]
    let x = test_tensor(&[1, 3, 224, 224], 3).map(|v| 2.0 * v);
    let (y0, l0, gx0) = run(&g, &x, 285);
    let (y1, l1, gx1) = run(&f, &x, 285);
    common::assert_close("fused logits", &y1, &y0, 1e-5);
    common::assert_close("fused kept layer", &l1, &l0, 1e-5);
    assert!(gx0.max_abs() > 0.0);
    common::assert_close("fused input gradient", &gx1, &gx0, 1e-4);
}
