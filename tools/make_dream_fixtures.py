#!/usr/bin/env python3
"""Makes tests/fixtures/dream/: Lucid's Fourier image parameterisation computed with numpy, the
independent reference for src/explain/dream/fourier.rs.

Run from the repository root (any Python with numpy):
    /work/refenv/venv/bin/python tools/make_dream_fixtures.py

This is lucid.optvis.param.spatial.fft_image (decay_power 1) followed by
lucid.optvis.param.color.to_valid_rgb(decorrelate=True, sigmoid=True), written with numpy's
irfft2 in float64. One difference from Lucid, on purpose: the half spectrum is the standard
w//2 + 1 columns for every width (Lucid keeps w//2 + 2 for odd widths and crops).

Files per case HxW (float32 .npy):
  fourier_HxW_params.npy  (2, 3, H, W//2+1)  real parts, then imaginary parts
  fourier_HxW_planes.npy  (3, H, W)          irfft2(scale * spectrum, s=(H, W)) / 4
  fourier_HxW_rgb.npy     (3, H, W)          sigmoid(M @ planes) per pixel
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "dream")
CASES = [(6, 5), (8, 8), (7, 4)]

COLOR_CORRELATION_SVD_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]
)


def fourier_planes(params, h, w):
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    freqs = np.sqrt(fx * fx + fy * fy)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h))
    scale *= np.sqrt(w * h)
    spectrum = (params[0] + 1j * params[1]) * scale
    return np.fft.irfft2(spectrum, s=(h, w)) / 4.0


def to_rgb(planes):
    c = COLOR_CORRELATION_SVD_SQRT
    m = c / np.max(np.linalg.norm(c, axis=0))
    _, h, w = planes.shape
    flat = planes.reshape(3, -1).T @ m.T  # (hw, 3), as Lucid's t_flat @ M^T
    rgb = 1.0 / (1.0 + np.exp(-flat))
    return rgb.T.reshape(3, h, w)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(0)
    for h, w in CASES:
        params = rng.normal(0.0, 1.0, size=(2, 3, h, w // 2 + 1))
        planes = fourier_planes(params, h, w)
        rgb = to_rgb(planes)
        for name, a in [("params", params), ("planes", planes), ("rgb", rgb)]:
            np.save(os.path.join(OUT, f"fourier_{h}x{w}_{name}.npy"), a.astype(np.float32))
        print(f"{h}x{w}: planes std {planes.std():.3f}, rgb range {rgb.min():.3f}..{rgb.max():.3f}")


if __name__ == "__main__":
    main()
