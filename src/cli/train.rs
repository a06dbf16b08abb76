//! `convscope train --data DIR|synthetic-smiles --arch smile-cnn|FILE.ron|DIR [--epochs N]
//! [--batch B] [--lr LR] [--seed S] [--confound none|tilt|background] [--threads T] --out DIR
//! [--json]`: trains on a worker thread and prints one line per epoch and a final test line.
//! The checkpoint in `--out` (model.ron, weights.safetensors, train_state.json) is rewritten
//! atomically after every epoch (and every `--checkpoint-every` batches).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::json;

use super::common::{metrics_json, progress_bar, report_skipped};
use super::{CliError, CliResult};
use crate::data::Confound;
use crate::engine::optim::OptimizerConfig;
use crate::train::{
    self, DataSpec, EpochStats, StopReason, TrainConfig, TrainEvent, TrainSummary, arch, state,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConfoundArg {
    None,
    Tilt,
    Background,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    Adam,
    Adamw,
    Sgd,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// An image folder (one sub-folder per class, or train/val/test splits) or `synthetic-smiles`.
    #[arg(long)]
    pub data: String,
    /// `smile-cnn`, a RON model description (freshly initialised), an .onnx file or a
    /// checkpoint directory.
    #[arg(long, default_value = "smile-cnn")]
    pub arch: String,
    /// Replace the model's classifier with a fresh linear layer sized to the data's classes
    /// (fine-tuning an imported or trained network on new classes).
    #[arg(long)]
    pub new_head: bool,
    /// With --new-head: train the new layer only, every other weight stays fixed.
    #[arg(long, requires = "new_head")]
    pub freeze_backbone: bool,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adam)]
    pub optimizer: OptimizerArg,
    /// Seeds the initial weights, the shuffling, dropout, splits and synthetic faces.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A spurious cue planted in synthetic training and validation faces (test faces never
    /// have it).
    #[arg(long, value_enum, default_value_t = ConfoundArg::None)]
    pub confound: ConfoundArg,
    /// How strongly the confound follows the label (1 = always).
    #[arg(long, default_value_t = 1.0)]
    pub confound_correlation: f32,
    /// Synthetic set sizes.
    #[arg(long, default_value_t = 4000)]
    pub train_size: usize,
    #[arg(long, default_value_t = 500)]
    pub val_size: usize,
    #[arg(long, default_value_t = 1000)]
    pub test_size: usize,
    /// Held-out fractions of a folder without split sub-folders (stratified, from --seed).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f32,
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f32,
    /// Early stopping: epochs without validation-loss improvement (0 = never stop early).
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Random horizontal flips while training.
    #[arg(long)]
    pub hflip: bool,
    /// Also checkpoint every this many batches.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Worker threads (default: RAYON_NUM_THREADS, else one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Checkpoint directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the checkpoint in --out up to --epochs epochs in total.
    #[arg(long)]
    pub resume: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

fn optimizer(args: &TrainArgs) -> OptimizerConfig {
    match args.optimizer {
        OptimizerArg::Adam => OptimizerConfig::adam(args.lr),
        OptimizerArg::Adamw => OptimizerConfig::adamw(args.lr, 1e-2),
        OptimizerArg::Sgd => OptimizerConfig::sgd_momentum(args.lr, 0.9),
    }
}

fn data_spec(args: &TrainArgs) -> DataSpec {
    if args.data == "synthetic-smiles" {
        let c = args.confound_correlation;
        DataSpec::Synthetic {
            seed: args.seed,
            train: args.train_size,
            val: args.val_size,
            test: args.test_size,
            confound: match args.confound {
                ConfoundArg::None => Confound::None,
                ConfoundArg::Tilt => Confound::HeadTilt { correlation: c },
                ConfoundArg::Background => Confound::BackgroundBrightness { correlation: c },
            },
        }
    } else {
        DataSpec::Folder {
            root: PathBuf::from(&args.data),
            val_fraction: args.val_fraction,
            test_fraction: args.test_fraction,
            seed: args.seed,
        }
    }
}

fn set_threads(threads: Option<usize>) -> CliResult<()> {
    if let Some(t) = threads {
        if t == 0 {
            return Err(CliError("--threads must be at least 1".into()));
        }
        // A pool set earlier in this process stays; the first one wins.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global();
    }
    Ok(())
}

fn epoch_line(e: &EpochStats, epochs: usize) -> String {
    let val = match (e.val_loss, e.val_acc) {
        (Some(l), Some(a)) => format!(", val loss {l:.4} acc {a:.4}"),
        _ => String::new(),
    };
    format!(
        "epoch {}/{epochs}: train loss {:.4} acc {:.4}{val} ({:.1} s)",
        e.epoch, e.train_loss, e.train_acc, e.seconds
    )
}

