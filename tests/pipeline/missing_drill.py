"""Missing-chunk drills: remove chunk files from a demo world's layer, then audit a release against the world.

The audit is independent of the pipeline's own detection: for each shipped row it places the pixels of the
cardinal EM views in the volume (from the row's metadata: the views' centre, the window) and counts those whose
chunk file is not on disk. Chunks outside the volume's bounds are padding and never count.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CARDINAL_AXES = {  # (column axis, row axis, normal axis) of each cardinal view, as documented
    "em_xy_before": (0, 1, 2),
    "em_xz_before": (0, 2, 1),
    "em_yz_before": (1, 2, 0),
}


def _scale(layer: Path) -> dict:
    return json.loads((layer / "info").read_text())["scales"][0]


def chunk_files(layer: Path) -> list[Path]:
    return sorted(p for p in (layer / _scale(layer)["key"]).iterdir() if p.is_file())


def remove_every_third_chunk(layer: Path) -> list[str]:
    """Delete a third of the layer's chunk files (every third in name order); returns their names."""
    removed = []
    for i, path in enumerate(chunk_files(layer)):
        if i % 3 == 0:
            path.unlink()
            removed.append(path.name)
    return removed


class ChunkPresence:
    """Which chunks of a precomputed layer have a file on disk (any compression suffix)."""

    def __init__(self, layer: Path) -> None:
        sc = _scale(layer)
        self.res = np.asarray(sc["resolution"], dtype=np.float64)
        self.size = np.asarray(sc["chunk_sizes"][0], dtype=np.int64)
        self.lo = np.asarray(sc["voxel_offset"], dtype=np.int64)
        self.hi = self.lo + np.asarray(sc["size"], dtype=np.int64)
        self.present = set()
        for p in chunk_files(layer):
            name = p.name.split(".")[0]
            starts = tuple(int(part.split("-")[0]) for part in name.split("_"))
            self.present.add(tuple((np.asarray(starts) - self.lo) // self.size))

    def missing_at(self, points_nm: np.ndarray) -> np.ndarray:
        """True where a point falls in a chunk inside the bounds whose file is absent."""
        vox = np.floor(points_nm / self.res).astype(np.int64)
        inside = np.all((vox >= self.lo) & (vox < self.hi), axis=-1)
        idx = (vox - self.lo) // self.size
        flat = idx.reshape(-1, 3)
        have = np.array([tuple(k) in self.present for k in flat.tolist()]).reshape(inside.shape)
        return inside & ~have


def cardinal_missing_fractions(meta: dict, presence: ChunkPresence, window_nm: float, res: int = 224) -> dict:
    """Fraction of each cardinal view's pixels whose point on the view's central plane is in an absent chunk."""
    centre = np.asarray(meta["em_view_center_nm"], dtype=np.float64)
    s = ((np.arange(res) + 0.5) / res * 2.0 - 1.0) * window_nm / 2.0
    out = {}
    for view, (col, row, _normal) in CARDINAL_AXES.items():
        pts = np.broadcast_to(centre, (res, res, 3)).copy()
        pts[..., col] += s[None, :]
        pts[..., row] += s[:, None]
        out[view] = float(presence.missing_at(pts).mean())
    return out
