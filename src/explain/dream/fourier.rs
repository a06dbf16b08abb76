//! Lucid's default image parameterisation: a spectrum per decorrelated colour channel, scaled
//! by 1/f so that every frequency starts with about the same energy in the image, turned into
//! pixels by an inverse real 2-D DFT, then mapped to RGB through the square root of ImageNet's
//! colour correlation and a sigmoid (`lucid.optvis.param.image(fft=True, decorrelate=True)`).
//!
//! Parameters are laid out as Lucid's `(2, 3, h, wf)` with `wf = w/2 + 1` (real parts, then
//! imaginary parts). Lucid keeps `w/2 + 2` frequencies for odd widths and crops; here the
//! spectrum is the standard half spectrum of numpy's `irfft2(.., s=(h, w))`, which that function
//! reads exactly as this module does (the imaginary parts of the zero and Nyquist columns are
//! ignored).
//!
//! The DFTs are dense products with cosine/sine matrices (a few tens of millions of
//! multiply-adds at 224², about a millisecond): no FFT crate, any size, and the adjoint is the
//! transposed product.

use std::f64::consts::TAU;

use ndarray::{Array2, ArrayView2, Axis, concatenate, s};

/// `lucid.optvis.param.color.color_correlation_svd_sqrt`.
const COLOR_CORRELATION_SVD_SQRT: [[f64; 3]; 3] =
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]];

/// The correlation square root divided by its largest column norm (Lucid's
/// `color_correlation_normalized`): rgb = M · t for a decorrelated pixel t.
pub fn color_matrix() -> [[f32; 3]; 3] {
    let c = COLOR_CORRELATION_SVD_SQRT;
    let max_norm = (0..3)
        .map(|j| (0..3).map(|i| c[i][j] * c[i][j]).sum::<f64>().sqrt())
        .fold(0.0, f64::max);
    c.map(|row| row.map(|v| (v / max_norm) as f32))
}

/// The inverse of [`color_matrix`] (for warm starts from an image).
fn color_matrix_inverse() -> [[f32; 3]; 3] {
    let m = color_matrix().map(|r| r.map(f64::from));
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let mut inv = [[0.0f32; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            // cofactor of (j, i) over det
            let (r0, r1) = ((j + 1) % 3, (j + 2) % 3);
            let (c0, c1) = ((i + 1) % 3, (i + 2) % 3);
            inv[i][j] = ((m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]) / det) as f32;
        }
    }
    inv
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// The matrices of the inverse (and forward) real DFT of an `h × w` image and the 1/f scale.
#[derive(Clone, Debug)]
pub struct FourierBasis {
    h: usize,
    w: usize,
    wf: usize,
    /// Per frequency `(h, wf)`: `sqrt(h w) / max(f, 1/max(h, w)) / 4` (Lucid's scale, decay
    /// power 1, with its final division by 4 folded in).
    scale: Vec<f32>,
    /// `(2h, 2h)`: `[[C, −S], [S, C]]` with `C[y, fy] = cos(2π fy y / h)`; maps stacked
    /// (real; imaginary) spectra along y.
    g: Array2<f32>,
    /// `(wf, w)`: `m[fx] cos(2π fx x / w) / (h w)` with `m` = 1 at the zero and Nyquist column,
    /// 2 elsewhere (the Hermitian half counts twice).
    cw: Array2<f32>,
    /// `(wf, w)`: `−m[fx] sin(2π fx x / w) / (h w)`.
    sw: Array2<f32>,
}

/// numpy's `fftfreq(n)[k]` (cycles per sample).
fn fftfreq(k: usize, n: usize) -> f64 {
    let k = if k < n.div_ceil(2) {
        k as f64
    } else {
        k as f64 - n as f64
    };
    k / n as f64
}

