//! How a batch is spread over threads: whole items per thread for batches of two or more, a
//! single item's work split inside the kernels otherwise.

use rayon::prelude::*;

use super::FusedActivation;
use crate::engine::gemm::Parallelism;

/// How many batch chunks run side by side, and how inner loops parallelise: one chunk per
/// thread when the batch can feed them all, else one chunk that lets GEMM use the threads.
pub(super) fn batch_plan(n: usize) -> (usize, Parallelism) {
    let threads = rayon::current_num_threads();
    if n >= 2 && threads >= 2 {
        (n.min(threads), Parallelism::Sequential)
    } else {
        (1, Parallelism::Rayon)
    }
}

/// What every forward kernel reads: x `(n, c_in, h, w)`, w `(c_out, cg, kh, kw)`, the bias
/// `(c_out)` and the activation fused into the output.
#[derive(Clone, Copy)]
pub(super) struct ForwardOperands<'a> {
    pub(super) x: &'a [f32],
    pub(super) w: &'a [f32],
    pub(super) b: Option<&'a [f32]>,
    pub(super) act: Option<FusedActivation>,
}

/// Items per chunk so that `chunks` chunks cover `n` items.
pub(super) fn items_per_chunk(n: usize, chunks: usize) -> usize {
    n.div_ceil(chunks.max(1)).max(1)
}

/// How [`for_item_chunks`] cuts a batch: `chunks` runs of items, items of `in_item` input and
/// `out_item` output floats, `scratch_len` floats of scratch per run.
#[derive(Clone, Copy, Debug)]
pub(super) struct ItemChunks {
    pub(super) chunks: usize,
    pub(super) in_item: usize,
    pub(super) out_item: usize,
    pub(super) scratch_len: usize,
}

/// Runs `per_item(in_item, out_item, scratch)` for every item of `inp` and `out`, the items
/// split into consecutive runs in parallel, each run with its own scratch (reused across its
/// items).
pub(super) fn for_item_chunks(
    cut: ItemChunks,
    inp: &[f32],
    out: &mut [f32],
    per_item: impl Fn(&[f32], &mut [f32], &mut [f32]) + Sync,
) {
    let n = out.len() / cut.out_item.max(1);
    let per = items_per_chunk(n, cut.chunks);
    out.par_chunks_mut(per * cut.out_item)
        .enumerate()
        .for_each(|(ci, out_chunk)| {
            let mut scratch = vec![0.0f32; cut.scratch_len];
            for (i, out_it) in out_chunk.chunks_exact_mut(cut.out_item).enumerate() {
                let in_it = &inp[(ci * per + i) * cut.in_item..][..cut.in_item];
                per_item(in_it, out_it, &mut scratch);
            }
        });
}
