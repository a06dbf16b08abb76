//! Scratch buffers kept per thread between calls.
//!
//! A fresh multi-MiB buffer per call is memory the kernel must map and zero again (page
//! faults): ResNet50's 3x3 layers were slower with Winograd than without in a whole forward
//! pass, though faster in isolation, until its scratch was kept (BENCHMARKS.md "Session 6").

use std::cell::Cell;
use std::thread::LocalKey;

/// A buffer of `len` floats taken from a thread-local spare (contents unspecified: callers
/// write every element they read) and given back when dropped. A call that finds the spare
/// taken (a nested call on the same thread, by rayon's work stealing) allocates its own. The
/// spare keeps the largest size used so far on its thread.
pub(super) struct Spare {
    pub(super) buf: Vec<f32>,
    home: &'static LocalKey<Cell<Vec<f32>>>,
}

impl Spare {
    pub(super) fn take(home: &'static LocalKey<Cell<Vec<f32>>>, len: usize) -> Self {
        let mut buf = home.with(Cell::take);
        buf.resize(len, 0.0);
        Self { buf, home }
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // `with` fails only while the thread's locals are being destroyed: then let it go
        let _ = self.home.try_with(|c| c.set(buf));
    }
}
