"""Sample identity and labels: the rules of CONTRACT.md section 1 and the card, in one place."""

from __future__ import annotations

import json
from typing import Any

from pipeline.hashing import md5_hex

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
# (false_split_correction_label, false_merge_identification_label)
LABELS: dict[str, tuple[float | None, float | None]] = {
    "merge_edit": (1.0, None),
    "split_edit": (None, 1.0),
    "adjacent_control": (0.0, None),
    "junction_control": (None, 0.0),
    "synapse_control": (0.0, None),
}


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
