"""The identity, hashing and label rules of the contract (card; /work/shared/CONTRACT.md §1), pinned by literal values.

The card's own rows give combined_sample_hash for their archive and source_archive_sample_hash; the op recipes are the
first releases' strings. A one-character change to any recipe or separator fails here, without a build.
"""

from __future__ import annotations

import hashlib

import pytest

from core import samples
from core.samples import (
    LABELS,
    SAME_NEURON,
    archive_hash,
    combined_hash,
    junction_key,
    metadata_keys,
    op_key,
    source_archive,
    synapse_key,
    task_routing,
)

# (combined_sample_hash, source_archive_sample_hash, source_archive, sample_type): the first rows of the seed card
CARD_ROWS = [
    ("81c5a636674e76552ed428d6c3f1148c", "88cda73850c3", "unified_fly", "merge_edit"),
    ("8b8301f8499a8c916ea4586aaca884de", "60a789906f67", "unified_controls_fly", "junction_control"),
    ("f68dc81a0a77a76a2943da4839464cc9", "a8c0215dbc61", "unified_mouse", "split_edit"),
    ("5cbf55b84d810d2c6e1e0fcc847edc2e", "1f102dfa1e6f", "unified_fly", "adjacent_control"),
    ("d61ab3d8dd6bbf5e55a8c51e13d247b9", "a460da64c995", "unified_controls_mouse", "junction_control"),
]


@pytest.mark.parametrize(("combined", "archive_sample", "archive", "sample_type"), CARD_ROWS)
def test_combined_hash_is_the_cards_recipe(combined, archive_sample, archive, sample_type):
    assert combined_hash(archive, archive_sample) == combined
    species = archive.rsplit("_", 1)[1]
    assert source_archive(sample_type, species) == archive


def test_source_archive_sample_hash_recipes():
    assert op_key("merge_edit", 1) == "1:endpoint_error_corr:"
    assert op_key("split_edit", 2, 11, 12) == "2:endpoint_error_corr:ctrl_11_12"
    assert op_key("adjacent_control", 3, 21, 22) == "3:endpoint_error_corr:ctrl_21_22"
    assert junction_key(5, (1.4, 2.5, 2.6)) == "junction:5:1_2_3"  # rounded to whole nm
    assert synapse_key(7) == "synapse:7"
    assert archive_hash("1:endpoint_error_corr:") == "c3391056e332"
    assert archive_hash("2:endpoint_error_corr:ctrl_11_12") == "c765776376fe"
    assert archive_hash("junction:5:1_2_3") == hashlib.md5(b"junction:5:1_2_3").hexdigest()[:12] == "8e003a7802b5"
    assert len(archive_hash("synapse:7")) == 12


def test_labels_same_neuron_and_routing_per_type():
    """The card's table: labels 1.0 / 0.0 / null by type (float, never bool), routing by type and after mask."""
    assert LABELS == {
        "merge_edit": (1.0, None),
        "split_edit": (None, 1.0),
        "adjacent_control": (0.0, None),
        "junction_control": (None, 0.0),
        "synapse_control": (0.0, None),
    }
    assert all(type(v) is float for pair in LABELS.values() for v in pair if v is not None)
    assert SAME_NEURON == {"merge_edit": True, "split_edit": False, "adjacent_control": False,
                           "junction_control": True, "synapse_control": False}  # fmt: skip
    assert set(samples.DUAL_TYPES) == {"merge_edit", "adjacent_control", "synapse_control"}
    for t in samples.DUAL_TYPES:
        assert task_routing(t, False) == ["false_split_correction"]
    assert task_routing("split_edit", True) == ["false_merge_identification", "split_mask_generation"]
    assert task_routing("split_edit", False) == ["false_merge_identification"]
    assert task_routing("junction_control", True) == ["false_merge_identification"]


def test_archives_share_one_metadata_key_set():
    ops = {metadata_keys(t) for t in samples.OP_TYPES}
    controls = {metadata_keys(t) for t in ("junction_control", "synapse_control")}
    assert len(ops) == 1 and len(controls) == 1
    op_keys, control_keys = set(ops.pop()), set(controls.pop())
    needed = {"species", "image_types", "cutout_timestamp", "view_extent_nm", "render_center_nm"}
    assert needed | {"operation_id", "timestamp", "is_merge", "before_root_ids", "after_root_ids", "strategy",
                     "source_operation_id", "base_root", "adjacent_root", "edit_point_nm"} <= op_keys  # fmt: skip
    assert needed | {"root_id", "degree", "pre_pt_root_id", "post_pt_root_id", "interface_point_nm",
                     "synapse_ctr_pt_nm"} <= control_keys  # fmt: skip
    assert samples.COORD_KEY["junction_control"] == "interface_point_nm"
    assert samples.COORD_KEY["synapse_control"] == "synapse_ctr_pt_nm"


def test_timestamps_are_whole_epoch_seconds():
    assert samples.epoch_seconds(1700000000.999) == 1700000000
    assert samples.epoch_seconds(-0.5) == -1  # the second it falls in
    assert samples.epoch_ms(1700000000.1234) == 1700000000123
    assert samples.dumps_metadata({"b": 1, "a": None}) == '{"a": null, "b": 1}'