fn print_summary(s: &TrainSummary, json: bool) {
    let stop = match &s.stop {
        StopReason::Completed => "completed".to_string(),
        StopReason::EarlyStopped { best_epoch } => format!("early stop (best epoch {best_epoch})"),
        StopReason::Stopped => "stopped".to_string(),
    };
    match (&s.test, json) {
        (Some(m), true) => {
            let mut v = metrics_json(m, s.test_loss);
            v["stop"] = json!(stop);
            println!("{v}");
        }
        (Some(m), false) => {
            let (p, r, f) = m.headline();
            println!(
                "test: accuracy {:.4}, precision {p:.4}, recall {r:.4}, F1 {f:.4}, macro F1 {:.4}{} on {} images ({stop})",
                m.accuracy,
                m.macro_f1,
                m.auc.map_or(String::new(), |a| format!(", AUC {a:.4}")),
                m.n
            );
            println!(
                "confusion (rows: true, columns: predicted): {:?}",
                m.confusion
            );
        }
        (None, true) => println!("{}", json!({"test_acc": null, "stop": stop})),
        (None, false) => println!("no test set ({stop})"),
    }
}

pub fn run(args: &TrainArgs) -> CliResult<()> {
    set_threads(args.threads)?;
    let mut cfg = TrainConfig {
        optimizer: optimizer(args),
        batch_size: args.batch,
        epochs: args.epochs,
        seed: args.seed,
        patience: (args.patience > 0).then_some(args.patience),
        hflip: args.hflip,
        checkpoint_dir: Some(args.out.clone()),
        checkpoint_every_batches: args.checkpoint_every,
        ..TrainConfig::default()
    };
    cfg.validate().map_err(|e| CliError(e.to_string()))?;
    let (mut model, data) = if args.resume {
        let (model, st) = state::load(&args.out).map_err(|e| CliError(format!("--resume: {e}")))?;
        let done = st.map_or(0, |s| s.epochs_done);
        if done >= args.epochs {
            return Err(CliError(format!(
                "{}: already trained for {done} epochs (--epochs {})",
                args.out.display(),
                args.epochs
            )));
        }
        cfg.start_epoch = done;
        cfg.epochs = args.epochs - done;
        let data = data_spec(args)
            .build(model.graph.input_shape(), &model.description.preprocess)
            .map_err(|e| CliError(e.to_string()))?;
        (model, data)
    } else {
        arch::model_and_data(&args.arch, args.seed, &data_spec(args))
            .map_err(|e| CliError(e.to_string()))?
    };
    report_skipped(&data.skipped);
    if args.new_head && !args.resume {
        let head = crate::models::head::NewHead {
            classes: data.classes.len(),
            seed: args.seed,
            freeze_backbone: args.freeze_backbone,
        };
        model = crate::models::head::replace_head(model, head)
            .map_err(|e| CliError(format!("--new-head: {e}")))?;
    }
    model.description.labels = data.classes.clone();
    let total_epochs = cfg.start_epoch + cfg.epochs;
    let handle = train::spawn(model, data, cfg, None).map_err(|e| CliError(e.to_string()))?;
    let pb = progress_bar(args.json);
    let mut outcome = Err(CliError(
        "the training thread ended without a result".into(),
    ));
    for event in handle.events.iter() {
        match event {
            TrainEvent::Started {
                batches_per_epoch, ..
            } => pb.set_length(batches_per_epoch as u64),
            TrainEvent::BatchDone {
                epoch,
                batch,
                loss,
                images_per_s,
                ..
            } => {
                pb.set_prefix(format!("epoch {epoch}/{total_epochs}"));
                pb.set_position(batch as u64);
                pb.set_message(format!("loss {loss:.4}, {images_per_s:.0} img/s"));
            }
            TrainEvent::EpochDone(e) => {
                if args.json {
                    let line = json!({
                        "epoch": e.epoch,
                        "train_loss": e.train_loss,
                        "train_acc": e.train_acc,
                        "val_loss": e.val_loss,
                        "val_acc": e.val_acc,
                        "seconds": e.seconds,
                    });
                    println!("{line}");
                } else {
                    pb.suspend(|| println!("{}", epoch_line(&e, total_epochs)));
                }
                pb.set_position(0);
            }
            TrainEvent::Done(summary) => {
                pb.finish_and_clear();
                report_skipped(&summary.skipped);
                print_summary(&summary, args.json);
                outcome = Ok(());
            }
            TrainEvent::Failed(msg) => {
                pb.finish_and_clear();
                outcome = Err(CliError(msg));
            }
            TrainEvent::Snapshot { .. } | TrainEvent::Checkpoint { .. } => {}
        }
    }
    handle.join().map_err(|e| CliError(e.to_string()))?;
    outcome
}
