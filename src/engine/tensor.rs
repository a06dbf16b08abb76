//! The engine's tensor: a dense, contiguous, row-major (C order) `f32` array.
//!
//! Images travel as NCHW: `[batch, channels, height, width]`. The type keeps its buffer as a
//! plain `Vec<f32>` so that kernels work on slices without layout checks; `view()` and
//! `from_array()` bridge to `ndarray` for code that prefers it.

use crate::engine::simd;
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::OnceLock;

use super::error::OpError;

/// Elements per parallel task of `add_assign` (the graph's gradient sums reach megabytes:
/// ResNet50's residual joins add ~20 MB per backward pass).
const ADD_CHUNK: usize = 1 << 15;

simd::kernel! {
    /// `a[i] += b[i]` over equal lengths, compiled per instruction-set level.
    fn add_into(a: &mut [f32], b: &[f32]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
}

simd::kernel! {
    /// True when no element is NaN or infinite. `v · 0` is ±0 for finite v and NaN otherwise, so
    /// sums of it in independent lanes vectorise where a short-circuiting `any` does not: the
    /// trainer checks every gradient and parameter (1.1 M floats for the smile CNN) each step.
    fn all_finite(v: &[f32]) -> bool {
        const LANES: usize = 16;
        let mut acc = [0.0f32; LANES];
        let chunks = v.chunks_exact(LANES);
        let tail = chunks.remainder();
        for c in chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += x * 0.0;
            }
        }
        acc.iter().all(|&a| a == 0.0) && tail.iter().all(|x| x.is_finite())
    }
}

/// The largest number of elements one tensor may hold (2^32, i.e. 16 GiB of f32).
/// Shapes beyond this are refused before any allocation: they come from hostile or broken files.
pub const MAX_ELEMENTS: usize = 1 << 32;

#[derive(Default)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
    /// Kernels' prepared forms of `data` ([`Tensor::prepared`]), one slot per [`Prepared`]
    /// kind, each made on first use and all dropped by every change through `&mut self`; a
    /// clone starts without them.
    prepared: [OnceLock<Vec<f32>>; Prepared::COUNT],
}

/// What a tensor's prepared form is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// A `(c_out, c_in, 3, 3)` convolution weight's Winograd F(2x2, 3x3) transform: inference
    /// passes would otherwise transform the same weights on every call (VGG16: 14.7 M weights
    /// read and 26 M written per pass, and again for d_x).
    Winograd2x2,
    /// The same transform laid out for d_x ([`Prepared::Winograd2x2`] of the kernels turned by
    /// 180° with their channel axes swapped): the GEMM then reads a plain row-major operand
    /// where the transposed view of the forward's took VGG16's 512→512 @28² d_x 1.5–2x the
    /// forward's time at AVX2 (BENCHMARKS.md, session 13).
    Winograd2x2Turned,
}

impl Prepared {
    const COUNT: usize = 2;

    fn slot(self) -> usize {
        match self {
            Prepared::Winograd2x2 => 0,
            Prepared::Winograd2x2Turned => 1,
        }
    }
}

impl Clone for Tensor {
    fn clone(&self) -> Self {
        Self::from_parts(self.shape.clone(), self.data.clone())
    }
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.data == other.data
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .field("data", &self.data)
            .finish()
    }
}

/// Number of elements of a shape, or `None` when it overflows or exceeds [`MAX_ELEMENTS`].
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    let mut n: usize = 1;
    for &d in shape {
        n = n.checked_mul(d)?;
    }
    (n <= MAX_ELEMENTS).then_some(n)
}

/// Human-readable shape, e.g. `[1, 3, 224, 224]`.
pub fn fmt_shape(shape: &[usize]) -> String {
    format!("{shape:?}")
}

impl Tensor {
    /// The fields, lengths already checked by the caller.
    fn from_parts(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self {
            shape,
            data,
            prepared: Default::default(),
        }
    }

