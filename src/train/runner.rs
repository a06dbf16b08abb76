//! The worker thread: owns its model and data, trains, and sends [`TrainEvent`]s over an mpsc
//! channel; the caller polls with `try_recv` (a UI) or blocks on `recv` (the command line).

use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::thread::JoinHandle;

use super::config::TrainConfig;
use super::data::TrainData;
use super::events::{Control, TrainEvent};
use super::trainer::fit;
use super::{TrainError, TrainResult};
use crate::models::Model;

/// A running (or finished) training job.
#[derive(Debug)]
pub struct TrainHandle {
    pub events: Receiver<TrainEvent>,
    pub control: Control,
    thread: Option<JoinHandle<Model>>,
}

impl TrainHandle {
    /// The next event if one is waiting; `Err(Disconnected)` once the worker is gone.
    pub fn try_recv(&self) -> Result<TrainEvent, TryRecvError> {
        self.events.try_recv()
    }

    /// Waits for the worker and returns the model as training left it.
    pub fn join(mut self) -> TrainResult<Model> {
        let thread = self
            .thread
            .take()
            .ok_or_else(|| TrainError::failed("the training thread was already joined"))?;
        thread
            .join()
            .map_err(|_| TrainError::failed("the training thread panicked"))
    }
}

/// Starts training on a thread named `convscope-train`. With `threads`, the ops run on a rayon
/// pool of that size (the caller's thread is never one of its workers).
pub fn spawn(
    mut model: Model,
    data: TrainData,
    cfg: TrainConfig,
    threads: Option<usize>,
) -> TrainResult<TrainHandle> {
    cfg.validate()?;
    let pool = match threads {
        Some(0) => return Err(TrainError::invalid("--threads must be at least 1")),
        Some(t) => Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .thread_name(|i| format!("convscope-train-{i}"))
                .build()
                .map_err(|e| TrainError::failed(format!("cannot start {t} threads: {e}")))?,
        ),
        None => None,
    };
    let (tx, rx) = channel();
    let control = Control::new();
    let worker_control = control.clone();
    let thread = std::thread::Builder::new()
        .name("convscope-train".into())
        .spawn(move || {
            let mut emit = |e: TrainEvent| {
                let _ = tx.send(e); // the receiver may be gone: keep training anyway
            };
            let mut job = || fit(&mut model, &data, &cfg, &worker_control, &mut emit);
            let result = match &pool {
                Some(p) => p.install(job),
                None => job(),
            };
            let _ = tx.send(match result {
                Ok(summary) => TrainEvent::Done(Box::new(summary)),
                Err(e) => TrainEvent::Failed(e.to_string()),
            });
            model
        })
        .map_err(|e| TrainError::failed(format!("cannot start the training thread: {e}")))?;
    Ok(TrainHandle {
        events: rx,
        control,
        thread: Some(thread),
    })
}
