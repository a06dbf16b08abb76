//! A real Keras model, exported by tf2onnx with channels-last input, imports, matches Keras'
//! own predictions, and fine-tunes on the Happy House faces with a held-out split (issue 15:
//! training used to refuse NHWC models outright).
//!
//! Model: tests/fixtures/onnx/keras_happy.onnx (Transpose, Conv, Relu, MaxPool, then Keras'
//! channels-last Flatten as tf2onnx writes it: Transpose, Shape, Gather, Cast, Slice, Concat,
//! Reshape; MatMul, Add, Softmax; input [N, 64, 64, 3]; made by tools/make_keras_fixture.py
//! with TensorFlow 2.21 / tf2onnx 1.17, Keras' output beside it). Data: ../shared/data/happy
//! (150 test-split images of the Keras course's data set, 84 smile / 66 frown; tests only).

#![allow(clippy::unwrap_used)] // tests unwrap freely

mod common;

use convscope::data::Layout;
use convscope::models::bundled::open_onnx;
use convscope::models::head::{NewHead, replace_head};
use convscope::train::{self, Control, DataSpec, TrainConfig, TrainEvent};

use common::onnx_fixture as fixture;

use common::onnx_npy as npy;

use common::eval_output as run;

#[test]
fn a_keras_nhwc_export_fine_tunes_on_happy_house_faces() {
    let happy = common::shared_path("data/happy/test");
    let (model, _) = open_onnx(&fixture("keras_happy.onnx")).unwrap();
    assert_eq!(model.graph.input_shape(), &[1, 64, 64, 3]);
    let preset = &model.description.preprocess;
    assert_eq!(preset.layout, Layout::Nhwc, "{preset:?}");
    assert_eq!(preset.size, [64, 64]);
    // The import against Keras' own predictions (softmax probabilities, float32).
    let x = npy("keras_happy.input.npy"); // (2, 64, 64, 3)
    common::assert_close(
        "keras_happy vs Keras",
        &run(&model.graph, &x),
        &npy("keras_happy.output.npy"),
        1e-5,
    );

    // A fresh 2-class head (the softmax is dropped: training wants logits), every weight
    // trainable, 100 faces to train on and 50 held out.
    let mut model = replace_head(
        model,
        NewHead {
            classes: 2,
            seed: 11,
            freeze_backbone: false,
        },
    )
    .unwrap();
    let spec = DataSpec::Folder {
        root: happy.clone(),
        val_fraction: 0.0,
        test_fraction: 1.0 / 3.0,
        seed: 3,
    };
    let data = spec
        .build(model.graph.input_shape(), &model.description.preprocess)
        .unwrap();
    assert_eq!(data.classes, vec!["frown".to_string(), "smile".to_string()]);
    let test = data.test.as_ref().unwrap();
    assert_eq!(data.train.len() + test.len(), 150);
    assert_eq!(test.sample_shape(), [64, 64, 3]); // channels last, as the model reads
    model.description.labels = data.classes.clone();
    let cfg = TrainConfig {
        optimizer: convscope::engine::optim::OptimizerConfig::adam(1e-2),
        batch_size: 16,
        epochs: 25,
        patience: None,
        ..TrainConfig::default()
    };
    let quiet = &mut |_: TrainEvent| {};
    let s = train::fit(&mut model, &data, &cfg, &Control::new(), quiet).unwrap();
    let losses: Vec<f32> = s.history.iter().map(|e| e.train_loss).collect();
    let m = s.test.unwrap();
    eprintln!(
        "Keras NHWC fine-tune: losses {losses:?}, held-out accuracy {:.3} on {} faces",
        m.accuracy, m.n
    );
    assert_eq!(m.n, test.len());
    assert!(losses.last().unwrap() < &(0.7 * losses[0]), "{losses:?}");
    // The majority class is 56 % of the faces and the untrained head guesses; this run reaches
    // 0.84 (deterministic for a thread count), the bound leaves room for another instruction
    // set's rounding.
    assert!(m.accuracy >= 0.75, "held-out accuracy {:.3}", m.accuracy);
}
