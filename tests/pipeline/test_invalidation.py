"""What a changed config key redoes: every key declared by a stage or listed as no input, and the README's table is
the one the stages' declarations give (pipeline/invalidation.py)."""

from __future__ import annotations

import pytest

from config.schema import SpeciesConfig
from pipeline import invalidation as inv
from pipeline.build import SHARD
from pipeline.invalidation import NOT_INPUTS, invalidation, readme_table, redoes, table, with_table
from pipeline.stages.species import SPECIES_STAGES
from tests.conftest import REPO


def test_every_config_key_is_an_input_of_some_stage_or_declared_not_one():
    declared = invalidation()
    for key in SpeciesConfig.model_fields:
        assert (key in declared) != (key in NOT_INPUTS), key
    assert not set(declared) - set(SpeciesConfig.model_fields)  # no stage reads a key the config does not have


def test_the_readme_table_says_what_each_key_redoes():
    assert readme_table((REPO / "README.md").read_text()) == table()


def test_a_key_added_to_a_stages_reads_changes_the_table(monkeypatch):
    before = table()
    render = SPECIES_STAGES["render"]
    monkeypatch.setattr(type(render), "reads", (*render.reads, "split_salt"))
    assert table() != before
    assert readme_table((REPO / "README.md").read_text()) != table()  # the README's table no longer passes


def test_a_key_dropped_from_a_stages_reads_fails_the_first_property(monkeypatch):
    fetch = SPECIES_STAGES["fetch"]
    monkeypatch.setattr(type(fetch), "reads", tuple(k for k in fetch.reads if k != "faults"))
    assert "faults" not in invalidation() and "faults" not in NOT_INPUTS


@pytest.mark.parametrize(
    ("key", "redone"),
    [
        ("seed", "render; then shard"),
        ("split_salt", "split; then shard"),
        ("shard_bytes", "shard"),
        ("max_missing_fraction", "render, shard"),  # applied by render (never a refetch); the card states it
        ("em_mip", "fetch; then render only of the samples whose inputs changed; shard"),
        ("budgets", "bank selection; then fetch and render only of the samples whose inputs changed; split, shard"),
        ("as_of", "bank; then fetch and render only of the samples whose inputs changed; split, shard"),
        (
            "extent_nm",
            "render, fetch only of the samples whose mesh crop box must grow, never when it shrinks; then shard",
        ),
        ("fetch_threads", inv.NOT_INPUTS_REDO),
    ],
)
def test_what_a_key_redoes(key, redone):
    assert redoes(key) == redone


def test_each_stage_declares_its_inputs():
    """The declarations themselves, pinned: a key added to or dropped from a stage fails here by name."""
    reads = {name: set(stage.reads) for name, stage in SPECIES_STAGES.items()}
    source = {"source", "datastack", "server_address"}
    assert reads["bank"] == source | {
        "as_of", "materialization_version", "proofread_table", "proofread_from_delta_roots", "seg_cloudpath",
        "seg_mip", "synapse_table", "synapse_score_above", "junctions_per_neuron", "adjacent_per_op",
    }  # fmt: skip
    assert reads["fetch"] == source | {"em_cloudpath", "seg_cloudpath", "em_mip", "seg_mip", "em_window_nm", "faults"}
    assert reads["render"] == {"extent_nm", "center_jitter_nm", "seed", "em_window_nm", "max_missing_fraction"}
    assert reads["split"] == source | {"seg_cloudpath", "split_salt", "cube_nm", "split_ratios"}
    assert set(SHARD.reads) == {"shard_bytes", "max_missing_fraction"}
    assert SPECIES_STAGES["bank"].select_reads == ("budgets",)
    assert set(SPECIES_STAGES["fetch"].widened_by) == {"extent_nm", "center_jitter_nm"}
    consumes = {name: stage.consumes for name, stage in [*SPECIES_STAGES.items(), (SHARD.name, SHARD)]}
    assert consumes == {"bank": (), "fetch": ("bank",), "render": ("fetch",), "split": ("bank",),
                        "shard": ("render", "split")}  # fmt: skip


def test_make_readme_rewrites_only_the_table():
    text = (REPO / "README.md").read_text()
    stale = text.replace(table(), "| key | redoes |\n|---|---|\n| `seed` | nothing |")
    assert stale != text
    assert with_table(stale) == text
