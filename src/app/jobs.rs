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

/// The shortest time between two repaints that workers ask for, by what draws the window: 20
/// frames a second on a GPU; 4 under a software rasteriser (no GPU, a VM, Xvfb), where one
/// full-window frame of the training panel costs ~40 ms of CPU even through OpenGL (0.29 s
/// through Vulkan/lavapipe): at 10 a second the window took half a core from the engine on a
/// 2-core machine (tools/bench_window_training.sh, BENCHMARKS.md sessions 7 and 8).
pub const GPU_REPAINT_INTERVAL: Duration = Duration::from_millis(50);
pub const SOFTWARE_REPAINT_INTERVAL: Duration = Duration::from_millis(250);

/// Milliseconds between worker-requested repaints: [`GPU_REPAINT_INTERVAL`] or
/// [`SOFTWARE_REPAINT_INTERVAL`] once the window knows what draws it (100 until then), or
/// `CONVSCOPE_REPAINT_MS` (for displays slower still; tools/bench_window_training.sh compares
/// settings).
static REPAINT_INTERVAL_MS: AtomicU64 = AtomicU64::new(100);

/// The last wake-up any worker asked for (ms on [`clock_ms`]; it lies ahead while one is
/// scheduled; `u64::MAX` for never). One for all jobs: a training run and its probe's Grad-CAM
/// together still cost at most one frame per interval.
static LAST_REPAINT_MS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Sets the interval for the renderer found at start-up (`CONVSCOPE_REPAINT_MS`, read by
/// [`repaint_interval_ms`], still wins).
pub fn set_software_rendering(software: bool) {
    let interval = if software {
        SOFTWARE_REPAINT_INTERVAL
    } else {
        GPU_REPAINT_INTERVAL
    };
    let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX / 2);
    REPAINT_INTERVAL_MS.store(ms, Ordering::Relaxed);
}

/// `CONVSCOPE_REPAINT_MS` (read once), else the interval for the renderer.
fn repaint_interval_ms() -> u64 {
    static FROM_ENV: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let from_env = FROM_ENV.get_or_init(|| {
        std::env::var("CONVSCOPE_REPAINT_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    from_env.unwrap_or_else(|| REPAINT_INTERVAL_MS.load(Ordering::Relaxed))
}

/// When the UI should wake for a message sent at `now`, given the last wake-up workers asked
/// for (`u64::MAX`: none yet; it may lie in the future when one is already scheduled) and the
/// interval: at once if the last is at least an interval old, else that wake-up itself if it is
/// still ahead (the message rides on it), else one interval after it. Wake-ups are thus at least
/// an interval apart however messages arrive (egui keeps the earliest pending request).
fn next_wake(last: u64, now: u64, interval: u64) -> u64 {
    if last == u64::MAX || now >= last.saturating_add(interval) {
        now
    } else if last > now {
        last
    } else {
        last + interval
    }
}

/// Milliseconds since the first call (the process's repaint clock).
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
}

/// The worker's side: sends messages and wakes the UI.
pub struct Reporter<T> {
    tx: Sender<T>,
    ctx: egui::Context,
    cancel: Arc<AtomicBool>,
}

impl<T> Reporter<T> {
    /// Sends one message and wakes the UI on the pace of [`next_wake`]. A closed window is not
    /// an error.
    pub fn send(&self, message: T) {
        let _ = self.tx.send(message);
        let now = clock_ms();
        let last = LAST_REPAINT_MS.load(Ordering::Relaxed);
        let wake = next_wake(last, now, repaint_interval_ms());
        LAST_REPAINT_MS.store(wake, Ordering::Relaxed);
        if wake <= now {
            self.ctx.request_repaint();
        } else {
            self.ctx
                .request_repaint_after(Duration::from_millis(wake - now));
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

#[cfg(test)]
mod tests {
    use super::next_wake;

    /// Messages every `every` ms for `until` ms: the times the UI is woken.
    fn wakes(every: u64, until: u64, interval: u64) -> Vec<u64> {
        let mut last = u64::MAX;
        let mut out: Vec<u64> = Vec::new();
        for now in (0..until).step_by(every as usize) {
            last = next_wake(last, now, interval);
            if out.last() != Some(&last) {
                out.push(last);
            }
        }
        out
    }

    #[test]
    fn wake_ups_are_an_interval_apart_whatever_the_message_rate() {
        for every in [1, 7, 40, 170, 260, 600] {
            let w = wakes(every, 5_000, 250);
            assert!(
                w.windows(2).all(|p| p[1] - p[0] >= 250),
                "messages every {every} ms woke the UI at {w:?}"
            );
            // and no message waits more than an interval past its arrival
            let expected_at_least = 5_000 / every.max(250) - 1;
            assert!(w.len() as u64 >= expected_at_least, "{every} ms: {w:?}");
        }
    }

    #[test]
    fn a_quiet_spell_wakes_at_once() {
        assert_eq!(next_wake(u64::MAX, 5, 250), 5);
        assert_eq!(next_wake(100, 1_000, 250), 1_000);
        // within the interval of the last wake-up: one interval after it
        assert_eq!(next_wake(100, 200, 250), 350);
        // a wake-up already scheduled ahead carries the message
        assert_eq!(next_wake(350, 300, 250), 350);
    }
}