    /// The data's prepared form `kind`, made by `make` from the data on first use and kept
    /// until the tensor changes. `make` runs outside the cell's lock (it may use rayon, whose
    /// work stealing could bring this same call back onto a thread waiting for the lock); two
    /// first calls at once both make it and the first stored is kept.
    pub fn prepared(&self, kind: Prepared, make: impl Fn(&[f32]) -> Vec<f32>) -> Cow<'_, [f32]> {
        let cell = &self.prepared[kind.slot()];
        if cell.get().is_none() {
            // a lost race only drops the second copy
            let _ = cell.set(make(&self.data));
        }
        match cell.get() {
            Some(data) => Cow::Borrowed(data),
            None => Cow::Owned(make(&self.data)),
        }
    }

    /// Drops every prepared form: they were made from the old data.
    fn forget_prepared(&mut self) {
        for cell in &mut self.prepared {
            cell.take();
        }
    }

    /// A tensor from a shape and its row-major data; the lengths must agree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, OpError> {
        let n = checked_numel(&shape)
            .ok_or_else(|| OpError(format!("shape {shape:?} is too large")))?;
        if n != data.len() {
            return Err(OpError(format!(
                "shape {shape:?} needs {n} elements but {} were given",
                data.len()
            )));
        }
        Ok(Self::from_parts(shape, data))
    }

    /// Zeros of a shape. Panics only on shapes over [`MAX_ELEMENTS`], which callers derive from
    /// validated graphs; use [`Tensor::try_zeros`] for shapes from outside.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, 0.0)
    }

    pub fn try_zeros(shape: &[usize]) -> Result<Self, OpError> {
        let n =
            checked_numel(shape).ok_or_else(|| OpError(format!("shape {shape:?} is too large")))?;
        Ok(Self::from_parts(shape.to_vec(), vec![0.0; n]))
    }

    pub fn full(shape: &[usize], value: f32) -> Self {
        let n: usize = shape.iter().product();
        Self::from_parts(shape.to_vec(), vec![value; n])
    }

    /// A rank-0 tensor holding one number.
    pub fn scalar(value: f32) -> Self {
        Self::from_parts(vec![], vec![value])
    }

    /// Copies an ndarray array (any layout) into a contiguous tensor.
    pub fn from_array(a: ArrayD<f32>) -> Self {
        let shape = a.shape().to_vec();
        let data = if a.is_standard_layout() {
            a.into_raw_vec_and_offset().0
        } else {
            a.iter().copied().collect()
        };
        Self::from_parts(shape, data)
    }

    pub fn view(&self) -> ArrayViewD<'_, f32> {
        // The invariant `shape.product() == data.len()` holds for every constructor.
        ArrayViewD::from_shape(IxDyn(&self.shape), &self.data)
            .unwrap_or_else(|_| unreachable!("tensor invariant: shape matches data"))
    }

    pub fn to_array(&self) -> ArrayD<f32> {
        self.view().to_owned()
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        self.forget_prepared();
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The same data under another shape with the same number of elements.
    pub fn reshaped(self, shape: Vec<usize>) -> Result<Self, OpError> {
        Self::new(shape, self.data)
    }

    /// `[n, c, h, w]` of a rank-4 tensor, or an error naming the actual shape.
    pub fn dims4(&self) -> Result<[usize; 4], OpError> {
        dims4(&self.shape)
    }

    /// Element-wise map into a new tensor of the same shape.
    pub fn map(&self, f: impl Fn(f32) -> f32) -> Self {
        Self::from_parts(
            self.shape.clone(),
            self.data.iter().map(|&v| f(v)).collect(),
        )
    }

    /// `self += other` element-wise; shapes must be equal.
    pub fn add_assign(&mut self, other: &Tensor) -> Result<(), OpError> {
        self.forget_prepared();
        if self.shape != other.shape {
            return Err(OpError(format!(
                "cannot add shapes {:?} and {:?}",
                self.shape, other.shape
            )));
        }
        // element by element, so the result does not depend on the chunking
        self.data
            .par_chunks_mut(ADD_CHUNK)
            .zip(other.data.par_chunks(ADD_CHUNK))
            .for_each(|(a, b)| add_into(a, b));
        Ok(())
    }

    /// True when any element is NaN or infinite.
    pub fn has_non_finite(&self) -> bool {
        !all_finite(&self.data)
    }

    /// Largest absolute element (0 for an empty tensor).
    pub fn max_abs(&self) -> f32 {
        self.data.iter().fold(0.0f32, |m, v| m.max(v.abs()))
    }
}

