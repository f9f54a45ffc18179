"""A `source: cave` species config that reads the demo world through a running twin.

The demo config with its source swapped: the same windows, budgets, seed and salt, so a build through
the twin must give the demo build's rows. Pinned to the demo config's time as a real build is: to the twin's
materialization version made at the config's as_of when there is one (the shipped demo config's as_of is the
world's, the latest version's time), else to live queries at that as_of (caveclient brings the roots of the version
before it to as_of); a demo config pinned to a version keeps it.
"""

from __future__ import annotations

from config.schema import SpeciesConfig
from sim.twin.info import DATASTACK, TABLE_ID
from sim.twin.model import Version, default_versions

LATEST_VERSION = max(v.version for v in default_versions())


def pinned_time(demo: SpeciesConfig, versions: tuple[Version, ...] | None = None) -> dict[str, object]:
    """`as_of` and `materialization_version` of the twin's config for the demo config's time: the live version made
    at the demo's as_of (the tables frozen then, what the demo source reads at that time), else live queries at
    as_of; a demo config without as_of keeps its version."""
    if demo.as_of is None:
        return {"as_of": None, "materialization_version": demo.materialization_version}
    for v in versions or default_versions():
        if not v.expired and v.timestamp == float(demo.as_of):
            return {"as_of": None, "materialization_version": v.version}
    return {"as_of": float(demo.as_of), "materialization_version": None}


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
            **pinned_time(demo),
            "proofread_table": "proofread_neurons",
            "synapse_table": "synapses",
            "demo_world": None,
        }
    )
    raw.update(overrides)
    return SpeciesConfig.model_validate(raw)
