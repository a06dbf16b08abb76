//! Instruction-set levels: which compiled copy of every hot kernel runs.
//!
//! Each hot kernel exists once in the source and is compiled once per level (by
//! [`kernel!`](crate::engine::simd::kernel) for loops the compiler vectorises, or by a generic
//! body over [`vector`](crate::engine::simd::vector) types for hand-written register tiles).
//! [`level`] picks the copy at run time: the best level the CPU has, capped for the whole
//! process by `CONVSCOPE_SIMD=avx512|avx2|neon|portable`, and for the threads of one rayon
//! pool by [`with_level`] (how the tests run every kernel at every level the machine has).
//!
//! | level      | CPUs                                   | compiled for                     |
//! |------------|----------------------------------------|----------------------------------|
//! | `avx512`   | Intel Skylake-SP and later, AMD Zen 4+ | AVX-512F/BW/VL/DQ, AVX2, FMA     |
//! | `avx2`     | x86-64-v3: Haswell+, AMD Zen 1–3       | AVX2, FMA                        |
//! | `neon`     | every aarch64 CPU (Apple, Graviton, Pi) | the aarch64 baseline (NEON)     |
//! | `portable` | anything                               | the target's baseline, no FMA    |
//!
//! The portable copies never call `f32::mul_add`: without the `fma` target feature each call
//! becomes a call into libm's software `fmaf` (67 % of a profile on an AVX2 laptop, issue 13).

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

pub mod vector;

/// An instruction-set level, from the least to the most capable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The target's baseline (SSE2 on x86-64): loops the compiler vectorises, no FMA.
    Portable,
    /// aarch64 Advanced SIMD (NEON), 4 lanes with fused multiply-add.
    Neon,
    /// x86-64-v3: AVX2 + FMA, 8 lanes.
    Avx2,
    /// AVX-512 (F, BW, VL, DQ) with AVX2 + FMA, 16 lanes.
    Avx512,
}

/// The environment variable that caps the level for the whole process.
pub const ENV_VAR: &str = "CONVSCOPE_SIMD";

/// Why a requested level cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    #[error("{ENV_VAR}={0:?} is not an instruction-set level (use avx512, avx2, neon or portable)")]
    Unknown(String),
    #[error("{ENV_VAR}={} asks for {}, which this CPU lacks (it has {})", .0.name(), .0.describe(), supported_names())]
    Unsupported(Level),
}

impl Level {
    /// Every level, least capable first.
    pub const ALL: [Level; 4] = [Level::Portable, Level::Neon, Level::Avx2, Level::Avx512];

