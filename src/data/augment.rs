//! Seeded, deterministic augmentation of raw samples `[c, h, w]` in [0, 1] (applied before
//! normalisation). The loader draws one PRNG per (seed, epoch, index), so a sample's
//! augmentation does not depend on batch composition or thread scheduling.

use super::rng::SplitMix64;
use super::{DataError, DataResult};
use crate::engine::Tensor;

/// Which augmentations to apply. `Default` is none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Augment {
    /// Mirror left-right with probability 1/2.
    pub hflip: bool,
    /// Random crop of the image zero-padded by `pad` pixels on every side, i.e. a shift of up to
    /// ±pad pixels in x and y with zeros flowing in (torchvision's `RandomCrop(padding=pad)`).
    pub pad: usize,
    /// Adds a uniform offset in [-brightness, brightness] to every value.
    pub brightness: f32,
    /// Scales values around the sample's mean by a factor in [1 - contrast, 1 + contrast].
    pub contrast: f32,
}

impl Augment {
    pub fn validate(&self) -> DataResult<()> {
        let ok = |v: f32| v.is_finite() && (0.0..=1.0).contains(&v);
        if !ok(self.brightness) || !ok(self.contrast) {
            return Err(DataError::invalid(format!(
                "brightness {} and contrast {} jitter must lie in [0, 1]",
                self.brightness, self.contrast
            )));
        }
        Ok(())
    }

    pub fn is_identity(&self) -> bool {
        !self.hflip && self.pad == 0 && self.brightness == 0.0 && self.contrast == 0.0
    }

    /// Augments a raw sample `[c, h, w]` in place. Random draws happen in a fixed order whether
    /// or not each augmentation is enabled, so enabling one does not change the others' draws.
    pub fn apply(&self, sample: &mut Tensor, rng: &mut SplitMix64) -> DataResult<()> {
        let &[_, h, w] = sample.shape() else {
            return Err(DataError::invalid(format!(
                "augmentation expects a sample [c, h, w], got {:?}",
                sample.shape()
            )));
        };
        let flip = rng.chance(0.5);
        let shift_x = rng.below(2 * self.pad + 1) as isize - self.pad as isize;
        let shift_y = rng.below(2 * self.pad + 1) as isize - self.pad as isize;
        let offset = rng.uniform(-self.brightness, self.brightness);
        let gain = rng.uniform(1.0 - self.contrast, 1.0 + self.contrast);
        if self.brightness > 0.0 || self.contrast > 0.0 {
            jitter(sample.data_mut(), offset, gain);
        }
        if self.hflip && flip {
            flip_horizontal(sample.data_mut(), w);
        }
        if self.pad > 0 && (shift_x, shift_y) != (0, 0) {
            shift(sample.data_mut(), h, w, shift_x, shift_y);
        }
        Ok(())
    }
}

/// `x <- clamp((x - mean) * gain + mean + offset, 0, 1)` over the whole sample.
fn jitter(data: &mut [f32], offset: f32, gain: f32) {
    let mean = data.iter().sum::<f32>() / data.len().max(1) as f32;
    data.iter_mut()
        .for_each(|v| *v = ((*v - mean) * gain + mean + offset).clamp(0.0, 1.0));
}

/// Mirrors every row (of width `w`) of every plane.
fn flip_horizontal(data: &mut [f32], w: usize) {
    data.chunks_mut(w).for_each(|row| row.reverse());
}

/// Moves each `(h, w)` plane by (dx, dy) pixels, filling uncovered pixels with 0: the crop of a
/// zero-padded image at offset (pad - dx, pad - dy).
fn shift(data: &mut [f32], h: usize, w: usize, dx: isize, dy: isize) {
    for plane in data.chunks_mut(h * w) {
        let src = plane.to_vec(); // (h, w)
        for y in 0..h {
            let sy = y as isize - dy;
            for x in 0..w {
                let sx = x as isize - dx;
                let inside = (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx);
                plane[y * w + x] = if inside {
                    src[sy as usize * w + sx as usize]
                } else {
                    0.0
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Tensor {
        Tensor::new(vec![1, 2, 3], vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6]).unwrap()
    }

    #[test]
    fn flip_and_shift_move_pixels() {
        let mut d = ramp().into_data();
        flip_horizontal(&mut d, 3);
        assert_eq!(d, vec![0.3, 0.2, 0.1, 0.6, 0.5, 0.4]);
        let mut d = ramp().into_data();
        shift(&mut d, 2, 3, 1, 1);
        assert_eq!(d, vec![0.0, 0.0, 0.0, 0.0, 0.1, 0.2]);
    }

    #[test]
    fn same_seed_same_result_and_identity_is_identity() {
        let aug = Augment {
            hflip: true,
            pad: 1,
            brightness: 0.2,
            contrast: 0.2,
        };
        let (mut a, mut b) = (ramp(), ramp());
        aug.apply(&mut a, &mut SplitMix64::new(5)).unwrap();
        aug.apply(&mut b, &mut SplitMix64::new(5)).unwrap();
        assert_eq!(a, b);
        assert!(a.data().iter().all(|v| (0.0..=1.0).contains(v)));
        let mut c = ramp();
        Augment::default()
            .apply(&mut c, &mut SplitMix64::new(5))
            .unwrap();
        assert_eq!(c, ramp());
        assert!(
            Augment {
                brightness: 2.0,
                ..Augment::default()
            }
            .validate()
            .is_err()
        );
    }
}
