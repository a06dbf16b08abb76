//! The training loop as a library: learning, confounds, divergence, the worker thread.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use convscope::data::{Confound, Dataset, SyntheticFaces};
use convscope::models::{self, Model, SmileCnnConfig};
use convscope::train::{
    self, Control, DataSpec, Head, StopReason, TrainConfig, TrainError, TrainEvent, state,
};

fn smile_cnn(seed: u64) -> Model {
    let (d, w) = models::smile_cnn(&SmileCnnConfig::default(), seed).unwrap();
    let graph = d.build(w).unwrap();
    Model {
        description: d,
        graph,
    }
}

fn synthetic(train: usize, val: usize, test: usize, confound: Confound) -> train::TrainData {
    let m = smile_cnn(0);
    DataSpec::Synthetic {
        seed: 7,
        train,
        val,
        test,
        confound,
    }
    .build(m.graph.input_shape(), &m.description.preprocess)
    .unwrap()
}

fn quiet(_: TrainEvent) {}

/// 48 Adam steps (768 faces, 2 epochs): a working loop is far above chance (0.5); a loop
/// that does not learn (wrong gradient sign, no update, shuffled labels) stays near it.
#[test]
fn smile_cnn_learns_the_synthetic_faces() {
    let t0 = Instant::now();
    let data = synthetic(768, 0, 400, Confound::None);
    let mut model = smile_cnn(1);
    let cfg = TrainConfig {
        epochs: 2,
        ..TrainConfig::default()
    };
    let s = train::fit(&mut model, &data, &cfg, &Control::new(), &mut quiet).unwrap();
    let test = s.test.unwrap();
    eprintln!(
        "history {:?}; test acc {:.3}; {:.1} s",
        s.history,
        test.accuracy,
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(s.stop, StopReason::Completed);
    assert!(s.history[1].train_loss < s.history[0].train_loss);
    // chance is 0.5 with a standard error of 0.025 on 400 faces; 48 steps reached 0.75-0.79
    assert!(test.accuracy >= 0.7, "test accuracy {}", test.accuracy);
}

/// Background brightness follows the label perfectly in training: the model leans on it, so
/// faces without the cue are classified clearly worse than faces with it.
#[test]
fn a_confounded_model_relies_on_the_background() {
    let t0 = Instant::now();
    let bg = Confound::BackgroundBrightness { correlation: 1.0 };
    let data = synthetic(768, 0, 0, bg);
    let mut model = smile_cnn(2);
    let cfg = TrainConfig {
        epochs: 1,
        ..TrainConfig::default()
    };
    train::fit(&mut model, &data, &cfg, &Control::new(), &mut quiet).unwrap();
    let head = Head::of(&model.graph, 2).unwrap();
    let eval = |confound: Confound| {
        let faces = SyntheticFaces::new(99, 400)
            .with_confound(confound)
            .unwrap();
        let (_, m, _) =
            train::evaluate(&model.graph, &Dataset::Synthetic(faces), 64, head).unwrap();
        m.accuracy
    };
    let with_cue = eval(bg);
    let without = eval(Confound::None);
    eprintln!(
        "confound-aligned {with_cue:.3}, confound-free {without:.3}; {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(with_cue >= 0.9, "with the cue {with_cue}");
    assert!(
        with_cue - without >= 0.1,
        "accuracy with the cue {with_cue}, without {without}"
    );
}

#[test]
fn an_injected_nan_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    let data = synthetic(96, 0, 0, Confound::None);
    let mut model = smile_cnn(3);
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 16,
        checkpoint_dir: Some(dir.clone()),
        // one full epoch (6 batches) checkpointed, then NaN in epoch 2
        inject_nan_at_step: Some(8),
        ..TrainConfig::default()
    };
    let mut events = Vec::new();
    let e = train::fit(&mut model, &data, &cfg, &Control::new(), &mut |e| {
        events.push(e)
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, TrainError::Diverged(_)), "{msg}");
    assert!(
        msg.contains("diverged")
            && msg.contains("last good checkpoint")
            && msg.contains("after 1 complete epochs"),
        "{msg}"
    );
    let (m, st) = state::load(&dir).unwrap();
    assert_eq!(st.unwrap().epochs_done, 1);
    assert!(m.graph.params().iter().all(|p| !p.tensor.has_non_finite()));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, TrainEvent::Checkpoint { .. }))
            .count(),
        1
    );
}

