//! Transformation robustness in one resampling: pad, jitter, scale and rotation of the dream
//! image, and the resize to the model's input size, are a single affine map from model-input
//! pixels to source coordinates, sampled bilinearly. The adjoint scatters gradients back with
//! the same weights, so the gradient of the objective reaches the image exactly.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Which part of the source image the model sees. Coordinates are in source pixels with pixel
/// `k` covering `[k, k + 1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    /// `(y, x)` of the point that lands at the centre of the model's input.
    pub center: [f32; 2],
    /// `(h, w)` source span the model's input covers (before rotation).
    pub extent: [f32; 2],
    /// Rotation in radians.
    pub angle: f32,
}

impl View {
    /// The whole `(h, w)` image, stretched to the model's input.
    pub fn whole(h: usize, w: usize) -> Self {
        Self {
            center: [h as f32 / 2.0, w as f32 / 2.0],
            extent: [h as f32, w as f32],
            angle: 0.0,
        }
    }

    /// Lucid-style random transforms of a `size × size` image: `pad` pixels of grey on each
    /// side, the centre moved by up to `jitter` whole pixels, zoom `scale` drawn uniformly from
    /// its range (> 1 zooms in), rotation uniform in ±`degrees`.
    pub fn random(
        size: usize,
        pad: usize,
        jitter: usize,
        scale: (f32, f32),
        degrees: f32,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let j = jitter as i64;
        let mut shift = || {
            if j == 0 {
                0.0
            } else {
                rng.random_range(-j..=j) as f32
            }
        };
        let (dy, dx) = (shift(), shift());
        let zoom = if scale.1 > scale.0 {
            rng.random_range(scale.0..=scale.1)
        } else {
            scale.0
        };
        let angle = if degrees > 0.0 {
            rng.random_range(-degrees..=degrees).to_radians()
        } else {
            0.0
        };
        let span = (size + 2 * pad) as f32 / zoom.max(1e-3);
        let half = size as f32 / 2.0;
        Self {
            center: [half + dy, half + dx],
            extent: [span, span],
            angle,
        }
    }
}

/// Up to four `(source index, weight)` taps per output pixel; taps outside the source fall on
/// the constant `fill`, whose total weight is kept apart.
#[derive(Clone, Debug)]
pub struct Sampler {
    src: [usize; 2],
    out: [usize; 2],
    /// Per output pixel `(oh, ow)`: 4 taps; `usize::MAX` marks a tap outside the source.
    taps: Vec<[(usize, f32); 4]>,
    /// Per output pixel: the weight of the fill value.
    fill_weight: Vec<f32>,
    fill: f32,
}

/// A fractional part this close to 0 is 0: an identity view then copies pixels exactly.
const SNAP: f32 = 1e-4;

impl Sampler {
    /// Sampling `view` of a `src` `(h, w)` image onto an `out` `(h, w)` grid. With `wrap`,
    /// coordinates outside the image wrap around (a torus, as a roll does); otherwise they
    /// read `fill`.
    pub fn new(view: &View, src: [usize; 2], out: [usize; 2], fill: f32, wrap: bool) -> Self {
        let (sin, cos) = view.angle.sin_cos();
        let mut taps = Vec::with_capacity(out[0] * out[1]);
        let mut fill_weight = Vec::with_capacity(out[0] * out[1]);
        let locate = |v: i64, n: usize| -> Option<usize> {
            if wrap {
                Some(v.rem_euclid(n as i64) as usize)
            } else {
                (v >= 0 && v < n as i64).then_some(v as usize)
            }
        };
        for i in 0..out[0] {
            let v = ((i as f32 + 0.5) / out[0] as f32 - 0.5) * view.extent[0];
            for j in 0..out[1] {
                let u = ((j as f32 + 0.5) / out[1] as f32 - 0.5) * view.extent[1];
                // rotate (v, u) about the view's centre; pixel k's centre is at k + 0.5
                let sy = view.center[0] + cos * v - sin * u - 0.5;
                let sx = view.center[1] + sin * v + cos * u - 0.5;
                let (y0, x0) = (sy.floor(), sx.floor());
                let (mut fy, mut fx) = (sy - y0, sx - x0);
                let (mut y0, mut x0) = (y0 as i64, x0 as i64);
                for (f, o) in [(&mut fy, &mut y0), (&mut fx, &mut x0)] {
                    if *f < SNAP {
                        *f = 0.0;
                    } else if *f > 1.0 - SNAP {
                        *f = 0.0;
                        *o += 1;
                    }
                }
                let mut t = [(usize::MAX, 0.0f32); 4];
                let mut outside = 0.0;
                for (k, (dy, dx, wgt)) in [
                    (0, 0, (1.0 - fy) * (1.0 - fx)),
                    (0, 1, (1.0 - fy) * fx),
                    (1, 0, fy * (1.0 - fx)),
                    (1, 1, fy * fx),
                ]
                .into_iter()
                .enumerate()
                {
                    match (locate(y0 + dy, src[0]), locate(x0 + dx, src[1])) {
                        (Some(y), Some(x)) => t[k] = (y * src[1] + x, wgt),
                        _ => outside += wgt,
                    }
                }
                taps.push(t);
                fill_weight.push(outside);
            }
        }
        Self {
            src,
            out,
            taps,
            fill_weight,
            fill,
        }
    }

