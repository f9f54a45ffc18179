"""One fetched sample: what the fetch stage writes and the render stage reads, and the missing-chunk rule.

The file is an npz of named arrays (`fetch/samples/HH/<hash>-<key>.npz`); this module is the one place its keys are
spelled. A sample carries the fractions of its EM window that came from absent EM and segmentation chunks (and,
when there were any, the mask of those voxels), never a verdict: render applies `max_missing_fraction` to the window
and to each view (`check_missing`), so changing the limit re-renders and refetches nothing.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.atomic import write_bytes
from core.errors import SampleError, UserError
from core.npy import load_npz
from core.samples import MISSING_REASON

Mesh = tuple[np.ndarray, np.ndarray]  # (vertices, float32 nm; faces, int32)
LAYER_NAMES = {"em": "EM", "seg": "segmentation"}  # the layers of MISSING_REASON, as a message names them
MISSING_BITS = {"em": 1, "seg": 2}  # bits of the `missing` mask, on the EM grid


@dataclass
class FetchedSample:
    """Everything render needs of one bank row. `meshes`: the row's geometry roots (A, or A and B), cropped to the
    fetch box; `after`: a split's after roots, when both have meshes; `labels` on the EM grid: 0 neither, 1 A, 2 B."""

    meshes: list[Mesh]
    em: np.ndarray  # uint8, the 1.5 x window cutout
    labels: np.ndarray  # uint8, the EM's shape
    em_voxel_nm: np.ndarray  # float64 (3,)
    em_origin_nm: np.ndarray  # float64 (3,): where the cutout's voxel 0 lies
    em_missing_fraction: float  # of the EM window's voxels from absent EM chunks
    seg_missing_fraction: float  # ... from absent segmentation chunks
    crop_half_nm: float  # the mesh crop box's half width: a later run keeps the file while this is wide enough
    missing: np.ndarray | None = None  # uint8, MISSING_BITS per voxel; None when nothing was absent
    after: list[Mesh] = field(default_factory=list)

    @property
    def missing_fractions(self) -> dict[str, float]:
        return {"em": self.em_missing_fraction, "seg": self.seg_missing_fraction}

    # -- the file ----------------------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The npz's named arrays (the file's keys, in the order they are written)."""
        out: dict[str, np.ndarray] = {}
        for prefix, meshes in (("mesh", self.meshes), ("after", self.after)):
            for i, (verts, faces) in enumerate(meshes):
                out[f"{prefix}{i}_vertices"], out[f"{prefix}{i}_faces"] = verts, faces
        out["em"] = self.em
        out["labels"] = self.labels
        out["em_voxel_nm"] = np.asarray(self.em_voxel_nm, dtype=np.float64)
        out["em_origin_nm"] = np.asarray(self.em_origin_nm, dtype=np.float64)
        out["em_missing_fraction"] = np.float64(self.em_missing_fraction)
        out["seg_missing_fraction"] = np.float64(self.seg_missing_fraction)
        if self.missing is not None:
            out["missing"] = self.missing
        out["crop_half_nm"] = np.asarray(self.crop_half_nm, dtype=np.float64)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> FetchedSample:
        return cls(
            meshes=_meshes(arrays, "mesh"),
            after=_meshes(arrays, "after"),
            em=arrays["em"],
            labels=arrays["labels"],
            em_voxel_nm=np.asarray(arrays["em_voxel_nm"], dtype=np.float64),
            em_origin_nm=np.asarray(arrays["em_origin_nm"], dtype=np.float64),
            em_missing_fraction=float(arrays["em_missing_fraction"]),
            seg_missing_fraction=float(arrays["seg_missing_fraction"]),
            crop_half_nm=float(arrays["crop_half_nm"]),
            missing=arrays.get("missing"),
        )

    def save(self, path: Path) -> str:
        """Write the file (atomically); returns the sha256 of the bytes written."""
        buf = io.BytesIO()
        np.savez(buf, **self.to_arrays())
        data = buf.getvalue()
        write_bytes(path, data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: Path, sha256: str | None = None) -> FetchedSample:
        """The sample in a fetched file; with `sha256`, the bytes must match it (the fetch marker's record): a file
        altered on disk is removed, so that the next run fetches it again, and the partition stops (UserError)."""
        data = Path(path).read_bytes()
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            Path(path).unlink(missing_ok=True)
            raise UserError(
                f"fetched file {path} does not match the sha256 in its fetch marker (altered on disk); it was "
                "removed: rerun the build to fetch that sample again"
            )
        return cls.from_arrays(load_npz(io.BytesIO(data)))


def crop_half_of(path: Path) -> float:
    """The mesh crop half-width a fetched file was made with (-1 when there is no such file), read alone."""
    try:
        data = load_npz(str(path), ["crop_half_nm"])
        return float(data["crop_half_nm"]) if "crop_half_nm" in data else -1.0
    except (FileNotFoundError, OSError, ValueError):
        return -1.0


def check_missing(fractions: Mapping[str, float], max_fraction: float, what: str) -> None:
    """The missing-chunk rule: raise em_chunks_missing / seg_chunks_missing (EM first) when more than `max_fraction`
    of `what` (the EM window, a view's pixels) comes from absent chunks of that layer."""
    for layer, reason in MISSING_REASON.items():
        frac = float(fractions.get(layer, 0.0))
        if frac > max_fraction:
            raise SampleError(
                reason,
                f"{frac:.1%} of {what} comes from absent {LAYER_NAMES[layer]} chunks "
                f"(max_missing_fraction {max_fraction:g})",
            )


def _meshes(arrays: Mapping[str, np.ndarray], prefix: str) -> list[Mesh]:
    out = []
    while f"{prefix}{len(out)}_vertices" in arrays:
        i = len(out)
        out.append((arrays[f"{prefix}{i}_vertices"], arrays[f"{prefix}{i}_faces"]))
    return out
