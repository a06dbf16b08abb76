//! The project's one source of cheap deterministic randomness: SplitMix64 for data work
//! (shuffles, splits, augmentation, the synthetic faces), dropout's counter-based masks and the
//! gradient checks' test values, and Box–Muller normals over `rand`'s ChaCha8 for weight
//! initialisation and SmoothGrad's noise. Our own SplitMix so that a seed reproduces the same
//! data set and masks whatever the version of the `rand` crates, and cheap enough to create one
//! per sample (`for_item`), which keeps results independent of thread scheduling.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// SplitMix64 (Steele, Lea, Flood 2014): 64-bit state, passes BigCrush, one add and three mixes.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

/// SplitMix64's increment, 2⁶⁴/φ: also a good multiplier for deriving seeds from indices.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 finaliser: a bijective avalanche of 64 bits. Inlined so that the per-level
/// kernels that call it (dropout's mask) compile it for their own instruction set.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An independent stream for item `index` of stream `stream` under `seed`: hashing the
    /// three keys means item i's randomness does not depend on which items came before it.
    pub fn for_item(seed: u64, stream: u64, index: u64) -> Self {
        let a = mix64(seed ^ GOLDEN);
        let b = mix64(a ^ stream.wrapping_mul(GOLDEN));
        Self::new(mix64(b ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93)))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform in [0, 1) with 24 bits of precision (exactly representable in f32).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f32()
    }

    /// Uniform integer in [0, n) by Lemire's multiply-shift (bias below 2^-64 * n, negligible);
    /// 0 when n is 0.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// True with probability p.
    pub fn chance(&mut self, p: f32) -> bool {
        self.next_f32() < p
    }

    /// Approximately standard normal (Irwin-Hall of four uniforms, rescaled): smooth enough for
    /// pixel noise and an order of magnitude cheaper than Box-Muller's transcendental calls.
    pub fn normal(&mut self) -> f32 {
        let s = self.next_f32() + self.next_f32() + self.next_f32() + self.next_f32();
        (s - 2.0) * 1.732_050_8 // variance of the sum is 4/12; scale by sqrt(3)
    }

    /// Fisher-Yates shuffle in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// Two independent standard normal draws by Box–Muller (u1 in (0, 1] so the log is finite).
pub fn normal_pair(rng: &mut ChaCha8Rng) -> (f64, f64) {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    let r = (-2.0 * u1.ln()).sqrt();
    let theta = std::f64::consts::TAU * u2;
    (r * theta.cos(), r * theta.sin())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_items_are_independent() {
        let a: Vec<u64> = (0..4).map(|_| SplitMix64::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let x = SplitMix64::for_item(1, 2, 3).next_u64();
        let y = SplitMix64::for_item(1, 2, 4).next_u64();
        let z = SplitMix64::for_item(2, 2, 3).next_u64();
        assert_ne!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn shuffle_is_a_permutation_and_below_stays_in_range() {
        let mut r = SplitMix64::new(42);
        let mut v: Vec<usize> = (0..100).collect();
        r.shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        let mut s = v.clone();
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert!((0..1000).all(|_| r.below(7) < 7));
        let f: Vec<f32> = (0..1000).map(|_| r.next_f32()).collect();
        assert!(f.iter().all(|&x| (0.0..1.0).contains(&x)));
    }
}
