"""A `source: cave` species config that reads the demo world through a running twin.

The demo config with its source swapped: the same windows, budgets, seed and salt, so a build through
the twin must give the demo build's rows. Pinned to the twin's latest materialization version, whose
timestamp is the demo world's as_of.
"""

from __future__ import annotations

from config.schema import SpeciesConfig
from pipeline.twin.info import DATASTACK, TABLE_ID
from pipeline.twin.model import default_versions

LATEST_VERSION = max(v.version for v in default_versions())


def twin_config(demo: SpeciesConfig, url: str, **overrides: object) -> SpeciesConfig:
    raw = demo.model_dump()
    raw.update(
        {
            "source": "cave",
            "datastack": DATASTACK,
            "server_address": url,
            "em_cloudpath": f"precomputed://{url}/em",
            "seg_cloudpath": f"graphene://{url}/segmentation/table/{TABLE_ID}",
            "as_of": None,
            "materialization_version": LATEST_VERSION,
            "proofread_table": "proofread_neurons",
            "synapse_table": "synapses",
            "demo_world": None,
        }
    )
    raw.update(overrides)
    return SpeciesConfig.model_validate(raw)
