//! The headless subcommands (contract in DESIGN.md). Each prints results to stdout and, on
//! failure, one sentence to stderr with a non-zero exit code; nothing panics.

pub mod activations;
pub mod bench;
pub mod dream;
pub mod evaluate;
pub mod explain;
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

/// The end of a command over many inputs: `Ok` when all went well, else one error naming how
/// many inputs failed and which (each was already reported on its own as it failed).
pub fn finish_inputs(
    source: &resolve::ModelSource,
    failed: &[String],
    total: usize,
    what: &str,
) -> CliResult<()> {
    if failed.is_empty() {
        return Ok(());
    }
    Err(CliError(format!(
        "{} of {total} inputs could not be {what} by {} ({})",
        failed.len(),
        resolve::display_name(source),
        failed.join(", ")
    )))
}

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
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2)
            let _ = e.print();
            return e.exit_code();
        }
    };
    // The instruction-set cap applies to every kernel of the process, so it is settled before
    // any work: a bad CONVSCOPE_SIMD stops a command; the window shows it and runs at the best
    // level instead.
    let simd = crate::engine::simd::init_from_env();
    if let (Err(e), Some(_)) = (&simd, &cli.command) {
        eprintln!("convscope: {e}.");
        return 1;
    }
    let result = match cli.command {
        Some(Command::Summary(args)) => summary::run(&args),
        Some(Command::Bench(args)) => bench::run(&args),
        Some(Command::Train(args)) => train::run(&args),
        Some(Command::Evaluate(args)) => evaluate::run(&args),
        Some(Command::Predict(args)) => predict::run(&args),
        Some(Command::Activations(args)) => activations::run(&args),
        Some(Command::Explain(args)) => explain::run(&args),
        Some(Command::Dream(args)) => dream::run(&args),
        #[cfg(feature = "gui")]
        None => crate::app::run(simd.err().map(|e| e.to_string())).map_err(CliError),
        #[cfg(not(feature = "gui"))]
        None => Err(CliError(
            "this convscope was built without the window (feature `gui`); run a subcommand, \
             see --help"
                .to_string(),
        )),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("convscope: {e}");
            1
        }
    }
}
