//! Long jobs on named worker threads that report over channels (DESIGN.md, "Threading in the
//! app"). The UI thread only ever calls `drain`, which never blocks: it takes what has arrived
//! within a small time budget and asks for another frame if more is waiting.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

/// How long one frame may spend taking messages off a job's channel (rerun's habit: ~10 ms).
pub const DRAIN_BUDGET: Duration = Duration::from_millis(8);

/// The worker's side: sends messages and wakes the UI.
pub struct Reporter<T> {
    tx: Sender<T>,
    ctx: egui::Context,
    cancel: Arc<AtomicBool>,
}

impl<T> Reporter<T> {
    /// Sends one message and asks the UI for a repaint. A closed window is not an error.
    pub fn send(&self, message: T) {
        let _ = self.tx.send(message);
        self.ctx.request_repaint();
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The cancel flag, for engine functions that check it between batches.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }
}

/// The UI's side of one running (or finished) job.
pub struct Job<T> {
    rx: Receiver<T>,
    cancel: Arc<AtomicBool>,
    panicked: Arc<AtomicBool>,
    finished: bool,
}

impl<T: Send + 'static> Job<T> {
    /// Starts `work` on a thread named `convscope-<name>`.
    pub fn spawn(
        name: &str,
        ctx: &egui::Context,
        work: impl FnOnce(&Reporter<T>) + Send + 'static,
    ) -> Result<Self, String> {
        let (tx, rx) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let panicked = Arc::new(AtomicBool::new(false));
        let reporter = Reporter {
            tx,
            ctx: ctx.clone(),
            cancel: cancel.clone(),
        };
        let flag = panicked.clone();
        std::thread::Builder::new()
            .name(format!("convscope-{name}"))
            .spawn(move || {
                // A bug in a worker must not take the window down: report it instead.
                if catch_unwind(AssertUnwindSafe(|| work(&reporter))).is_err() {
                    flag.store(true, Ordering::Relaxed);
                }
                reporter.ctx.request_repaint();
            })
            .map_err(|e| format!("cannot start a worker thread for {name}: {e}"))?;
        Ok(Self {
            rx,
            cancel,
            panicked,
            finished: false,
        })
    }
}

impl<T> Job<T> {
    /// Messages that arrived, within [`DRAIN_BUDGET`]; asks for another frame when it ran out.
    pub fn drain(&mut self, ctx: &egui::Context) -> Vec<T> {
        let start = Instant::now();
        let mut out = Vec::new();
        loop {
            if start.elapsed() > DRAIN_BUDGET {
                ctx.request_repaint();
                break;
            }
            match self.rx.try_recv() {
                Ok(m) => out.push(m),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.finished = true;
                    break;
                }
            }
        }
        out
    }

    /// Asks the worker to stop at its next check.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// The worker has ended and every message has been drained.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The worker ended by panicking (a bug): the caller shows a message.
    pub fn panicked(&self) -> bool {
        self.panicked.load(Ordering::Relaxed)
    }
}

impl<T> Drop for Job<T> {
    /// A job nobody listens to any more stops at its next check.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}
