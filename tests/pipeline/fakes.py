"""A tiny in-memory Source for bank tests: a few ops, a skeleton, synapses, a label volume."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from core.errors import SampleError
from pipeline.sources.base import Cutout, OperationDetails, Skeleton
from pipeline.stages.bank_candidates import BankResult, bank_candidates, select_bank

A, B, C, X, Y = 101, 102, 103, 201, 202  # merge A+B -> C; X, Y bystanders
P, Q = 301, 302  # proofread neurons
S1, S2 = 401, 402  # split S -> S1 + S2


class FakeSource:
    species = "demo"

    def __init__(self, drop_column: str | None = None, duplicate_op: bool = False):
        self.drop_column = drop_column
        self.duplicate_op = duplicate_op

    def base_resolution_nm(self):
        return (4.0, 4.0, 40.0)

    def canonical_bbox_nm(self):
        return ((0.0, 0.0, 0.0), (400_000.0, 400_000.0, 400_000.0))

    def as_of(self):
        return 2000.0

    def proofread_roots(self):
        return [Q, P]

    def change_log(self, root_ids):
        rows = [
            (P, 1, 100.0, True, [A, B], [C]),
            (P, 2, 200.0, False, [C], [S1, S2]),
            (Q, 2, 200.0, False, [C], [S1, S2]),  # the same op in two roots' histories
            (P, 3, 300.0, True, [A, B], [C]),  # op without points
        ]
        if self.duplicate_op:
            rows.append((Q, 1, 150.0, True, [A, B], [C]))  # conflicting duplicate of op 1
        cols = ["root_id", "operation_id", "timestamp", "is_merge", "before_root_ids", "after_root_ids"]
        data = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
        if self.drop_column:
            data.pop(self.drop_column)
        return pa.table(data)

    def operation_details(self, operation_ids):
        pts = {1: (((10, 10, 10),), ((12, 10, 10),)), 2: (((20, 20, 20), (22, 20, 20)), ((30, 20, 20),)), 3: ((), ())}
        return {
            i: OperationDetails(i, 100.0 * i, i != 2, (), (), src, snk)
            for i, (src, snk) in pts.items()
            if i in operation_ids
        }

    def roots_at(self, supervoxel_ids, timestamp):
        return np.asarray(supervoxel_ids, dtype=np.uint64)

    def synapses(self, pre_root_ids, post_root_ids):
        return pa.table(
            {
                "id": [7, 8, 9, 10],
                "pre_pt_root_id": pa.array([P, P, None, P], pa.uint64()),
                "post_pt_root_id": pa.array([Q, P, Q, X], pa.uint64()),
                "ctr_pt_position_nm": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]],
                "cleft_score": [50.0, 60.0, 70.0, 80.0],
                "connection_score": [1.5, 2.5, 3.5, 4.5],
                "gaba": [0.1, 0.2, 0.3, 0.4],
                "pre_pt_position_nm": [[1.0, 2.0, 2.0]] * 4,  # a point, not a score: not in metadata
            }
        )

    def skeleton(self, root_id):
        if root_id == Q:
            raise SampleError("no_skeleton", "no level-2 graph")
        verts = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 0], [0, 0, 100], [200, 0, 0], [100, 100, 0], [100, 0, 100]])
        edges = np.array([[0, 1], [0, 2], [0, 3], [1, 4], [1, 5], [1, 6]])
        return Skeleton(verts.astype(float), edges)

    def segmentation_cutout(self, center_nm, size_nm, timestamp):
        vol = np.zeros((8, 8, 8), dtype=np.uint64)
        vol[:4] = A
        vol[4:] = B
        vol[0, 0, :] = X  # touches A only
        vol[7, 7, :] = Y  # touches B
        vol[3, 3, 3] = C  # an op root: never an adjacent control
        return Cutout(vol, (62.5, 62.5, 62.5), (0.0, 0.0, 0.0))


def build_bank(source, cfg):  # noqa: ANN001, ANN201 - a test helper
    """The whole bank in one batch (tests, small sources): candidates of every proofread root, then selection."""
    roots = sorted({int(r) for r in source.proofread_roots()})
    found = bank_candidates(source, cfg, roots, roots)
    selected = select_bank(found.rows, cfg.budgets.model_dump(), cfg.species)
    return BankResult(selected.rows, found.failures + selected.failures)
