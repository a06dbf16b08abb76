//! One f32 vector type per level, for kernels that keep a tile of accumulators in registers.
//!
//! A register-tile kernel is written once, generic over [`F32Vec`], and instantiated inside a
//! function compiled with the level's target features (every method is `#[inline(always)]`,
//! so each intrinsic lands in that function and becomes one instruction). [`Portable`] is four
//! plain floats with a separate multiply and add: the compiler vectorises it with the
//! baseline's SSE2 (or NEON) and never calls libm's `fmaf`.

/// A vector of `LANES` f32 lanes.
///
/// # Safety
/// The methods use the level's instructions: call them only from code compiled for the level
/// (a function with its target features) on a CPU that has it, with pointers valid for
/// `LANES` floats.
pub trait F32Vec: Copy {
    const LANES: usize;
    /// # Safety
    /// See the trait.
    unsafe fn zero() -> Self;
    /// # Safety
    /// See the trait.
    unsafe fn splat(v: f32) -> Self;
    /// # Safety
    /// See the trait.
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// See the trait.
    unsafe fn store(self, p: *mut f32);
    /// `self · b + c`, fused where the level has FMA.
    ///
    /// # Safety
    /// See the trait.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// Lane-wise maximum (`other` where either is NaN, as `_mm_max_ps`).
    ///
    /// # Safety
    /// See the trait.
    unsafe fn max(self, other: Self) -> Self;
    /// Lane-wise minimum (`other` where either is NaN).
    ///
    /// # Safety
    /// See the trait.
    unsafe fn min(self, other: Self) -> Self;
    /// Σ lanes.
    ///
    /// # Safety
    /// See the trait.
    unsafe fn sum(self) -> f32;
}

/// Four floats in plain arithmetic: the portable level.
#[derive(Clone, Copy, Debug)]
pub struct Portable([f32; 4]);

impl F32Vec for Portable {
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 4])
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Portable([v; 4])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller passes a pointer valid for 4 floats.
        Portable(unsafe { p.cast::<[f32; 4]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller passes a pointer valid for 4 floats.
        unsafe { p.cast::<[f32; 4]>().write_unaligned(self.0) }
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // a multiply and an add, never `f32::mul_add` (a libm call without FMA)
        Portable(std::array::from_fn(|i| self.0[i] * b.0[i] + c.0[i]))
    }
    #[inline(always)]
    unsafe fn max(self, other: Self) -> Self {
        // `if a > b { a } else { b }` is SSE's maxps: `other` when either is NaN
        Portable(std::array::from_fn(|i| {
            if self.0[i] > other.0[i] {
                self.0[i]
            } else {
                other.0[i]
            }
        }))
    }
    #[inline(always)]
    unsafe fn min(self, other: Self) -> Self {
        Portable(std::array::from_fn(|i| {
            if self.0[i] < other.0[i] {
                self.0[i]
            } else {
                other.0[i]
            }
        }))
    }
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        (self.0[0] + self.0[2]) + (self.0[1] + self.0[3])
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::F32Vec;

    /// Eight lanes of AVX2 with FMA.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx2(__m256);

    // SAFETY (every method): the trait's contract — the caller is compiled for AVX2 + FMA and
    // passes pointers valid for 8 floats.
    impl F32Vec for Avx2 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx2(unsafe { _mm256_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Avx2(unsafe { _mm256_set1_ps(v) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx2(unsafe { _mm256_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm256_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            Avx2(unsafe { _mm256_fmadd_ps(self.0, b.0, c.0) })
        }
        #[inline(always)]
        unsafe fn max(self, other: Self) -> Self {
            Avx2(unsafe { _mm256_max_ps(self.0, other.0) })
        }
        #[inline(always)]
        unsafe fn min(self, other: Self) -> Self {
            Avx2(unsafe { _mm256_min_ps(self.0, other.0) })
        }
        #[inline(always)]
        unsafe fn sum(self) -> f32 {
            unsafe {
                let q = _mm_add_ps(
                    _mm256_castps256_ps128(self.0),
                    _mm256_extractf128_ps(self.0, 1),
                );
                let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
                _mm_cvtss_f32(_mm_add_ss(d, _mm_shuffle_ps(d, d, 1)))
            }
        }
    }

    /// Sixteen lanes of AVX-512F.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx512(__m512);

    // SAFETY (every method): the trait's contract — the caller is compiled for AVX-512F and
    // passes pointers valid for 16 floats.
    impl F32Vec for Avx512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx512(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Avx512(unsafe { _mm512_set1_ps(v) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(unsafe { _mm512_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            Avx512(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
        }
        #[inline(always)]
        unsafe fn max(self, other: Self) -> Self {
            Avx512(unsafe { _mm512_max_ps(self.0, other.0) })
        }
        #[inline(always)]
        unsafe fn min(self, other: Self) -> Self {
            Avx512(unsafe { _mm512_min_ps(self.0, other.0) })
        }
        #[inline(always)]
        unsafe fn sum(self) -> f32 {
            unsafe { _mm512_reduce_add_ps(self.0) }
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    use super::F32Vec;

    /// Four lanes of aarch64 NEON with fused multiply-add.
    #[derive(Clone, Copy, Debug)]
    pub struct Neon(float32x4_t);

    // SAFETY (every method): NEON is the aarch64 baseline; pointers are valid for 4 floats.
    impl F32Vec for Neon {
        const LANES: usize = 4;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Neon(unsafe { vdupq_n_f32(0.0) })
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Neon(unsafe { vdupq_n_f32(v) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Neon(unsafe { vld1q_f32(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { vst1q_f32(p, self.0) }
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            Neon(unsafe { vfmaq_f32(c.0, self.0, b.0) })
        }
        #[inline(always)]
        unsafe fn max(self, other: Self) -> Self {
            // fmax returns the number when one lane is NaN, as f32::max does
            Neon(unsafe { vmaxnmq_f32(self.0, other.0) })
        }
        #[inline(always)]
        unsafe fn min(self, other: Self) -> Self {
            Neon(unsafe { vminnmq_f32(self.0, other.0) })
        }
        #[inline(always)]
        unsafe fn sum(self) -> f32 {
            unsafe { vaddvq_f32(self.0) }
        }
    }
}
