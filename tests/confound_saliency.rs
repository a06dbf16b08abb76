//! Issue #5: with the confound on, the trained model's explanation mass on the confound region
//! is measurably higher than without it. The smile CNN is trained briefly twice from the same
//! seed on the same synthetic faces, once with the background brightness following the label
//! (correlation 1) and once without; then both models explain the same held-out faces (drawn
//! with the confound, so that the background carries the cue) and we compare the share of
//! saliency and Grad-CAM mass that falls on the background
//! ([`SyntheticFaces::confound_mask`]).

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use convscope::data::{Confound, Dataset, SyntheticFaces};
use convscope::explain::{Control, Explainer, Method, MethodOptions, Target};
use convscope::models::{self, Model, SmileCnnConfig};
use convscope::train::{self, Control as TrainControl, DataSpec, TrainConfig, TrainEvent};

const CONFOUND: Confound = Confound::BackgroundBrightness { correlation: 1.0 };
const HELD_OUT: usize = 48;

fn trained(confound: Confound) -> Model {
    let (d, w) = models::smile_cnn(&SmileCnnConfig::default(), 2).unwrap();
    let graph = d.build(w).unwrap();
    let mut model = Model {
        description: d,
        graph,
    };
    let data = DataSpec::Synthetic {
        seed: 7,
        train: 768,
        val: 0,
        test: 0,
        confound,
    }
    .build(model.graph.input_shape(), &model.description.preprocess)
    .unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        ..TrainConfig::default()
    };
    train::fit(
        &mut model,
        &data,
        &cfg,
        &TrainControl::new(),
        &mut |_: TrainEvent| {},
    )
    .unwrap();
    model
}

/// Mean over the held-out faces of Σ(map · mask) / Σ(map): the share of the explanation of
/// the true class that lies on the confound region.
fn confound_share(model: &Model, faces: &SyntheticFaces, method: Method) -> f64 {
    let ex = Explainer::new(&model.graph).unwrap();
    let set = Dataset::Synthetic(faces.clone());
    let opts = MethodOptions::default();
    let mut total = 0.0;
    for i in 0..faces.len() {
        let (x, label) = set.load(i).unwrap(); // (3, 64, 64)
        let x = x.reshaped(vec![1, 3, 64, 64]).unwrap();
        let mask = faces.confound_mask(i).unwrap(); // (64, 64)
        let e = ex
            .explain(
                &x,
                method,
                Target::Class(label),
                None,
                &opts,
                Control::default(),
            )
            .unwrap();
        let (on, all) = e
            .map
            .data()
            .iter()
            .zip(mask.data())
            .fold((0.0f64, 0.0f64), |(on, all), (&m, &k)| {
                (on + f64::from(m * k), all + f64::from(m))
            });
        total += if all > 0.0 { on / all } else { 0.0 };
    }
    total / faces.len() as f64
}

#[test]
fn confounded_model_looks_at_the_background() {
    let t0 = Instant::now();
    let clean = trained(Confound::None);
    let confounded = trained(CONFOUND);
    let t_train = t0.elapsed().as_secs_f64();
    let faces = SyntheticFaces::new(99, HELD_OUT)
        .with_confound(CONFOUND)
        .unwrap();
    let area: f64 = (0..HELD_OUT)
        .map(|i| f64::from(faces.confound_mask(i).unwrap().data().iter().sum::<f32>()))
        .sum::<f64>()
        / (HELD_OUT * 64 * 64) as f64;
    let mut shares = Vec::new();
    for method in [Method::Saliency, Method::GradCam] {
        let c = confound_share(&clean, &faces, method);
        let k = confound_share(&confounded, &faces, method);
        println!(
            "{}: share of the map on the background (which covers {:.1}% of the image): \
             trained without the confound {:.1}%, with it {:.1}%",
            method.label(),
            100.0 * area,
            100.0 * c,
            100.0 * k
        );
        shares.push((method, c, k));
    }
    println!(
        "training {t_train:.1} s, total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    for (method, clean, confounded) in shares {
        assert!(
            confounded > clean,
            "{}: confounded {confounded:.3} should exceed clean {clean:.3}",
            method.label()
        );
    }
}
