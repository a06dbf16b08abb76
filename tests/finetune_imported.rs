//! An imported ONNX model saves as a convscope checkpoint (RON + safetensors), reopens
//! bit-exactly, gets a fresh 2-class head and trains further on a small image folder.
//! Model: tests/fixtures/onnx/torch_flatten.onnx (Conv, BatchNormalization, Relu, MaxPool,
//! PyTorch's flatten idiom, Gemm to 3 classes; input [N, 3, 6, 6]; made by
//! tools/make_onnx_fixtures.py, its onnxruntime output beside it).

#![allow(clippy::unwrap_used)] // tests unwrap freely

mod common;

use std::path::Path;

use convscope::engine::{Op, Tensor};
use convscope::models::head::{NewHead, replace_head};
use convscope::models::{self, Model, bundled::open_onnx};
use convscope::train::{self, Control, DataSpec, TrainConfig, TrainEvent};

use common::onnx_fixture as fixture;

use common::onnx_npy as npy;

use common::eval_output as run;

fn bits(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

/// Every parameter of `b` equals `a`'s bit for bit (same names, shapes, trainable flags).
fn assert_same_weights(a: &Model, b: &Model) {
    assert_eq!(a.graph.params().len(), b.graph.params().len());
    for p in a.graph.params() {
        let id = b
            .graph
            .param_id(&p.name)
            .unwrap_or_else(|| panic!("'{}' lost in the round trip", p.name));
        let q = &b.graph.params()[id];
        assert_eq!(q.tensor.shape(), p.tensor.shape(), "{}", p.name);
        assert_eq!(bits(&q.tensor), bits(&p.tensor), "{}", p.name);
        assert_eq!(q.trainable, p.trainable, "{}", p.name);
    }
}

/// Two classes of 12x12 PNGs, 24 each: `bright` (pixels 150..255) and `dark` (0..105), with
/// per-pixel noise from a fixed LCG — separable by brightness, which the backbone's features
/// carry, but not before training (the new head is random).
fn tiny_folder(root: &Path) {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u32
    };
    for (class, lo) in [("bright", 150u32), ("dark", 0u32)] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..24 {
            let img = image::RgbImage::from_fn(12, 12, |_, _| {
                image::Rgb([0, 1, 2].map(|_| (lo + next() % 106) as u8))
            });
            img.save(dir.join(format!("{i:02}.png"))).unwrap();
        }
    }
}

fn quiet(_: TrainEvent) {}