    /// The name `CONVSCOPE_SIMD` and `bench --json` use.
    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Neon => "neon",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// The instruction sets, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Level::Portable => "the portable baseline",
            Level::Neon => "aarch64 NEON",
            Level::Avx2 => "AVX2 with FMA",
            Level::Avx512 => "AVX-512 (F, BW, VL, DQ)",
        }
    }

    /// Parses a level name (case and surrounding spaces ignored).
    pub fn parse(s: &str) -> Result<Level, LevelError> {
        let t = s.trim().to_ascii_lowercase();
        Level::ALL
            .into_iter()
            .find(|l| l.name() == t)
            .ok_or_else(|| LevelError::Unknown(s.to_string()))
    }

    /// Whether this CPU runs the level's code.
    pub fn is_supported(self) -> bool {
        match self {
            Level::Portable => true,
            #[cfg(target_arch = "aarch64")]
            Level::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                Level::Avx2.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The most capable level this CPU runs.
    pub fn best() -> Level {
        Level::ALL
            .into_iter()
            .rev()
            .find(|l| l.is_supported())
            .unwrap_or(Level::Portable)
    }

    /// Every level this CPU runs, least capable first.
    pub fn supported() -> Vec<Level> {
        Level::ALL
            .into_iter()
            .filter(|l| l.is_supported())
            .collect()
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(c: u8) -> Option<Level> {
        Level::ALL.get(usize::from(c).checked_sub(1)?).copied()
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn supported_names() -> String {
    Level::supported()
        .iter()
        .rev()
        .map(|l| l.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The process-wide level (`Level::code`), 0 until first read or set.
static PROCESS_LEVEL: AtomicU8 = AtomicU8::new(0);

thread_local! {
    /// A level for this thread only (the workers of a [`with_level`] pool), 0 for none.
    static THREAD_LEVEL: Cell<u8> = const { Cell::new(0) };
}

/// The level `CONVSCOPE_SIMD` asks for: `None` when it is unset or empty.
pub fn requested() -> Result<Option<Level>, LevelError> {
    match std::env::var(ENV_VAR) {
        Ok(v) if !v.trim().is_empty() => {
            let level = Level::parse(&v)?;
            if level.is_supported() {
                Ok(Some(level))
            } else {
                Err(LevelError::Unsupported(level))
            }
        }
        _ => Ok(None),
    }
}

/// Sets the process-wide level from `CONVSCOPE_SIMD` (the best level when it is unset) and
/// returns it. A bad value leaves the best level in force and is returned as the error: the
/// command line stops on it, the window shows it and goes on.
pub fn init_from_env() -> Result<Level, LevelError> {
    let (level, result) = match requested() {
        Ok(Some(l)) => (l, Ok(l)),
        Ok(None) => (Level::best(), Ok(Level::best())),
        Err(e) => (Level::best(), Err(e)),
    };
    PROCESS_LEVEL.store(level.code(), Ordering::Relaxed);
    result
}

/// Caps every kernel of the process at `level` from now on.
pub fn set_process_level(level: Level) -> Result<(), LevelError> {
    if !level.is_supported() {
        return Err(LevelError::Unsupported(level));
    }
    PROCESS_LEVEL.store(level.code(), Ordering::Relaxed);
    Ok(())
}

/// The level kernels run at on this thread: the thread's own (inside [`with_level`]), else the
/// process's (from `CONVSCOPE_SIMD` on first use, silently the best level if that is bad —
/// the command line and the window check it first with [`init_from_env`]).
#[inline]
pub fn level() -> Level {
    if let Some(l) = Level::from_code(THREAD_LEVEL.with(Cell::get)) {
        return l;
    }
    if let Some(l) = Level::from_code(PROCESS_LEVEL.load(Ordering::Relaxed)) {
        return l;
    }
    // the same resolution as the command line's, which stores it: a bad value means the best
    init_from_env().unwrap_or_else(|_| Level::best())
}

/// Runs `f` on a private rayon pool of `threads` workers whose kernels all run at `level`,
/// leaving the rest of the process as it is (tests of different levels run side by side).
pub fn with_level<R: Send>(
    level: Level,
    threads: usize,
    f: impl FnOnce() -> R + Send,
) -> Result<R, String> {
    if !level.is_supported() {
        return Err(LevelError::Unsupported(level).to_string());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(move |i| format!("simd-{}-{i}", level.name()))
        .start_handler(move |_| THREAD_LEVEL.with(|c| c.set(level.code())))
        .build()
        .map_err(|e| format!("cannot start a {level} thread pool: {e}"))?;
    Ok(pool.install(f))
}

/// Runs `f` once per level this CPU has, each time inside [`with_level`] with `threads`
/// workers. For tests: every fast kernel is checked against its naive twin at every level.
pub fn for_each_level(threads: usize, mut f: impl FnMut(Level) + Send) {
    for level in Level::supported() {
        if let Err(e) = with_level(level, threads, || f(level)) {
            panic!("{e}");
        }
    }
}

/// [`for_each_level`] for checks that fail with an error: stops at the first level whose
/// check fails and returns that error (the check names its level in it).
pub fn try_each_level<E: Send>(
    threads: usize,
    mut f: impl FnMut(Level) -> Result<(), E> + Send,
) -> Result<(), E> {
    for level in Level::supported() {
        match with_level(level, threads, || f(level)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => panic!("{e}"),
        }
    }
    Ok(())
}

/// Compiles a function once per instruction-set level and runs the copy for [`level`].
///
/// The body is written once, as plain loops (never `f32::mul_add`: the portable copy has no
/// FMA); each level's copy is the same body inlined into a function compiled with that
/// level's target features, so the compiler vectorises it for 16, 8 or 4 lanes.
///
/// ```ignore
/// simd::kernel! {
///     /// y += x
///     pub(crate) fn add_into(y: &mut [f32], x: &[f32]) {
///         for (a, &b) in y.iter_mut().zip(x) { *a += b; }
///     }
/// }
/// ```
macro_rules! kernel {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,bmi1,bmi2,lzcnt,f16c")]
            fn avx512($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,f16c")]
            fn avx2($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }

            match $crate::engine::simd::level() {
                // SAFETY: `level()` returns a level only when the CPU supports it.
                #[cfg(target_arch = "x86_64")]
                $crate::engine::simd::Level::Avx512 => unsafe { avx512($($arg),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                $crate::engine::simd::Level::Avx2 => unsafe { avx2($($arg),*) },
                // NEON is the aarch64 baseline: the plain body is the NEON copy there.
                _ => body($($arg),*),
            }
        }
    };
}
pub(crate) use kernel;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_nonsense_is_refused() {
        for l in Level::ALL {
            assert_eq!(Level::parse(l.name()), Ok(l));
            assert_eq!(
                Level::parse(&format!(" {} ", l.name().to_uppercase())),
                Ok(l)
            );
        }
        assert_eq!(
            Level::parse("sse9"),
            Err(LevelError::Unknown("sse9".to_string()))
        );
    }

    #[test]
    fn the_best_level_is_supported_and_portable_always_is() {
        assert!(Level::best().is_supported());
        assert!(Level::Portable.is_supported());
        assert_eq!(Level::supported().first(), Some(&Level::Portable));
        #[cfg(target_arch = "x86_64")]
        assert!(!Level::Neon.is_supported());
        #[cfg(target_arch = "aarch64")]
        assert!(!Level::Avx2.is_supported() && Level::Neon.is_supported());
    }

    #[test]
    fn a_pool_runs_at_its_level_and_leaves_the_caller_alone() {
        let outside = level();
        for l in Level::supported() {
            let seen = with_level(l, 2, || {
                use rayon::prelude::*;
                (0..64).into_par_iter().map(|_| level()).collect::<Vec<_>>()
            })
            .expect("a supported level");
            assert!(seen.iter().all(|&s| s == l), "{l}: {seen:?}");
        }
        assert_eq!(level(), outside);
    }

    #[test]
    fn an_unsupported_level_is_an_error_not_a_crash() {
        for l in Level::ALL.into_iter().filter(|l| !l.is_supported()) {
            let e = with_level(l, 1, || ()).expect_err("unsupported");
            assert!(e.contains("lacks"), "{e}");
            assert!(set_process_level(l).is_err());
        }
    }

    kernel! {
        /// Σ a·b in plain loops.
        fn dot(a: &[f32], b: &[f32]) -> f32 {
            a.iter().zip(b).map(|(x, y)| x * y).sum()
        }
    }

    #[test]
    fn a_kernel_gives_the_same_sum_at_every_level() {
        let a: Vec<f32> = (0..1000).map(|i| (i % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..1000).map(|i| (i % 5) as f32 * 0.5).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        for_each_level(1, |_| assert_eq!(dot(&a, &b), want));
    }
}
