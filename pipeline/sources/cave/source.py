"""CaveSource: the `Source` protocol (base.py) answered by one part per CAVE service, as cloud-volume keeps one
datasource module per service.

    session.py          the config, the token, the clients (opened lazily, dropped on pickling), bounded sessions,
                        the start-up checks; errors.py: what each client exception means (`guard`)
    chunkedgraph.py     change logs, operation details, roots at a time, root timestamps, delta roots, level-2 graphs
    materialization.py  versions and the pinned time, tables and views, columns, proofread roots, synapses
                        (tables.py: reads that survive the row cap)
    l2cache.py          level-2 representative points, and the skeletons built on them
    volumes.py          EM and segmentation cutouts, the segmentation's bbox, resolution and chunk grid
    meshes.py           meshes bounded to a box

Every batched request goes through the shared adaptive layer (adaptive.py: sizes learned, items isolated) and every
HTTP request through the build's one budget per host (budget.py); limits.py says where the sizes start. This class
only composes the parts: it holds nothing but them (and the species' name), pickles as they do (without clients: a
worker reconnects on its first call) and forwards each method to the part that answers it.
"""

from __future__ import annotations

from typing import Any

from config.schema import SpeciesConfig
from core.errors import UserError
from pipeline.sources.cave import tables
from pipeline.sources.cave.chunkedgraph import Chunkedgraph
from pipeline.sources.cave.l2cache import Level2
from pipeline.sources.cave.limits import CaveLimits
from pipeline.sources.cave.materialization import Materialization
from pipeline.sources.cave.meshes import Meshes, PreparedManifests
from pipeline.sources.cave.session import CaveSession
from pipeline.sources.cave.volumes import Volumes


class _On:
    """An attribute of the source that lives on one of its parts (`part`, under `name`): read and set there."""

    def __init__(self, part: str, name: str | None = None) -> None:
        self.part, self.name = part, name

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = self.name or name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(getattr(obj, self.part), self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(getattr(obj, self.part), self.name, value)


class CaveSource:
    """Source backed by a CAVE datastack and its CloudVolume layers (see base.Source and the module)."""

    def __init__(self, cfg: SpeciesConfig, token: str | None = None, limits: CaveLimits | None = None) -> None:
        if cfg.source != "cave":
            raise UserError(f"config/{cfg.species}.yaml: CaveSource needs source: cave (got {cfg.source})")
        self.species = cfg.species
        self.session = CaveSession(cfg, limits or CaveLimits(), token)
        self.chunkedgraph = Chunkedgraph(self.session)
        self.materialization = Materialization(self.session, self.chunkedgraph)
        self.volumes = Volumes(self.session, self.chunkedgraph, PreparedManifests())
        self.level2 = Level2(self.session, self.chunkedgraph, self.volumes)
        self.meshes = Meshes(self.session, self.volumes)
        # the chunkedgraph is asked at the materialization's time; the first contact checks that time is served
        self.chunkedgraph.pinned_time = self.materialization.as_of
        self.session.check_version = self.materialization.check_pinned_time

    def __repr__(self) -> str:  # never shows the token
        return f"CaveSource(species={self.species!r}, datastack={self.cfg.datastack!r})"

    cfg = _On("session")
    limits = _On("session")

    # ------------------------------------------------------------------ the Source protocol, each method its part's
    as_of = _On("materialization")
    proofread_roots = _On("materialization")
    synapses = _On("materialization")
    change_log = _On("chunkedgraph")
    operation_details = _On("chunkedgraph")
    roots_at = _On("chunkedgraph")
    skeleton = _On("level2")
    mesh = _On("meshes")
    base_resolution_nm = _On("volumes")
    canonical_bbox_nm = _On("volumes")
    em_cutout = _On("volumes")
    segmentation_cutout = _On("volumes")

    # ------------------------------------------------------------------ what preflight asks besides
    client = _On("session")
    secret_file = _On("session")
    require_graphene = _On("session")
    rows_not_proofread = _On("materialization")

    def table_key(self, table: str) -> str:
        """The config key that names `table`."""
        return tables.table_key(self.cfg, table)

    def check_columns(self, key: str, table: str, present: list[str]) -> None:
        """The columns this source reads from the table config key `key` names are in `present` (tables.py)."""
        tables.check_columns(self.cfg, key, table, present)

    # ------------------------------------------------------------------ the clients and state tests reach by name
    _client = _On("session", "cave_client")
    _cg_client = _On("session", "cg_client")
    _mat_client = _On("session", "mat_client")
    _l2_client = _On("session", "l2_client")
    _seg_cv = _On("session", "seg_cv")
    _mesh_session = _On("session", "http_session")
    _as_of = _On("session", "as_of")
    _checked = _On("session", "checked")
    _reached = _On("session", "reached")
    _redact = _On("session", "redact")
    _auth_error = _On("session", "auth_error")
    _cg = _On("chunkedgraph", "client")
    _mat = _On("materialization", "client")
    _cap = _On("materialization", "cap")
    _seg = _On("volumes", "seg")
    _manifests = _On("volumes", "manifests")
    _l2cache = _On("level2", "has_cache")
