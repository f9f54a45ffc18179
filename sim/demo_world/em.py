"""An EM-like uint8 image from a label volume: textured cytoplasm, dark membranes, darker extracellular space."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Voxels with a 6-neighbour of a different label (segment-segment and segment-background)."""
    out = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        n = labels.shape[axis]
        lo = [slice(None)] * labels.ndim
        hi = [slice(None)] * labels.ndim
        lo[axis] = slice(0, n - 1)
        hi[axis] = slice(1, n)
        diff = labels[tuple(lo)] != labels[tuple(hi)]
        out[tuple(lo)] |= diff
        out[tuple(hi)] |= diff
    return out


def em_image(rng: np.random.Generator, labels: np.ndarray, res: np.ndarray) -> np.ndarray:
    shape = labels.shape
    sigma = 40.0 / np.asarray(res, dtype=np.float64)  # texture grain of ~40 nm
    tex = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=sigma * 1.5)
    tex /= max(float(tex.std()), 1e-6)
    blobs = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=sigma * 4.0)
    blobs /= max(float(blobs.std()), 1e-6)
    fg = labels != 0
    img = np.where(fg, 168.0 + 14.0 * tex, 112.0 + 12.0 * tex).astype(np.float32)
    img[~fg & (blobs > 1.0)] -= 45.0  # dark extracellular pockets
    img[fg & (tex > 2.2)] -= 60.0  # small dark organelle-like specks
    img[boundaries(labels)] = 42.0
    img = ndimage.gaussian_filter(img, sigma=sigma * 0.6)
    img += rng.normal(0.0, 7.0, size=shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