#[test]
fn imported_model_round_trips_and_fine_tunes_a_new_head() {
    let tmp = tempfile::tempdir().unwrap();

    // Import, check against onnxruntime, save as a checkpoint, reopen bit-exactly.
    let (imported, _) = open_onnx(&fixture("torch_flatten.onnx")).unwrap();
    let x = npy("torch_flatten.input.npy"); // (2, 3, 6, 6)
    let y = run(&imported.graph, &x); // (2, 3)
    common::assert_close(
        "imported model vs onnxruntime",
        &y,
        &npy("torch_flatten.output.npy"),
        1e-5,
    );
    let ckpt = tmp.path().join("imported");
    models::save_model(&ckpt, &imported).unwrap();
    let reopened = models::load_model(&ckpt).unwrap();
    assert_eq!(reopened.description, imported.description);
    assert_same_weights(&imported, &reopened);
    assert_eq!(bits(&run(&reopened.graph, &x)), bits(&y));

    // A fresh 2-class head on the reopened checkpoint; the backbone's weights are kept.
    let tuned = replace_head(
        reopened,
        NewHead {
            classes: 2,
            seed: 5,
            freeze_backbone: false,
        },
    )
    .unwrap();
    assert_eq!(run(&tuned.graph, &x).shape(), &[2, 2]);
    let last = tuned.description.nodes.last().unwrap();
    assert!(matches!(last.op, Op::Gemm(_)), "{last:?}");
    assert!(tuned.graph.param_id("fc_w").is_none(), "old head kept");
    for name in ["conv_w", "bn_g"] {
        let a = &imported.graph.params()[imported.graph.param_id(name).unwrap()];
        let b = &tuned.graph.params()[tuned.graph.param_id(name).unwrap()];
        assert_eq!(bits(&a.tensor), bits(&b.tensor), "{name} changed");
    }

    // Fine-tune on a tiny folder: the loss goes down.
    let data_dir = tmp.path().join("data");
    tiny_folder(&data_dir);
    let spec = DataSpec::Folder {
        root: data_dir,
        val_fraction: 0.0,
        test_fraction: 0.0,
        seed: 0,
    };
    let data = spec
        .build(tuned.graph.input_shape(), &tuned.description.preprocess)
        .unwrap();
    assert_eq!(data.classes, vec!["bright".to_string(), "dark".to_string()]);
    let cfg = TrainConfig {
        optimizer: convscope::engine::optim::OptimizerConfig::adam(1e-2),
        batch_size: 8,
        epochs: 6,
        patience: None,
        ..TrainConfig::default()
    };
    let mut model = tuned;
    model.description.labels = data.classes.clone();
    let s = train::fit(&mut model, &data, &cfg, &Control::new(), &mut quiet).unwrap();
    let losses: Vec<f32> = s.history.iter().map(|e| e.train_loss).collect();
    eprintln!("fine-tuning losses per epoch: {losses:?}");
    assert_eq!(losses.len(), 6);
    assert!(
        losses[5] < 0.5 * losses[0],
        "the loss did not go down: {losses:?}"
    );

    // The fine-tuned model saves, reopens bit-exactly, and trains further from there.
    let ckpt2 = tmp.path().join("tuned");
    models::save_model(&ckpt2, &model).unwrap();
    let mut again = models::load_model(&ckpt2).unwrap();
    assert_eq!(again.description, model.description);
    assert_same_weights(&model, &again);
    assert_eq!(bits(&run(&again.graph, &x)), bits(&run(&model.graph, &x)));
    let cfg2 = TrainConfig {
        epochs: 2,
        seed: 1,
        ..cfg
    };
    let s2 = train::fit(&mut again, &data, &cfg2, &Control::new(), &mut quiet).unwrap();
    let more: Vec<f32> = s2.history.iter().map(|e| e.train_loss).collect();
    eprintln!("two more epochs after reopening: {more:?}");
    assert!(
        more.iter().all(|l| l.is_finite() && *l < losses[0]),
        "training after reopening: {more:?} (first epoch was {})",
        losses[0]
    );
}

#[test]
fn train_cli_fine_tunes_an_onnx_file_with_a_new_head() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    tiny_folder(&data);
    let out = tmp.path().join("out");
    let model = fixture("torch_flatten.onnx");
    let o = common::convscope(&[
        "train",
        "--arch",
        model.to_str().unwrap(),
        "--new-head",
        "--freeze-backbone",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch",
        "8",
        "--lr",
        "0.01",
        "--val-fraction",
        "0",
        "--test-fraction",
        "0",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let m = models::load_model(&out).unwrap();
    assert_eq!(m.description.labels, vec!["bright", "dark"]);
    let out_id = m.graph.outputs()[0];
    assert_eq!(m.graph.value(out_id).shape[1], 2);
    // Frozen backbone: the convolution is the imported one, bit for bit.
    let (imported, _) = open_onnx(&model).unwrap();
    let a = &imported.graph.params()[imported.graph.param_id("conv_w").unwrap()];
    let b = &m.graph.params()[m.graph.param_id("conv_w").unwrap()];
    assert_eq!(bits(&a.tensor), bits(&b.tensor));
    assert!(!b.trainable);

    // Without --new-head the class counts disagree, which is said plainly.
    let o = common::convscope(&[
        "train",
        "--arch",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--out",
        tmp.path().join("out2").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("3 outputs but the data has 2 classes"),
        "{}",
        common::stderr(&o)
    );
}
