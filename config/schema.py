"""The one config loader. A bad value or an unknown key fails naming the file and the key."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import UserError
from core.release_schema import SPLIT_CUBE_NM, SPLIT_RATIOS

CONFIG_DIR = Path(__file__).resolve().parent


def default_config_dir() -> Path:
    """`CB2_CONFIG_DIR` if set (a user's own species configs, tests), else the shipped config/."""
    return Path(os.environ["CB2_CONFIG_DIR"]) if os.environ.get("CB2_CONFIG_DIR") else CONFIG_DIR


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budgets(_Strict):
    """Per-type sample budgets; null means every candidate."""

    merge_edit: int | None = Field(default=None, ge=0)
    split_edit: int | None = Field(default=None, ge=0)
    adjacent_control: int | None = Field(default=None, ge=0)
    junction_control: int | None = Field(default=None, ge=0)
    synapse_control: int | None = Field(default=None, ge=0)


class Faults(_Strict):
    """Fault injection (tests and drills): transient errors at a rate, permanent ones for chosen samples."""

    transient_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    permanent_samples: list[str] = Field(default_factory=list)


# The classes of CAVE requests, each with its own learned batch size and read timeout (pipeline/sources/adaptive.py).
REQUEST_CLASSES = (
    "change_log", "operation_details", "roots", "root_timestamps", "delta_roots", "query", "synapses",
    "level2_graph", "l2cache", "manifest",
)  # fmt: skip
# The real servers let a request run 600 s (nginx proxy_read_timeout 600, PyChunkedGraph's deployment; uWSGI
# harakiri 1200): a client that gives up sooner gives up on answers that were coming.
SERVER_READ_TIMEOUT_S = 600.0


class CaveRequests(_Strict):
    """How CaveSource waits for and paces its requests. Batch sizes are not here: they are learned from the
    server's answers. Nothing here changes which rows come back, so no stage reads it (build.NOT_INPUTS)."""

    # read timeout per request class ("default" for any class not named); the one resend after a timeout waits
    # four times as long
    read_timeout_s: dict[str, float] = Field(default_factory=lambda: {"default": SERVER_READ_TIMEOUT_S + 60.0})
    slow_request_s: float = Field(default=30.0, gt=0)  # a request slower than this is logged
    # requests in flight to one host for the whole build (every worker process, every thread): the most; the build
    # lowers it under timeouts, 502s, 503s and resets and raises it back one by one (pipeline/sources/budget.py)
    max_in_flight_per_host: int = Field(default=16, ge=1)
    # requests per minute to one host for the whole build (None: unpaced until a server says it is rate limited;
    # after a rate limit the build paces that endpoint below the limit the server named)
    requests_per_minute_per_host: float | None = Field(default=None, gt=0)
    # the wait after a rate limit whose answer names no window (MaterializationEngine's limits are per minute)
    rate_limit_wait_s: float = Field(default=60.0, gt=0)
    # sends of one item answered 5xx or reset while other requests to its host succeed, before it is ledgered
    # as unavailable (a timeout: 2 sends, the second 4x as long)
    item_sends: int = Field(default=4, ge=1)
    # a host that fails every request (refused, reset, 5xx, timeouts) is paused with growing waits for at most this
    # long before the items waiting on it are ledgered as unavailable (an outage is not an item's fault)
    outage_deadline_s: float = Field(default=1800.0, gt=0)

    @field_validator("read_timeout_s")
    @classmethod
    def _known_classes(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - {"default", *REQUEST_CLASSES})
        if unknown:
            known = ", ".join(("default", *REQUEST_CLASSES))
            raise ValueError(f"unknown request class {', '.join(unknown)} (known: {known})")
        if any(v <= 0 for v in value.values()):
            raise ValueError("timeouts must be > 0")
        return value

    def read_timeout(self, request_class: str) -> float:
        return float(self.read_timeout_s.get(request_class, self.read_timeout_s.get("default", SERVER_READ_TIMEOUT_S)))


class ProofreadTable(_Strict):
    """A proofread table with a rule for which rows name a proofread root (the plain form, the table's name, takes
    every row's pt_root_id)."""

    name: str = Field(min_length=1)
    # keep a row only where its pt_root_id equals this column. CAVE's proofreading schemas carry `valid_id`, "root id
    # of the object when proofread status was assigned. If the pt_root_id of the cell differs, the proofreading
    # status may not apply" (EMAnnotationSchemas schemas/proofreading.py PointWithValid)
    root_must_equal: str | None = Field(default=None, min_length=1)


class DemoWorld(_Strict):
    """Size of the synthetic demo world (demo species only)."""

    n_sites: int = Field(default=36, ge=1)
    neurons_per_site: int = Field(default=6, ge=2)
    seed: int = 20260601


class SpeciesConfig(_Strict):
    species: str
    source: Literal["demo", "cave"]
    datastack: str | None = None
    server_address: str | None = None
    em_cloudpath: str
    seg_cloudpath: str
    em_mip: int = Field(default=0, ge=0)
    seg_mip: int = Field(default=0, ge=0)
    em_window_nm: float = Field(gt=0)
    # the voxel size (nm) the species' own Neuroglancer links count in (the EM layer's mip 0): `show` and the
    # report give a row's point in these voxels; unset, links count in nm
    viewer_voxel_nm: tuple[float, float, float] | None = None
    # a sample whose EM window has a larger fraction of its voxels (or a view of its pixels) from absent
    # EM or segmentation chunks fails (em_chunks_missing / seg_chunks_missing) instead of shipping black
    max_missing_fraction: float = Field(default=0.02, ge=0.0, le=1.0)
    extent_nm: tuple[float, float]
    center_jitter_nm: float = Field(default=300.0, ge=0)
    as_of: float | None = None
    materialization_version: int | None = Field(default=None, ge=1)
    # a table name (every row's pt_root_id is a proofread root), or {name, root_must_equal} (see ProofreadTable)
    proofread_table: str | ProofreadTable | None = None
    proofread_from_delta_roots: bool = False
    synapse_table: str | None = None
    # rows of the synapse table kept only where each named score is strictly above its value (FlyWire: fafbseg warns
    # that synapses_nt_v1 rows with cleft_score <= 50 are mostly false); applied in the synapse query itself
    synapse_score_above: dict[str, float] = Field(default_factory=dict)
    budgets: Budgets = Budgets()
    junctions_per_neuron: int = Field(default=8, ge=1)
    adjacent_per_op: int = Field(default=3, ge=0)
    partition_rows: int = Field(default=64, ge=1)
    bank_roots_per_partition: int = Field(default=64, ge=1)
    shard_bytes: int = Field(default=250_000_000, ge=1)
    split_salt: str = "cb2-v2"
    cube_nm: float = Field(default=SPLIT_CUBE_NM, gt=0)
    split_ratios: tuple[float, float, float] = SPLIT_RATIOS
    seed: int = 0
    timeout_s: float = Field(default=30.0, gt=0)
    fetch_threads: int = Field(default=8, ge=1)  # I/O threads per worker: samples fetched ahead while one renders
    bank_threads: int = Field(default=8, ge=1)  # I/O threads per bank batch: level-2 graphs and merge cutouts
    cave_requests: CaveRequests = CaveRequests()
    # a stage whose items (bank: proofread roots; fetch, render: bank rows) fail for the servers' sake (unavailable
    # after bounded resends, or an unexpected error) in more than this fraction stops the build in one line; below
    # it the release ships, the report lists them and the next build retries them once
    max_failed_fraction: float = Field(default=0.01, ge=0.0, le=1.0)
    faults: Faults = Faults()
    demo_world: DemoWorld | None = None
    # false: each fetched sample's file is dropped once its partition is rendered (the work dir keeps the render
    # parts, ~40% of its disk); a re-render (another camera) then fetches again what it renders. Default true: that
    # re-render is a main use, and fetching ~1 TB again from public servers costs more than the disk. Not an input
    # of any stage (pipeline/stages/fetched_disk.py)
    keep_fetched: bool = True

    @field_validator("as_of", mode="before")
    @classmethod
    def _parse_time(cls, value: object) -> object:
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=value.tzinfo or dt.timezone.utc).timestamp()
        if isinstance(value, str):
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed.replace(tzinfo=parsed.tzinfo or dt.timezone.utc).timestamp()
        return value

    @field_validator("extent_nm")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("must be [min, max] with 0 < min <= max")
        return value

    @field_validator("split_ratios")
    @classmethod
    def _ratios_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if abs(sum(value) - 1.0) > 1e-9 or min(value) < 0:
            raise ValueError("must be three non-negative numbers summing to 1")
        return value

    @property
    def proofread_table_name(self) -> str | None:
        """The proofread table's name, whichever form `proofread_table` takes."""
        table = self.proofread_table
        return table.name if isinstance(table, ProofreadTable) else table

    @property
    def proofread_root_must_equal(self) -> str | None:
        """The column a row's pt_root_id must equal for the row to name a proofread root (None: every row does)."""
        table = self.proofread_table
        return table.root_must_equal if isinstance(table, ProofreadTable) else None

    @model_validator(mode="after")
    def _pinned(self) -> SpeciesConfig:
        if self.as_of is None and self.materialization_version is None:
            raise ValueError("as_of or materialization_version must be set: queries are never made at 'now'")
        if self.source == "cave" and not self.datastack:
            raise ValueError("datastack is required for source: cave")
        if self.source == "demo" and self.demo_world is None:
            raise ValueError("demo_world is required for source: demo")
        return self


def config_path(species: str, config_dir: Path | None = None) -> Path:
    return (config_dir or default_config_dir()) / f"{species}.yaml"


def known_species(config_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (config_dir or default_config_dir()).glob("*.yaml"))


def _format_errors(path: Path, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "<top level>"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"key '{key}': {msg}")
    return f"invalid config {path}: " + "; ".join(parts)


def load_config(species: str, config_dir: Path | None = None) -> SpeciesConfig:
    """Load and validate `config/<species>.yaml`."""
    path = config_path(species, config_dir)
    if not path.exists():
        raise UserError(
            f"unknown species '{species}': no config file {path} (known: {', '.join(known_species(config_dir))})"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"invalid config {path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise UserError(f"invalid config {path}: expected a mapping of keys at the top level")
    try:
        cfg = SpeciesConfig.model_validate(raw)
    except ValidationError as err:
        raise UserError(_format_errors(path, err)) from None
    if cfg.species != species:
        raise UserError(f"invalid config {path}: key 'species' is '{cfg.species}', expected '{species}'")
    return cfg
