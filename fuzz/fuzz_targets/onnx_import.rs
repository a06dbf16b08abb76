//! Fuzzes the ONNX importer: arbitrary bytes must give a model or an `ImportError`, never a
//! panic, an abort or an absurd allocation (run with `-malloc_limit_mb`, see fuzz/README.md).
//! Imports that succeed are also validated by `Graph::from_def` (shape inference), which must
//! accept or reject them cleanly too.

#![no_main]

use convscope::engine::Graph;
use convscope::models::onnx::import_onnx_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // No base directory: external-data references must be refused, not read from disk.
    if let Ok(model) = import_onnx_bytes(data, None) {
        let _ = Graph::from_def(model.def);
    }
});
