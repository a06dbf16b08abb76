//! [`Map`]: a single-channel 2-D float image `[h, w]` (a heat map, one activation channel), with
//! the resampling and normalisation every explanation shares. It lives in the engine, below
//! both `explain` (which makes maps) and `render` (which colours them), so that neither imports
//! the other.

use super::error::OpError;
use super::tensor::Tensor;

/// Row-major `(height, width)` values. The fields are private so that `height · width ==
/// data.len()` always holds: every constructor checks it.
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    height: usize,
    width: usize,
    data: Vec<f32>,
}

impl Map {
    pub fn new(height: usize, width: usize, data: Vec<f32>) -> Result<Self, OpError> {
        if height.checked_mul(width) != Some(data.len()) {
            return Err(OpError::new(format!(
                "a {height}x{width} map needs {} values, got {}",
                height.saturating_mul(width),
                data.len()
            )));
        }
        Ok(Self {
            height,
            width,
            data,
        })
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// The values, row-major `(height, width)`.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The values, to change in place (the shape stays).
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The same shape with every value mapped by `f`.
    pub fn map_values(&self, f: impl Fn(f32) -> f32) -> Map {
        Map {
            data: self.data.iter().map(|&v| f(v)).collect(),
            ..*self
        }
    }

    pub fn zeros(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            data: vec![0.0; height * width],
        }
    }

    /// A map from a tensor `[h, w]`, `[1, h, w]` or `[1, 1, h, w]`.
    pub fn from_tensor(t: &Tensor) -> Result<Self, OpError> {
        let s = t.shape();
        let hw = match s {
            &[h, w] | &[1, h, w] | &[1, 1, h, w] => (h, w),
            _ => {
                return Err(OpError::new(format!(
                    "a map needs a tensor [h, w] (or [1, h, w], [1, 1, h, w]), got {s:?}"
                )));
            }
        };
        Self::new(hw.0, hw.1, t.data().to_vec())
    }

    /// The map as a tensor `[h, w]`.
    pub fn to_tensor(&self) -> Tensor {
        Tensor::new(vec![self.height, self.width], self.data.clone())
            .unwrap_or_else(|_| unreachable!("map invariant: height * width == data.len()"))
    }

    pub fn get(&self, y: usize, x: usize) -> f32 {
        self.data[y * self.width + x]
    }

    /// (min, max) over finite values; (0, 0) for an empty map.
    pub fn min_max(&self) -> (f32, f32) {
        let mut lo = f32::INFINITY;
        let mut hi = f32::NEG_INFINITY;
        for &v in self.data.iter().filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo > hi { (0.0, 0.0) } else { (lo, hi) }
    }

    /// `(g - min) / (max - min)`; all zeros when `max == min` (as the CLI contract says).
    pub fn normalised(&self) -> Map {
        let (lo, hi) = self.min_max();
        let data = if hi > lo {
            let scale = 1.0 / (hi - lo);
            self.data.iter().map(|&v| (v - lo) * scale).collect()
        } else {
            vec![0.0; self.data.len()]
        };
        Map { data, ..*self }
    }

    /// `g / max(g)` for a non-negative map (saliency's normalisation); zeros when max is 0.
    pub fn divided_by_max(&self) -> Map {
        let (_, hi) = self.min_max();
        let data = if hi > 0.0 {
            self.data.iter().map(|&v| v / hi).collect()
        } else {
            vec![0.0; self.data.len()]
        };
        Map { data, ..*self }
    }

    /// (y, x) of the largest value (the first one on ties); (0, 0) for an empty map.
    pub fn argmax(&self) -> (usize, usize) {
        let mut best = 0;
        for (i, &v) in self.data.iter().enumerate() {
            if v > self.data[best] {
                best = i;
            }
        }
        match best.checked_div(self.width) {
            Some(y) => (y, best % self.width),
            None => (0, 0),
        }
    }

    /// Bilinear resampling with half-pixel centres, exactly PyTorch's
    /// `F.interpolate(mode="bilinear", align_corners=False)` (source index clamped at 0).
    pub fn resize_bilinear(&self, height: usize, width: usize) -> Map {
        if (height, width) == (self.height, self.width) || self.data.is_empty() {
            return if self.data.is_empty() {
                Map::zeros(height, width)
            } else {
                self.clone()
            };
        }
        let rows: Vec<Tap> = (0..height)
            .map(|i| Tap::new(i, self.height, height))
            .collect();
        let cols: Vec<Tap> = (0..width).map(|j| Tap::new(j, self.width, width)).collect();
        let mut data = Vec::with_capacity(height * width); // (height, width)
        for r in &rows {
            let row0 = &self.data[r.i0 * self.width..(r.i0 + 1) * self.width];
            let row1 = &self.data[r.i1 * self.width..(r.i1 + 1) * self.width];
            for c in &cols {
                let top = c.w0 * row0[c.i0] + c.w1 * row0[c.i1];
                let bottom = c.w0 * row1[c.i0] + c.w1 * row1[c.i1];
                data.push(r.w0 * top + r.w1 * bottom);
            }
        }
        Map {
            height,
            width,
            data,
        }
    }

    /// max over channels of |t| for one image `[c, h, w]` or `[1, c, h, w]`.
    pub fn channel_max_abs(t: &Tensor) -> Result<Map, OpError> {
        let (c, h, w) = match t.shape() {
            &[c, h, w] | &[1, c, h, w] => (c, h, w),
            s => {
                return Err(OpError::new(format!(
                    "channel maximum needs [c, h, w] or [1, c, h, w], got {s:?}"
                )));
            }
        };
        let mut data = vec![0.0f32; h * w]; // (h, w)
        for plane in t.data().chunks_exact(h * w).take(c) {
            for (d, &v) in data.iter_mut().zip(plane) {
                *d = d.max(v.abs());
            }
        }
        Map::new(h, w, data)
    }
}

/// One output coordinate's two source indices and weights along one axis.
struct Tap {
    i0: usize,
    i1: usize,
    w0: f32,
    w1: f32,
}

impl Tap {
    fn new(dst: usize, in_size: usize, out_size: usize) -> Tap {
        // PyTorch: scale = in / out in float, src = scale * (dst + 0.5) - 0.5, clamped at 0.
        let scale = in_size as f32 / out_size as f32;
        let src = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src as usize).min(in_size - 1);
        let i1 = if i0 + 1 < in_size { i0 + 1 } else { i0 };
        let w1 = src - i0 as f32;
        Tap {
            i0,
            i1,
            w0: 1.0 - w1,
            w1,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_pytorch_half_pixel() {
        // F.interpolate(torch.tensor([[1., 2.], [3., 4.]])[None, None], size=(4, 4),
        //               mode="bilinear", align_corners=False)
        let m = Map::new(2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let up = m.resize_bilinear(4, 4);
        let want = [
            1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0,
        ];
        for (a, b) in up.data.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{:?}", up.data);
        }
    }

    #[test]
    fn normalise_and_argmax() {
        let m = Map::new(2, 3, vec![1.0, 3.0, 2.0, 0.0, 5.0, 1.0]).unwrap();
        let n = m.normalised();
        assert_eq!(n.data, vec![0.2, 0.6, 0.4, 0.0, 1.0, 0.2]);
        assert_eq!(m.argmax(), (1, 1));
        assert_eq!(
            Map::new(1, 2, vec![3.0, 3.0]).unwrap().normalised().data,
            vec![0.0, 0.0]
        );
        assert!(Map::new(2, 2, vec![0.0; 3]).is_err());
    }
}
