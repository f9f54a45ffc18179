"""The dataset card states each species' own config values, never the schema's defaults (issue 26 item 7)."""

from __future__ import annotations

import re

from config.schema import SpeciesConfig, load_config
from core.release_schema import SPLITS
from core.samples import SAMPLE_TYPES
from shard.card import render_card


def _stats(species: list[str]) -> dict:
    """The smallest stats render_card reads: one train row of each species, no failures."""
    return {
        "rows": {s: len(species) if s == "train" else 0 for s in SPLITS},
        "total_rows": len(species),
        "by_type": {
            s: {t: (len(species) if s == "train" and t == "merge_edit" else 0) for t in SAMPLE_TYPES} for s in SPLITS
        },  # fmt: skip
        "by_species": {sp: {s: int(s == "train") for s in SPLITS} for sp in species},
        "split_edits": {"total": 0, "with_after_mask": 0},
        "shards": {s: {"n_shards": int(s == "train"), "bytes": 100 if s == "train" else 0} for s in SPLITS},
        "failures": {"total": 0, "by_stage_reason": [], "by_species": {}},
    }


def _config(species: str, **values: object) -> SpeciesConfig:
    return load_config("demo").model_copy(update={"species": species, **values})


def _missing_sentence(card: str) -> str:
    return re.search(r"a sample with more than .*? of its EM window", card).group(0)


def test_the_card_states_each_species_own_max_missing_fraction_not_the_schemas_default():
    default = SpeciesConfig.model_fields["max_missing_fraction"].default
    configs = {"demo": _config("demo", max_missing_fraction=0.1), "fly": _config("fly", max_missing_fraction=0.05)}
    sentence = _missing_sentence(render_card(_stats(["demo", "fly"]), {}, configs))
    assert "(demo 0.1, fly 0.05)" in sentence, sentence
    assert "default" not in sentence and f"{default:g}" not in sentence, sentence


def test_without_a_species_config_the_card_names_the_key_without_a_number():
    sentence = _missing_sentence(render_card(_stats(["demo"]), {}))
    assert "`max_missing_fraction` of its EM window" in sentence and not re.search(r"\d", sentence), sentence