#[test]
fn the_worker_reports_pauses_and_stops() {
    let data = synthetic(256, 32, 32, Confound::None);
    let cfg = TrainConfig {
        epochs: 50,
        batch_size: 8,
        snapshot_interval_ms: 0,
        probe: Some(
            Dataset::Synthetic(SyntheticFaces::new(1, 1))
                .load(0)
                .unwrap()
                .0
                .reshaped(vec![1, 3, 64, 64])
                .unwrap(),
        ),
        probe_layers: vec!["features.relu1".into(), "no.such.layer".into()],
        ..TrainConfig::default()
    };
    let h = train::spawn(smile_cnn(4), data, cfg, Some(1)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(50);
    let (mut batches, mut snapshot_ok, mut done) = (0, false, None);
    while Instant::now() < deadline && done.is_none() {
        match h.try_recv() {
            Ok(TrainEvent::BatchDone { loss, lr, .. }) => {
                assert!(loss.is_finite() && lr == 1e-3);
                batches += 1;
                if batches == 3 {
                    h.control.pause();
                    // The batch in flight when pause was asked may still report (however slow a
                    // loaded machine makes it); a second one would mean the pause was ignored.
                    let watch_until = Instant::now() + Duration::from_millis(1500);
                    let mut while_paused = 0;
                    while Instant::now() < watch_until {
                        match h.try_recv() {
                            Ok(TrainEvent::BatchDone { .. }) => while_paused += 1,
                            Ok(_) => {}
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                    assert!(while_paused <= 1, "{while_paused} batches ran while paused");
                    batches += while_paused;
                    h.control.resume();
                }
                if batches == 6 {
                    h.control.stop();
                }
            }
            Ok(TrainEvent::Snapshot {
                filters,
                activations,
                ..
            }) => {
                assert_eq!(filters.unwrap().shape(), &[16, 3, 5, 5]);
                assert_eq!(activations.len(), 1);
                assert_eq!(activations[0].1.shape(), &[1, 16, 64, 64]);
                snapshot_ok = true;
            }
            Ok(TrainEvent::Done(s)) => done = Some(s),
            Ok(TrainEvent::Failed(m)) => panic!("{m}"),
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let s = done.expect("the run did not end");
    assert_eq!(s.stop, StopReason::Stopped);
    assert!(snapshot_ok);
    assert!((6..=8).contains(&batches), "{batches}");
    let model = h.join().unwrap();
    assert!(
        model
            .graph
            .params()
            .iter()
            .all(|p| !p.tensor.has_non_finite())
    );
}

#[test]
fn small_sets_and_bad_configs() {
    // a batch larger than the data set: one smaller batch per epoch
    let data = synthetic(5, 3, 0, Confound::None);
    let mut model = smile_cnn(5);
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 64,
        ..TrainConfig::default()
    };
    let mut sizes = Vec::new();
    let s = train::fit(&mut model, &data, &cfg, &Control::new(), &mut |e| {
        if let TrainEvent::Started {
            batches_per_epoch, ..
        } = e
        {
            sizes.push(batches_per_epoch);
        }
    })
    .unwrap();
    assert_eq!(sizes, [1]);
    assert!(s.history[0].val_loss.unwrap().is_finite());

    let zero = TrainConfig {
        epochs: 0,
        ..TrainConfig::default()
    };
    let e = train::fit(&mut model, &data, &zero, &Control::new(), &mut quiet).unwrap_err();
    assert!(e.to_string().contains("--epochs"), "{e}");

    // a 3-class data set for a single-logit model
    let mut three = data.clone();
    three.classes.push("surprised".into());
    let e = train::fit(&mut model, &three, &cfg, &Control::new(), &mut quiet).unwrap_err();
    assert!(
        e.to_string().contains("single logit") && e.to_string().contains("3 classes"),
        "{e}"
    );
}
