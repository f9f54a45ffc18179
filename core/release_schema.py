"""The one explicit schema of the release, in the card's column order, with Hugging Face features.

Render parts (work/<species>/render/part-*.parquet) use the same columns minus `split`, which is
assigned later so that a new split never needs a re-render.
"""

from __future__ import annotations

import json

import pyarrow as pa

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
EM_COLUMNS = ("em_xy_before", "em_xz_before", "em_yz_before", "em_best_before")
SPLIT_MASK_COLUMNS = ("split_mask_front", "split_mask_side", "split_mask_top")
IMAGE_COLUMNS = EM_COLUMNS + SPLIT_MASK_COLUMNS
SPLITS = ("train", "validation", "test")
# The spatial split's defaults (config keys cube_nm and split_ratios): 80 um cubes, 75 / 12.5 / 12.5 %.
SPLIT_CUBE_NM = 80_000.0
SPLIT_RATIOS = (0.75, 0.125, 0.125)
SPLIT_DIRS = {"train": "train", "validation": "val", "test": "test"}
# Split-mask pixel values (stated in the dataset card).
SPLIT_MASK_BACKGROUND, SPLIT_MASK_A, SPLIT_MASK_B = 0, 128, 255

_FIELDS: list[tuple[str, pa.DataType]] = [
    ("combined_sample_hash", pa.string()),
    ("source_archive_sample_hash", pa.string()),
    ("source_archive", pa.string()),
    ("sample_type", pa.string()),
    ("same_neuron", pa.bool_()),
    ("task_routing", pa.list_(pa.string())),
    ("false_split_correction_label", pa.float64()),
    ("false_merge_identification_label", pa.float64()),
    ("split", pa.string()),
    ("species", pa.string()),
    ("has_em", pa.bool_()),
    ("has_after_mask", pa.bool_()),
    ("present_slots", pa.list_(pa.string())),
    ("metadata", pa.string()),
    ("geometry", pa.binary()),
    *[(name, IMAGE_TYPE) for name in IMAGE_COLUMNS],
]
COLUMNS = tuple(name for name, _ in _FIELDS)
NON_IMAGE_COLUMNS = tuple(c for c in COLUMNS if c != "geometry" and c not in IMAGE_COLUMNS)


def _hf_feature(dtype: pa.DataType, name: str) -> dict:
    if name in IMAGE_COLUMNS:
        return {"_type": "Image"}
    if pa.types.is_list(dtype):
        return {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"}
    names = {pa.string(): "string", pa.bool_(): "bool", pa.float64(): "float64", pa.binary(): "binary"}
    return {"dtype": names[dtype], "_type": "Value"}


def hf_features(fields: list[tuple[str, pa.DataType]]) -> dict:
    return {name: _hf_feature(dtype, name) for name, dtype in fields}


def _with_hf_metadata(fields: list[tuple[str, pa.DataType]]) -> pa.Schema:
    meta = {"info": {"features": hf_features(fields)}}
    return pa.schema(fields, metadata={b"huggingface": json.dumps(meta, sort_keys=True).encode()})


RELEASE_SCHEMA = _with_hf_metadata(_FIELDS)
RENDER_PART_SCHEMA = _with_hf_metadata([f for f in _FIELDS if f[0] != "split"])
METADATA_SIDECAR_SCHEMA = _with_hf_metadata(
    [f for f in _FIELDS if f[0] in NON_IMAGE_COLUMNS] + [("shard_path", pa.string())]
)


def same_schema(got: pa.Schema, want: pa.Schema) -> bool:
    """Names, types and the Hugging Face features equal. (Parquet names list items `element` on
    read-back, which pyarrow's equality ignores without metadata; the HF metadata must match exactly.)"""
    hf = b"huggingface"
    return got.equals(want, check_metadata=False) and (got.metadata or {}).get(hf) == want.metadata[hf]
