//! Long jobs on named worker threads that report over channels (DESIGN.md, "Threading in the
//! app"). The UI thread only ever calls `drain`, which never blocks: it takes what has arrived
//! within a small time budget and asks for another frame if more is waiting.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

/// How long one frame may spend taking messages off a job's channel (rerun's habit: ~10 ms).
pub const DRAIN_BUDGET: Duration = Duration::from_millis(8);

/// The shortest time between two repaints a worker asks for: at most 10 frames a second while
/// a job runs. Under a software rasteriser (no GPU, Xvfb, llvmpipe) a full-window repaint of
/// the training panel costs tens of milliseconds of CPU: one per training batch took more than
/// a core from the engine, and at 20 a second the window still trained at 52–64 % of
/// `convscope train`'s images/s on 2 cores (tools/bench_window_training.sh).
pub const MIN_REPAINT_INTERVAL: Duration = Duration::from_millis(100);

/// [`MIN_REPAINT_INTERVAL`], or `CONVSCOPE_REPAINT_MS` milliseconds (for displays slower still;
/// tools/bench_window_training.sh compares settings).
fn min_repaint_interval() -> Duration {
    static INTERVAL: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *INTERVAL.get_or_init(|| {
        std::env::var("CONVSCOPE_REPAINT_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(MIN_REPAINT_INTERVAL, Duration::from_millis)
    })
}

/// The worker's side: sends messages and wakes the UI.
pub struct Reporter<T> {
    tx: Sender<T>,
    ctx: egui::Context,
    cancel: Arc<AtomicBool>,
    /// When this reporter last asked for an immediate repaint (ms since `born`), u64::MAX for
    /// never.
    last_repaint_ms: AtomicU64,
    born: Instant,
}

impl<T> Reporter<T> {
    /// Sends one message and wakes the UI: at once if the last wake-up is at least
    /// [`MIN_REPAINT_INTERVAL`] old, else at the end of that interval (egui keeps the earliest
    /// pending request, so a burst of messages costs one frame). A closed window is not an
    /// error.
    pub fn send(&self, message: T) {
        let _ = self.tx.send(message);
        let now = self.born.elapsed();
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_repaint_ms.load(Ordering::Relaxed);
        let min = u64::try_from(min_repaint_interval().as_millis()).unwrap_or(u64::MAX / 2);
        if last == u64::MAX || now_ms >= last.saturating_add(min) {
            self.last_repaint_ms.store(now_ms, Ordering::Relaxed);
            self.ctx.request_repaint();
        } else {
            let wait = Duration::from_millis(last + min - now_ms);
            self.ctx.request_repaint_after(wait);
        }
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
            last_repaint_ms: AtomicU64::new(u64::MAX),
            born: Instant::now(),
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