impl FourierBasis {
    pub fn new(h: usize, w: usize) -> Self {
        let wf = w / 2 + 1;
        let floor = 1.0 / h.max(w) as f64;
        let norm = ((h * w) as f64).sqrt() / 4.0;
        let mut scale = Vec::with_capacity(h * wf); // (h, wf)
        for fy in 0..h {
            for fx in 0..wf {
                let f = (fftfreq(fy, h).powi(2) + fftfreq(fx, w).powi(2)).sqrt();
                scale.push((norm / f.max(floor)) as f32);
            }
        }
        let mut g = Array2::<f32>::zeros((2 * h, 2 * h));
        for y in 0..h {
            for fy in 0..h {
                let a = TAU * (fy * y % h) as f64 / h as f64;
                let (c, s) = (a.cos() as f32, a.sin() as f32);
                g[[y, fy]] = c;
                g[[y, h + fy]] = -s;
                g[[h + y, fy]] = s;
                g[[h + y, h + fy]] = c;
            }
        }
        let mut cw = Array2::<f32>::zeros((wf, w));
        let mut sw = Array2::<f32>::zeros((wf, w));
        let hw = (h * w) as f64;
        for fx in 0..wf {
            let m = if fx == 0 || (w.is_multiple_of(2) && fx == w / 2) {
                1.0
            } else {
                2.0
            };
            for x in 0..w {
                let a = TAU * (fx * x % w) as f64 / w as f64;
                cw[[fx, x]] = (m * a.cos() / hw) as f32;
                sw[[fx, x]] = (-m * a.sin() / hw) as f32;
            }
        }
        Self {
            h,
            w,
            wf,
            scale,
            g,
            cw,
            sw,
        }
    }

    /// Number of parameters: `2 · 3 · h · wf`.
    pub fn param_len(&self) -> usize {
        2 * 3 * self.h * self.wf
    }

    /// `(2h, wf)`: the scaled real parts over the scaled imaginary parts of channel `c`.
    fn scaled_spectrum(&self, params: &[f32], c: usize) -> Array2<f32> {
        let n = self.h * self.wf;
        let mut p = Array2::<f32>::zeros((2 * self.h, self.wf));
        for (part, rows) in [0, self.h].into_iter().enumerate() {
            let src = &params[(part * 3 + c) * n..(part * 3 + c + 1) * n];
            for (i, (v, s)) in src.iter().zip(&self.scale).enumerate() {
                p[[rows + i / self.wf, i % self.wf]] = v * s;
            }
        }
        p
    }

    /// Decorrelated planes `(3, h, w)` from the parameters `(2, 3, h, wf)`.
    pub fn planes(&self, params: &[f32]) -> Vec<f32> {
        let (h, w) = (self.h, self.w);
        let mut out = Vec::with_capacity(3 * h * w); // (3, h, w)
        for c in 0..3 {
            let z = self.g.dot(&self.scaled_spectrum(params, c)); // (2h, wf)
            let x = z.slice(s![..h, ..]).dot(&self.cw) + z.slice(s![h.., ..]).dot(&self.sw); // (h, w)
            out.extend(x.iter());
        }
        out
    }

    /// The adjoint of [`planes`](Self::planes): d params `(2, 3, h, wf)` from d planes
    /// `(3, h, w)`.
    pub fn planes_adjoint(&self, d_planes: &[f32]) -> Vec<f32> {
        let (h, w, wf) = (self.h, self.w, self.wf);
        let n = h * wf;
        let mut out = vec![0.0f32; self.param_len()];
        for c in 0..3 {
            let dx = ArrayView2::from_shape((h, w), &d_planes[c * h * w..(c + 1) * h * w])
                .unwrap_or_else(|_| unreachable!("planes are (3, h, w)"));
            let dz = concatenate(
                Axis(0),
                &[dx.dot(&self.cw.t()).view(), dx.dot(&self.sw.t()).view()],
            )
            .unwrap_or_else(|_| unreachable!("both halves are (h, wf)"));
            let dp = self.g.t().dot(&dz); // (2h, wf)
            for part in 0..2 {
                let dst = &mut out[(part * 3 + c) * n..(part * 3 + c + 1) * n];
                for (i, (d, s)) in dst.iter_mut().zip(&self.scale).enumerate() {
                    *d = dp[[part * h + i / wf, i % wf]] * s;
                }
            }
        }
        out
    }

