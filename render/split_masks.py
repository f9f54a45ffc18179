"""Split masks: the after roots A, B rendered with the single-segment render's camera
(ARCHITECTURE.md, contract §4).

Both after meshes go into one scene (nearest surface wins), cropped like the geometry render. Each view is
then aligned pixel for pixel with the single render's silhouette: silhouette pixels the after state
misses take the label of the nearest labelled pixel; pixels outside the silhouette are 0.
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy import ndimage

from core.errors import SampleError
from core.release_schema import SPLIT_MASK_A, SPLIT_MASK_B, SPLIT_MASK_BACKGROUND
from render.camera import view_cameras
from render.geometry import CROP_FACTOR, crop_mesh
from render.raycast import cast_sparse


def render_split_masks(
    after_a: trimesh.Trimesh, after_b: trimesh.Trimesh, center_nm, extent_nm: float, single_silhouette: np.ndarray
) -> np.ndarray:
    sil = np.asarray(single_silhouette) > 0
    if sil.ndim != 3 or sil.shape[0] != 3 or sil.shape[1] != sil.shape[2]:
        raise ValueError(f"single_silhouette must be (3, res, res), got {sil.shape}")
    res = sil.shape[1]
    meshes = [crop_mesh(m, center_nm, CROP_FACTOR * extent_nm) for m in (after_a, after_b)]
    hits = cast_sparse(meshes, view_cameras(center_nm, extent_nm, res))
    lut = np.array([SPLIT_MASK_A, SPLIT_MASK_B], dtype=np.uint8)
    out = np.full((3, res, res), SPLIT_MASK_BACKGROUND, dtype=np.uint8)
    for i, h in enumerate(hits):
        if not sil[i].any():
            continue
        if len(h.pixels) == 0:
            raise SampleError("after_mask_empty", f"after roots invisible in view {i} where the silhouette is not")
        labelled = np.zeros(res * res, dtype=bool)
        labelled[h.pixels] = True
        labelled = labelled.reshape(res, res)
        label = np.zeros(res * res, dtype=np.uint8)
        label[h.pixels] = lut[np.clip(h.mesh, 0, 1)]
        label = label.reshape(res, res)
        if (sil[i] & ~labelled).any():  # silhouette pixels the after state misses: nearest labelled pixel's label
            _, (ri, ci) = ndimage.distance_transform_edt(~labelled, return_indices=True)
            filled = label[ri, ci]
        else:
            filled = label
        out[i] = np.where(sil[i], filled, SPLIT_MASK_BACKGROUND)
    return out
