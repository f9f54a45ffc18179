"""Sample identity and labels: the rules of ARCHITECTURE.md, contract §1 and the card, in one place."""

from __future__ import annotations

import json
import math
from typing import Any

from core.hashing import md5_hex

SAMPLE_TYPES = ("merge_edit", "split_edit", "adjacent_control", "junction_control", "synapse_control")
OP_TYPES = ("merge_edit", "split_edit", "adjacent_control")
DUAL_TYPES = frozenset({"merge_edit", "adjacent_control", "synapse_control"})
COORD_KEY = {
    "merge_edit": "edit_point_nm",
    "split_edit": "edit_point_nm",
    "adjacent_control": "edit_point_nm",
    "junction_control": "interface_point_nm",
    "synapse_control": "synapse_ctr_pt_nm",
}
SAME_NEURON = {
    "merge_edit": True,
    "split_edit": False,
    "adjacent_control": False,
    "junction_control": True,
    "synapse_control": False,
}
# Adjacent controls: roots face-adjacent to an op's before root in a cutout this wide at T-1 (the bank; the demo
# world counts what it plants with the same width).
ADJACENT_CUTOUT_NM = 500.0
# Neurotransmitter score columns a synapse table may have (FlyWire's synapses_nt_v1; the demo world's table).
NEUROTRANSMITTERS = ("gaba", "ach", "glut", "oct", "ser", "da")
# The ledger reason of a sample whose EM window has too much from absent chunks of a layer.
MISSING_REASON = {"em": "em_chunks_missing", "seg": "seg_chunks_missing"}
# (false_split_correction_label, false_merge_identification_label)
LABELS: dict[str, tuple[float | None, float | None]] = {
    "merge_edit": (1.0, None),
    "split_edit": (None, 1.0),
    "adjacent_control": (0.0, None),
    "junction_control": (None, 0.0),
    "synapse_control": (0.0, None),
}


# Metadata keys (JSON, sorted). Rows of one archive share one key set, null where a key does not apply.
# unified_{species} (merge_edit, split_edit, adjacent_control): `timestamp` is the operation's time in whole
# epoch seconds as in the release; `timestamp_ms` keeps it exactly (epoch milliseconds, CAVE's precision).
OP_META_KEYS = (
    "adjacent_root", "after_root_ids", "base_root", "before_root_ids", "is_merge", "operation_id",
    "source_operation_id", "strategy", "timestamp", "timestamp_ms",
)  # fmt: skip
# unified_controls_{species} (junction_control, synapse_control), plus the synapse table's scalar score
# columns where it has them (cleft_score, connection_score, neurotransmitter scores)
CONTROL_META_KEYS = (
    "degree", "interface_point_nm", "post_pt_root_id", "pre_pt_root_id", "root_id", "synapse_ctr_pt_nm",
    "synapse_id",
)  # fmt: skip
# every row: `cutout_timestamp` is when the EM masks' labels were resolved, integer epoch seconds on control
# rows and null on operation rows (whose masks are resolved at the operation's time: T - 1 s for merges and
# adjacent controls, T for splits), as in the release
COMMON_META_KEYS = ("cutout_timestamp", "species")
# added by render: the rendered extent and centre, the EM views' centre, best plane and scores, and the
# fractions of the EM window from absent EM / segmentation chunks
RENDER_META_KEYS = (
    "em_best_normal", "em_best_score", "em_cardinal_scores", "em_missing_fraction", "em_view_center_nm",
    "image_types", "render_center_nm", "seg_missing_fraction", "view_extent_nm",
)  # fmt: skip


def metadata_keys(sample_type: str, score_keys: tuple[str, ...] = (), rendered: bool = True) -> tuple[str, ...]:
    """The sorted metadata key set of a row of `sample_type` (as the bank writes it, plus render's keys)."""
    own = OP_META_KEYS if sample_type in OP_TYPES else CONTROL_META_KEYS + tuple(score_keys)
    keys = {*own, *COMMON_META_KEYS, COORD_KEY[sample_type], *(RENDER_META_KEYS if rendered else ())}
    return tuple(sorted(keys))


def epoch_seconds(t: float) -> int:
    """Whole epoch seconds (the release's form of a timestamp): the second that `t` falls in."""
    return int(math.floor(float(t)))


def epoch_ms(t: float) -> int:
    return int(round(float(t) * 1000.0))


def source_archive(sample_type: str, species: str) -> str:
    return f"unified_{species}" if sample_type in OP_TYPES else f"unified_controls_{species}"


def archive_hash(key: str) -> str:
    """`source_archive_sample_hash`: 12 hex digits of md5 of the canonical key (first releases' recipe)."""
    return md5_hex(key)[:12]


def combined_hash(archive: str, sample_hash: str) -> str:
    return md5_hex(f"{archive}|{sample_hash}")


def op_key(sample_type: str, operation_id: int, a: int | None = None, b: int | None = None) -> str:
    if sample_type == "merge_edit":
        return f"{operation_id}:endpoint_error_corr:"
    return f"{operation_id}:endpoint_error_corr:ctrl_{a}_{b}"


def junction_key(root_id: int, point_nm: tuple[float, float, float]) -> str:
    x, y, z = (int(round(v)) for v in point_nm)
    return f"junction:{root_id}:{x}_{y}_{z}"


def synapse_key(synapse_id: int) -> str:
    return f"synapse:{synapse_id}"


def task_routing(sample_type: str, has_after_mask: bool) -> list[str]:
    if sample_type in DUAL_TYPES:
        return ["false_split_correction"]
    routes = ["false_merge_identification"]
    if sample_type == "split_edit" and has_after_mask:
        routes.append("split_mask_generation")
    return routes


def dumps_metadata(meta: dict[str, Any]) -> str:
    """Metadata JSON as the release stores it: sorted keys, root ids already strings."""
    return json.dumps(meta, sort_keys=True)
