"""A `source: cave` species config that reads the demo world through a running twin.

The demo config with its source swapped: the same windows, budgets, seed and salt, so a build through
the twin must give the demo build's rows. Pinned to the twin's latest materialization version, whose
timestamp is the demo world's as_of.
"""

from __future__ import annotations

from config.schema import SpeciesConfig
from sim.twin.info import DATASTACK, TABLE_ID
from sim.twin.model import default_versions

LATEST_VERSION = max(v.version for v in default_versions())


def seg_cloudpath(url: str, flavor: str = "v2") -> str:
    """v1 as config/fly.yaml names FlyWire's (`segmentation/1.0/...`: cloud-volume then asks the legacy
    `meshing/1.0/...` manifest route), v2 as config/mouse.yaml names MICrONS' (`segmentation/table/...`)."""
    return f"graphene://{url}/segmentation/{'1.0' if flavor == 'v1' else 'table'}/{TABLE_ID}"


def twin_config(demo: SpeciesConfig, url: str, flavor: str = "v2", **overrides: object) -> SpeciesConfig:
    raw = demo.model_dump()
    raw.update(
        {
            "source": "cave",
            "datastack": DATASTACK,
            "server_address": url,
            "em_cloudpath": f"precomputed://{url}/em",
            "seg_cloudpath": seg_cloudpath(url, flavor),
            "as_of": None,
            "materialization_version": LATEST_VERSION,
            "proofread_table": "proofread_neurons",
            "synapse_table": "synapses",
            "demo_world": None,
        }
    )
    raw.update(overrides)
    return SpeciesConfig.model_validate(raw)
