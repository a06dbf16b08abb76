//! Checkpoints of the smile CNN: save → load is bit-exact, and a loaded model computes what the
//! saved one did.

#![allow(clippy::unwrap_used)]

use convscope::engine::{ForwardOptions, Param, gradcheck::test_tensor};
use convscope::models::{self, SmileCnnConfig, checkpoint, smile_cnn};

fn params_of(d: &models::ModelDescription, w: &models::Weights) -> Vec<Param> {
    d.params
        .iter()
        .map(|p| Param {
            name: p.name.clone(),
            tensor: w[&p.name].clone(),
            trainable: p.trainable,
        })
        .collect()
}

#[test]
fn smile_cnn_round_trips_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("smile");
    let (d, w) = smile_cnn(&SmileCnnConfig::default(), 42).unwrap();
    models::save_checkpoint(&dir, &d, &params_of(&d, &w)).unwrap();
    assert!(dir.join(checkpoint::MODEL_FILE).is_file());
    assert!(dir.join(checkpoint::WEIGHTS_FILE).is_file());
    let (d2, w2) = models::load_checkpoint(&dir).unwrap();
    assert_eq!(d2, d);
    assert_eq!(w2.len(), w.len());
    for (name, t) in &w {
        let bits = |t: &convscope::engine::Tensor| {
            t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(w2[name].shape(), t.shape(), "{name}");
        assert_eq!(bits(&w2[name]), bits(t), "{name}");
    }
}

#[test]
fn a_loaded_model_computes_what_the_saved_one_did() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("smile");
    let (d, w) = smile_cnn(&SmileCnnConfig::default(), 1).unwrap();
    let graph = d.build(w).unwrap();
    let model = models::Model {
        description: d,
        graph,
    };
    models::save_model(&dir, &model).unwrap();
    let loaded = models::load_model(&dir).unwrap();
    let x = test_tensor(&[2, 3, 64, 64], 9).map(|v| 0.5 + 0.5 * v);
    let run = |g: &convscope::engine::Graph| {
        let pass = g
            .forward(std::slice::from_ref(&x), &ForwardOptions::eval())
            .unwrap();
        g.lookup(&pass, g.outputs()[0]).unwrap().clone()
    };
    let (a, b) = (run(&model.graph), run(&loaded.graph));
    assert_eq!(a.shape(), &[2, 1]);
    assert_eq!(a, b);
    assert!(!a.has_non_finite());
}
