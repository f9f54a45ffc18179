"""The fetch stage's logic (its adapter to the runner: stages/fetch.py): each bank row's meshes and EM /
segmentation cutouts, cached per partition (each root's mesh once per partition: fetch_meshes.py).

Meshes are cropped to the largest box any render of the row can need (the extent range's max,
times 1.2, plus the centre jitter's reach), so a re-render with another camera needs no refetch.
Segment labels are resolved at the row's cutout timestamp and stored as a small mask volume:
0 = neither, 1 = segment A, 2 = segment B.

Absent chunks are found, not painted black: the sources mark the voxels that came from chunks missing from
the layer (pipeline.sources.base.read_padded). The fractions of the EM window's voxels from such chunks (the
window, not the whole 1.5 x cutout: the views are cut from the window) travel with the sample, and so does the
mask (`missing`, on the EM grid), so that render applies `max_missing_fraction` to the window and to the views'
own pixels (core.fetched): the limit is not an input of the fetch.
"""

from __future__ import annotations

import numpy as np
import trimesh

from config import SpeciesConfig
from core.errors import SampleError
from core.fetched import MISSING_BITS, FetchedSample
from pipeline.sources.base import Cutout, window_fraction
from render.geometry import CROP_FACTOR, crop_mesh

STAGE = "fetch"
JITTER_REACH = 4.0  # standard deviations of centre jitter covered by the fetch crop
EM_FACTOR = 1.5  # cutouts are 1.5 x the EM window wide


# The config keys that set the mesh crop box. A fetched file records its box (`crop_half_nm`) and is kept while it is
# at least as wide as the current config asks: these keys refetch only the samples whose box must grow.
CROP_BOX_KEYS = ("extent_nm", "center_jitter_nm")


def crop_box_half_nm(cfg: SpeciesConfig) -> float:
    """Half the width of the box a sample's meshes are cropped to: the widest any render of it can need."""
    return CROP_FACTOR * cfg.extent_nm[1] + JITTER_REACH * cfg.center_jitter_nm * np.sqrt(3)


def crop_to_box(mesh: trimesh.Trimesh, center_nm: np.ndarray, half_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """The render's crop (render.geometry.crop_mesh) at the fetch box, as compact arrays (float32 nm, int32)."""
    cropped = crop_mesh(mesh, center_nm, half_nm)
    return np.asarray(cropped.vertices, dtype=np.float32), np.asarray(cropped.faces, dtype=np.int32)


def resample_nearest(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resampling to `shape` (labels are never interpolated)."""
    if volume.shape == tuple(shape):
        return volume
    index = np.ix_(*[np.minimum((np.arange(n) + 0.5) * s / n, s - 1).astype(np.int64)
                     for n, s in zip(shape, volume.shape, strict=True)])  # fmt: skip
    return volume[index]


def ab_labels(seg: Cutout, shape: tuple[int, ...], a_root: int, b_root: int | None) -> np.ndarray:
    data = resample_nearest(np.asarray(seg.data), shape)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[data == np.uint64(a_root)] = 1
    if b_root is not None:
        labels[data == np.uint64(b_root)] = 2
    return labels


def fetch_sample(source, cfg: SpeciesConfig, row: dict, meshes=None) -> FetchedSample:  # noqa: ANN001
    """Everything render needs for one bank row.

    Meshes come from `meshes` (a PartitionMeshes: each root fetched once per partition) when given, else
    from the source, bounded to this sample's fetch box.
    """
    center = np.asarray(row["coord_nm"], dtype=np.float64)
    half = crop_box_half_nm(cfg)
    box = (center - half, center + half)

    def mesh_of(root: int) -> trimesh.Trimesh:
        return meshes.mesh(root) if meshes is not None else source.mesh(root, box_nm=box)

    geometry = []
    for root in row["geometry_roots"]:
        verts, faces = crop_to_box(mesh_of(int(root)), center, half)
        if len(faces) == 0:
            raise SampleError("mesh_outside_window", f"root {root} has no faces within {half:.0f} nm of the point")
        geometry.append((verts, faces))
    after = []
    if row["sample_type"] == "split_edit":
        try:
            after = [crop_to_box(mesh_of(int(r)), center, half) for r in row["after_roots"]]
        except SampleError as exc:
            if exc.reason != "missing_mesh":
                raise
    size = EM_FACTOR * cfg.em_window_nm
    em = source.em_cutout(center, size)
    seg = source.segmentation_cutout(center, size, row["cutout_timestamp"])
    em_data = np.asarray(em.data, dtype=np.uint8)
    b_root = int(row["mask_b_root"]) if row["mask_b_root"] else None
    missing = None
    if em.missing is not None or seg.missing is not None:
        missing = np.zeros(em_data.shape, dtype=np.uint8)
        if em.missing is not None:
            missing |= np.asarray(em.missing, dtype=np.uint8) * np.uint8(MISSING_BITS["em"])
        if seg.missing is not None:
            missing |= resample_nearest(np.asarray(seg.missing, dtype=np.uint8), em_data.shape) * np.uint8(
                MISSING_BITS["seg"]
            )
    return FetchedSample(
        meshes=geometry,
        after=after,
        em=em_data,
        labels=ab_labels(seg, em_data.shape, int(row["mask_a_root"]), b_root),
        em_voxel_nm=np.asarray(em.voxel_nm, dtype=np.float64),
        em_origin_nm=np.asarray(em.origin_nm, dtype=np.float64),
        em_missing_fraction=_window_fraction(em, cfg),
        seg_missing_fraction=_window_fraction(seg, cfg),
        missing=missing,
        crop_half_nm=float(half),
    )


def _window_fraction(cut: Cutout, cfg: SpeciesConfig) -> float:
    """The fraction of the EM window's voxels from absent chunks of this cutout's layer."""
    return window_fraction(cut.missing, cut.voxel_nm, cfg.em_window_nm)