    /// The parameters whose planes are `planes` `(3, h, w)`: the forward real DFT divided by
    /// the scale (exact inverse of [`planes`](Self::planes) up to rounding).
    pub fn params_of_planes(&self, planes: &[f32]) -> Vec<f32> {
        let (h, w, wf) = (self.h, self.w, self.wf);
        let n = h * wf;
        // Forward DFT along x: (w, wf) cosine and −sine matrices (no normalisation).
        let mut kc = Array2::<f32>::zeros((w, wf));
        let mut ks = Array2::<f32>::zeros((w, wf));
        for x in 0..w {
            for fx in 0..wf {
                let a = TAU * (fx * x % w) as f64 / w as f64;
                kc[[x, fx]] = a.cos() as f32;
                ks[[x, fx]] = -a.sin() as f32;
            }
        }
        // Along y, e^{−iφ}: the transpose of g's rotation, i.e. [[C, S], [−S, C]] = gᵀ.
        let gt = self.g.t();
        let mut out = vec![0.0f32; self.param_len()];
        for c in 0..3 {
            let t = ArrayView2::from_shape((h, w), &planes[c * h * w..(c + 1) * h * w])
                .unwrap_or_else(|_| unreachable!("planes are (3, h, w)"));
            let u = concatenate(Axis(0), &[t.dot(&kc).view(), t.dot(&ks).view()])
                .unwrap_or_else(|_| unreachable!("both halves are (h, wf)")); // (2h, wf)
            let x = gt.dot(&u); // (2h, wf): real over imaginary spectrum
            for part in 0..2 {
                let dst = &mut out[(part * 3 + c) * n..(part * 3 + c + 1) * n];
                for (i, (d, s)) in dst.iter_mut().zip(&self.scale).enumerate() {
                    *d = x[[part * h + i / wf, i % wf]] / s;
                }
            }
        }
        out
    }
}

/// Decorrelated planes `(3, h, w)` → RGB in (0, 1): sigmoid(M · t) per pixel.
pub fn to_rgb(planes: &[f32], hw: usize) -> Vec<f32> {
    let m = color_matrix();
    let mut rgb = vec![0.0f32; 3 * hw]; // (3, h, w)
    for i in 0..hw {
        let t = [planes[i], planes[hw + i], planes[2 * hw + i]];
        for (c, row) in m.iter().enumerate() {
            rgb[c * hw + i] = sigmoid(row[0] * t[0] + row[1] * t[1] + row[2] * t[2]);
        }
    }
    rgb
}

/// The adjoint of [`to_rgb`] at its output `rgb`: d planes from d rgb.
pub fn to_rgb_adjoint(rgb: &[f32], d_rgb: &[f32], hw: usize) -> Vec<f32> {
    let m = color_matrix();
    let mut d = vec![0.0f32; 3 * hw]; // (3, h, w)
    for i in 0..hw {
        let pre: [f32; 3] =
            std::array::from_fn(|c| d_rgb[c * hw + i] * rgb[c * hw + i] * (1.0 - rgb[c * hw + i]));
        for j in 0..3 {
            d[j * hw + i] = (0..3).map(|c| m[c][j] * pre[c]).sum();
        }
    }
    d
}

/// RGB `(3, h, w)` in [0, 1] → decorrelated planes (inverse sigmoid after clamping to the
/// 8-bit range's half-steps, so 0 and 1 stay finite, then M⁻¹).
pub fn from_rgb(rgb: &[f32], hw: usize) -> Vec<f32> {
    let inv = color_matrix_inverse();
    let (lo, hi) = (0.5 / 255.0, 254.5 / 255.0);
    let logit = |v: f32| {
        let v = v.clamp(lo, hi);
        (v / (1.0 - v)).ln()
    };
    let mut planes = vec![0.0f32; 3 * hw]; // (3, h, w)
    for i in 0..hw {
        let l = [logit(rgb[i]), logit(rgb[hw + i]), logit(rgb[2 * hw + i])];
        for (j, row) in inv.iter().enumerate() {
            planes[j * hw + i] = row[0] * l[0] + row[1] * l[1] + row[2] * l[2];
        }
    }
    planes
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn colour_matrix_inverse_is_an_inverse() {
        let (m, inv) = (color_matrix(), color_matrix_inverse());
        for i in 0..3 {
            for j in 0..3 {
                let p: f32 = (0..3).map(|k| m[i][k] * inv[k][j]).sum();
                assert!(
                    (p - f32::from(u8::from(i == j))).abs() < 1e-5,
                    "{i} {j} {p}"
                );
            }
        }
    }

    #[test]
    fn planes_round_trip_through_the_spectrum() {
        for (h, w) in [(6, 5), (4, 4), (7, 8)] {
            let b = FourierBasis::new(h, w);
            let planes: Vec<f32> = (0..3 * h * w)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
                .collect();
            let back = b.planes(&b.params_of_planes(&planes));
            for (a, c) in planes.iter().zip(&back) {
                assert!((a - c).abs() < 1e-4, "{h}x{w}: {a} vs {c}");
            }
        }
    }
}
