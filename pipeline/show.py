"""`python -m pipeline show <combined_sample_hash>`: one release row as text (found by shard.lookup.find_row,
which scans no shard). For a real species (config source: cave) a Neuroglancer link opens the EM and
segmentation layers of its config at the row's point, with segments A and B selected, at the time its EM
labels were resolved (shard/neuroglancer.py).
"""

from __future__ import annotations

import json

from shard.lookup import FoundRow

LABEL_KEYS = (
    "combined_sample_hash", "source_archive", "source_archive_sample_hash", "sample_type", "species", "split",
    "same_neuron", "task_routing", "false_split_correction_label", "false_merge_identification_label", "has_em",
    "has_after_mask", "present_slots", "shard_path",
)  # fmt: skip


def describe(found: FoundRow) -> str:
    """The row's identity and labels, then its metadata, as text."""
    side = found.sidecar
    lines = [f"{k}: {json.dumps(side.get(k))}" for k in LABEL_KEYS if k in side]
    meta = json.loads(side["metadata"])
    lines.append("metadata:")
    lines += [f"  {k}: {json.dumps(v)}" for k, v in sorted(meta.items())]
    return "\n".join(lines)
