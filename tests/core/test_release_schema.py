"""The release's one schema (core/release_schema.py; contract §6): the card's columns and types, a Hugging
Face feature in the schema metadata for every column, the seven image columns as Image features stored as
struct {bytes, path}, sidecars without image bytes."""

from __future__ import annotations

import json

import pyarrow as pa

from core.release_schema import (
    IMAGE_COLUMNS,
    METADATA_SIDECAR_SCHEMA,
    NON_IMAGE_COLUMNS,
    RELEASE_SCHEMA,
    RENDER_PART_SCHEMA,
    SPLIT_DIRS,
    SPLIT_RATIOS,
    SPLITS,
)

CARD_COLUMNS = (
    "combined_sample_hash", "source_archive_sample_hash", "source_archive", "sample_type", "same_neuron",
    "task_routing", "false_split_correction_label", "false_merge_identification_label", "split", "species", "has_em",
    "has_after_mask", "present_slots", "metadata", "geometry", "em_xy_before", "em_xz_before", "em_yz_before",
    "em_best_before", "split_mask_front", "split_mask_side", "split_mask_top",
)  # fmt: skip


def _features(schema: pa.Schema) -> dict:
    return json.loads(schema.metadata[b"huggingface"])["info"]["features"]


def test_the_release_has_the_cards_columns_in_its_order_with_labels_as_float64():
    assert tuple(RELEASE_SCHEMA.names) == CARD_COLUMNS
    for label in ("false_split_correction_label", "false_merge_identification_label"):
        assert RELEASE_SCHEMA.field(label).type == pa.float64()
    assert RELEASE_SCHEMA.field("geometry").type == pa.binary()
    assert RENDER_PART_SCHEMA.names == [c for c in CARD_COLUMNS if c != "split"]


def test_every_column_has_a_hugging_face_feature_and_images_are_image_structs():
    for schema in (RELEASE_SCHEMA, RENDER_PART_SCHEMA, METADATA_SIDECAR_SCHEMA):
        assert set(_features(schema)) == set(schema.names)
    features = _features(RELEASE_SCHEMA)
    assert len(IMAGE_COLUMNS) == 7
    for column in IMAGE_COLUMNS:
        assert features[column] == {"_type": "Image"}
        assert RELEASE_SCHEMA.field(column).type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert features["false_split_correction_label"] == {"dtype": "float64", "_type": "Value"}
    assert features["task_routing"]["_type"] == "Sequence"


def test_sidecars_have_every_non_image_column_and_the_shard_path_and_no_bytes():
    assert METADATA_SIDECAR_SCHEMA.names == [*NON_IMAGE_COLUMNS, "shard_path"]
    assert not {"geometry", *IMAGE_COLUMNS} & set(METADATA_SIDECAR_SCHEMA.names)
    assert set(NON_IMAGE_COLUMNS) == set(CARD_COLUMNS) - {"geometry", *IMAGE_COLUMNS}


def test_splits_folders_and_ratios_are_the_contracts():
    assert SPLITS == ("train", "validation", "test")
    assert SPLIT_DIRS == {"train": "train", "validation": "val", "test": "test"}
    assert SPLIT_RATIOS == (0.75, 0.125, 0.125)
