//! Frame times: how long each frame's UI code and painting took (eframe's `cpu_usage`, which
//! excludes waiting for the display), kept for a rolling median / 99th percentile overlay and
//! optionally written to a file (`CONVSCOPE_FRAME_LOG`) for the frame-time benchmark.

use std::collections::VecDeque;
use std::io::Write;

const WINDOW: usize = 600;

#[derive(Default)]
pub struct FrameStats {
    times_ms: VecDeque<f32>,
    log: Option<std::io::BufWriter<std::fs::File>>,
}

impl FrameStats {
    /// Logging to `path` when given (one frame time in milliseconds per line).
    pub fn with_log(path: Option<std::path::PathBuf>) -> Self {
        let log = path
            .and_then(|p| std::fs::File::create(p).ok())
            .map(std::io::BufWriter::new);
        Self {
            times_ms: VecDeque::new(),
            log,
        }
    }

    pub fn record(&mut self, seconds: f32) {
        let ms = seconds * 1000.0;
        if self.times_ms.len() == WINDOW {
            self.times_ms.pop_front();
        }
        self.times_ms.push_back(ms);
        if let Some(log) = &mut self.log {
            let _ = writeln!(log, "{ms:.3}");
            let _ = log.flush();
        }
    }

    /// `(median, p99)` in milliseconds over the last frames.
    pub fn summary(&self) -> Option<(f32, f32)> {
        if self.times_ms.is_empty() {
            return None;
        }
        let mut v: Vec<f32> = self.times_ms.iter().copied().collect();
        v.sort_by(f32::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }
}