/// `[n, c, h, w]` of a rank-4 shape.
pub fn dims4(shape: &[usize]) -> Result<[usize; 4], OpError> {
    match shape {
        &[n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(OpError(format!(
            "expected a 4-D tensor [N, C, H, W], got shape {shape:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prepared_form_is_kept_until_the_data_changes() {
        let mut t = Tensor::new(vec![3], vec![1.0, 2.0, 3.0]).unwrap_or_default();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let double = |d: &[f32]| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            d.iter().map(|v| 2.0 * v).collect()
        };
        assert_eq!(
            &*t.prepared(Prepared::Winograd2x2, double),
            &[2.0, 4.0, 6.0]
        );
        assert_eq!(
            &*t.prepared(Prepared::Winograd2x2, double),
            &[2.0, 4.0, 6.0]
        );
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "made twice"
        );
        assert!(
            t.clone().prepared.iter().all(|c| c.get().is_none()),
            "a clone shares the prepared form"
        );
        t.data_mut()[0] = 5.0;
        assert_eq!(
            &*t.prepared(Prepared::Winograd2x2, double),
            &[10.0, 4.0, 6.0]
        );
        let other = Tensor::new(vec![3], vec![1.0, 1.0, 1.0]).unwrap_or_default();
        t.add_assign(&other).unwrap_or_default();
        assert_eq!(
            &*t.prepared(Prepared::Winograd2x2, double),
            &[12.0, 6.0, 8.0]
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 3);
        // kinds have their own slots: a second kind neither evicts nor is mistaken for the first
        let triple = |d: &[f32]| -> Vec<f32> { d.iter().map(|v| 3.0 * v).collect() };
        assert_eq!(
            &*t.prepared(Prepared::Winograd2x2Turned, triple),
            &[18.0, 9.0, 12.0]
        );
        assert_eq!(
            &*t.prepared(Prepared::Winograd2x2, double),
            &[12.0, 6.0, 8.0]
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 3);
        t.data_mut()[0] = 0.0;
        assert_eq!(
            &*t.prepared(Prepared::Winograd2x2Turned, triple),
            &[0.0, 9.0, 12.0]
        );
    }

    /// Every position (in the vector lanes and in the tail) and every kind of non-finite
    /// value is found; extreme finite values (max, subnormal, -0) are not flagged.
    /// At every instruction-set level of this CPU.
    #[test]
    fn non_finite_values_are_found_anywhere() {
        simd::for_each_level(2, |_| non_finite_values_are_found_anywhere_here());
    }

    fn non_finite_values_are_found_anywhere_here() {
        let finite = [f32::MAX, f32::MIN, f32::MIN_POSITIVE / 2.0, -0.0, 1.5];
        for len in [1usize, 15, 16, 17, 40] {
            let base: Vec<f32> = (0..len).map(|i| finite[i % finite.len()]).collect();
            let t = Tensor::new(vec![len], base.clone()).unwrap_or_default();
            assert!(!t.has_non_finite(), "len {len}: finite values flagged");
            for pos in 0..len {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut v = base.clone();
                    v[pos] = bad;
                    let t = Tensor::new(vec![len], v).unwrap_or_default();
                    assert!(t.has_non_finite(), "len {len}: {bad} at {pos} missed");
                }
            }
        }
    }

    #[test]
    fn new_rejects_mismatched_lengths() {
        assert!(Tensor::new(vec![2, 3], vec![0.0; 5]).is_err());
        assert!(Tensor::new(vec![2, 3], vec![0.0; 6]).is_ok());
    }

    #[test]
    fn huge_shapes_are_refused_before_allocation() {
        assert!(Tensor::try_zeros(&[1 << 20, 1 << 20]).is_err());
        assert!(checked_numel(&[usize::MAX, 2]).is_none());
    }

    #[test]
    fn ndarray_round_trip_keeps_row_major_order() {
        let t = Tensor::new(vec![2, 3], (0..6).map(|v| v as f32).collect())
            .unwrap_or_else(|e| panic!("{e}"));
        let a = t.to_array();
        assert_eq!(a[[1, 0]], 3.0);
        let back = Tensor::from_array(a.reversed_axes());
        assert_eq!(back.shape(), &[3, 2]);
        assert_eq!(back.data(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}
