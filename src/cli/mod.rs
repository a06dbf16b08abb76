//! The headless subcommands (contract in DESIGN.md). Each prints results to stdout and, on
//! failure, one sentence to stderr with a non-zero exit code; nothing panics. A subcommand
//! imports `common` (layer lookup, inputs, `.npy`, report helpers) and `resolve` (which model),
//! never another subcommand.

pub mod activations;
pub mod bench;
pub mod common;
pub mod dream;
pub mod evaluate;
pub mod explain;
pub mod microscope;
pub mod predict;
pub mod resolve;
pub mod summary;
pub mod train;

use clap::{Parser, Subcommand};

/// A command-line failure: one sentence for stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

pub type CliResult<T> = Result<T, CliError>;

#[derive(Debug, Parser)]
#[command(
    name = "convscope",
    version,
    about = "A native desktop microscope for convolutional neural networks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One row per node: name, op, output shape, parameters, multiply-accumulates.
    Summary(summary::SummaryArgs),
    /// Median forward and forward+backward times (and optionally one training step).
    Bench(bench::BenchArgs),
    /// Trains a model on an image folder or the built-in synthetic faces.
    Train(train::TrainArgs),
    /// Accuracy, precision, recall, F1, AUC and the confusion matrix of a model on a folder.
    Evaluate(evaluate::EvaluateArgs),
    /// Top classes per image (or per item of a preprocessed .npy batch).
    Predict(predict::PredictArgs),
    /// Saves one layer's output for an image (or a preprocessed .npy batch) as .npy.
    Activations(activations::ActivationsArgs),
    /// Saliency, Grad-CAM and other maps per image: PNG overlay, .npy map and faithfulness scores.
    Explain(explain::ExplainArgs),
    /// Activation maximisation: an image that maximises a weighted mix of classes.
    Dream(dream::DreamArgs),
    /// Every unit of a layer: its feature visualisation and its top patches from a folder.
    Microscope(microscope::MicroscopeArgs),
}

/// What the command line asks for: `Ok(Some(command))`, or `Ok(None)` for the window (which
/// `main` opens: this module never reaches into the app). `Err(code)` when clap has already
/// printed help, the version or a usage error and the process should end with `code`.
pub fn parse() -> Result<Option<Command>, i32> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli.command),
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2)
            let _ = e.print();
            Err(e.exit_code())
        }
    }
}

/// Runs one subcommand under the instruction-set cap `simd` (settled by the caller before any
/// work: a bad `CONVSCOPE_SIMD` stops a command); returns the process exit code.
pub fn run(
    command: Command,
    simd: Result<crate::engine::simd::Level, crate::engine::simd::LevelError>,
) -> i32 {
    if let Err(e) = simd {
        eprintln!("convscope: {e}.");
        return 1;
    }
    let result = match command {
        Command::Summary(args) => summary::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Evaluate(args) => evaluate::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Activations(args) => activations::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Dream(args) => dream::run(&args),
        Command::Microscope(args) => microscope::run(&args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("convscope: {e}");
            1
        }
    }
}
