"""The fetch stage's meshes (beside fetch_sample.py): each root's mesh fetched at most once per partition, one
bounded fetch covering every sample's box.

A partition's samples often share neurons (an edit's roots, a neuron's junctions); fetching each
sample's roots separately would ask the servers again and again. This helper knows, before the first
sample, which roots the partition needs and where: for each root, the bounding box of all the fetch
boxes that need it. The first sample that needs a root fetches it (bounded to that union box) and the
mesh is kept until the partition's last sample that needs it has taken its crop, then dropped.

A real absence (`missing_mesh`) is remembered as such; any other error is not (the next sample asks
again), so an injected or transient fault stays the sample's own.
"""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import trimesh

from config import SpeciesConfig
from core.errors import SampleError


def sample_box(cfg: SpeciesConfig, row: dict) -> tuple[np.ndarray, np.ndarray]:
    """The fetch box of a bank row: its point +- the fetch crop's half size (pipeline.stages.fetch_sample)."""
    from pipeline.stages.fetch_sample import crop_box_half_nm

    center = np.asarray(row["coord_nm"], dtype=np.float64)
    half = crop_box_half_nm(cfg)
    return center - half, center + half


def mesh_roots(row: dict) -> list[int]:
    """Every root whose mesh fetch_sample reads for this row."""
    roots = [int(r) for r in row["geometry_roots"]]
    if row["sample_type"] == "split_edit":
        roots += [int(r) for r in row["after_roots"]]
    return roots


class PartitionMeshes:
    def __init__(self, source, cfg: SpeciesConfig, rows: list[dict]) -> None:  # noqa: ANN001 - a Source
        self.source = source
        self.boxes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.uses: Counter[int] = Counter()
        for row in rows:
            lo, hi = sample_box(cfg, row)
            for root in set(mesh_roots(row)):
                self.uses[root] += 1
                if root in self.boxes:
                    self.boxes[root] = (np.minimum(self.boxes[root][0], lo), np.maximum(self.boxes[root][1], hi))
                else:
                    self.boxes[root] = (lo, hi)
        self._meshes: dict[int, trimesh.Trimesh | SampleError] = {}
        self._fetching: dict[int, threading.Event] = {}  # roots one thread is fetching; the others wait for it
        self._lock = threading.Lock()
        self.fetches = 0

    def mesh(self, root_id: int) -> trimesh.Trimesh:
        """The root's mesh within the partition's union box for it (fetched on first use, by one thread: a
        second thread that needs it meanwhile waits for that fetch rather than asking the server again)."""
        root = int(root_id)
        if root not in self.boxes:
            raise KeyError(f"root {root} is not needed by this partition's samples")
        while True:
            with self._lock:
                got = self._meshes.get(root)
                pending = self._fetching.get(root) if got is None else None
                if got is None and pending is None:
                    self._fetching[root] = threading.Event()
                    break
            if got is not None:
                if isinstance(got, SampleError):
                    raise got
                return got
            pending.wait()  # another thread's fetch: its mesh, or its failure (then this one tries itself)
        try:
            got = self.source.mesh(root, box_nm=self.boxes[root])
        except SampleError as exc:
            if exc.reason != "missing_mesh":
                self._release(root)  # not remembered: a waiting sample asks again, as its own
                raise
            got = exc
        except BaseException:
            self._release(root)
            raise
        with self._lock:
            self._meshes[root] = got
            self.fetches += 1
        self._release(root)
        if isinstance(got, SampleError):
            raise got
        return got

    def _release(self, root: int) -> None:
        with self._lock:
            event = self._fetching.pop(root)
        event.set()

    def done(self, row: dict) -> None:
        """A sample finished (built or failed): drop the meshes no later sample needs."""
        with self._lock:
            for root in set(mesh_roots(row)):
                self.uses[root] -= 1
                if self.uses[root] <= 0:
                    self._meshes.pop(root, None)