    /// Resamples planes `(c, src_h, src_w)` to `(c, out_h, out_w)`.
    pub fn apply(&self, planes: &[f32]) -> Vec<f32> {
        let (n_src, n_out) = (self.src[0] * self.src[1], self.out[0] * self.out[1]);
        let c = planes.len() / n_src.max(1);
        let mut out = vec![0.0f32; c * n_out]; // (c, out_h, out_w)
        for ch in 0..c {
            let src = &planes[ch * n_src..(ch + 1) * n_src];
            for (o, (t, fw)) in out[ch * n_out..(ch + 1) * n_out]
                .iter_mut()
                .zip(self.taps.iter().zip(&self.fill_weight))
            {
                *o = fw * self.fill
                    + t.iter()
                        .filter(|(k, _)| *k != usize::MAX)
                        .map(|&(k, w)| w * src[k])
                        .sum::<f32>();
            }
        }
        out
    }

    /// The adjoint of [`apply`](Self::apply) (the fill has no gradient): d planes
    /// `(c, src_h, src_w)` from d output `(c, out_h, out_w)`.
    pub fn adjoint(&self, d_out: &[f32]) -> Vec<f32> {
        let (n_src, n_out) = (self.src[0] * self.src[1], self.out[0] * self.out[1]);
        let c = d_out.len() / n_out.max(1);
        let mut d = vec![0.0f32; c * n_src]; // (c, src_h, src_w)
        for ch in 0..c {
            let dst = &mut d[ch * n_src..(ch + 1) * n_src];
            for (g, t) in d_out[ch * n_out..(ch + 1) * n_out].iter().zip(&self.taps) {
                for &(k, w) in t.iter().filter(|(k, _)| *k != usize::MAX) {
                    dst[k] += w * g;
                }
            }
        }
        d
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_view_at_the_same_size_copies() {
        let (h, w) = (5, 7);
        let planes: Vec<f32> = (0..2 * h * w).map(|i| i as f32).collect();
        let s = Sampler::new(&View::whole(h, w), [h, w], [h, w], 0.5, false);
        assert_eq!(s.apply(&planes), planes);
    }

    #[test]
    fn adjoint_matches_the_dot_product_identity() {
        // <A x, y> = <x, A^T y> for a rotated, zoomed, padded view
        let view = View {
            center: [4.3, 3.1],
            extent: [11.0, 9.5],
            angle: 0.3,
        };
        for wrap in [false, true] {
            let s = Sampler::new(&view, [8, 6], [5, 7], 0.5, wrap);
            let x: Vec<f32> = (0..2 * 48).map(|i| ((i * 13 % 17) as f32) / 17.0).collect();
            let y: Vec<f32> = (0..2 * 35).map(|i| ((i * 7 % 11) as f32) / 11.0).collect();
            let ax = s.apply(&x);
            let fill = s.apply(&[0.0; 96]); // the fill's share alone
            let lhs: f32 = ax
                .iter()
                .zip(&fill)
                .zip(&y)
                .map(|((a, f), b)| (a - f) * b)
                .sum();
            let rhs: f32 = x.iter().zip(s.adjoint(&y)).map(|(a, b)| a * b).sum();
            assert!(
                (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
                "{lhs} vs {rhs}"
            );
        }
    }
}
