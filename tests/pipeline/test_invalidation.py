"""What a changed config key redoes: every key declared by a stage or listed as no input, and the README's table is
the one the stages' declarations give (pipeline/invalidation.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from config.schema import SpeciesConfig
from pipeline import invalidation as inv
from pipeline.invalidation import NOT_INPUTS, invalidation, readme_table, redoes, table, with_table
from pipeline.stages.shard import SHARD
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
        ("budgets", "select; then fetch and render only of the samples whose inputs changed; split, shard"),
        ("as_of", "roots, bank; then select; fetch and render only of the samples whose inputs changed; split, shard"),
        ("synapse_table", "bank; then select; fetch and render only of the samples whose inputs changed; split, shard"),
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
    assert reads["roots"] == source | {"as_of", "materialization_version", "proofread_table",
                                       "proofread_from_delta_roots"}  # fmt: skip
    assert reads["bank"] == source | {
        "as_of", "materialization_version", "proofread_table", "proofread_from_delta_roots", "seg_cloudpath",
        "seg_mip", "synapse_table", "synapse_score_above", "junctions_per_neuron", "adjacent_per_op",
    }  # fmt: skip
    assert reads["fetch"] == source | {"em_cloudpath", "seg_cloudpath", "em_mip", "seg_mip", "em_window_nm", "faults"}
    assert reads["render"] == {"extent_nm", "center_jitter_nm", "seed", "em_window_nm", "max_missing_fraction"}
    assert reads["split"] == source | {"seg_cloudpath", "split_salt", "cube_nm", "split_ratios"}
    assert set(SHARD.reads) == {"shard_bytes", "max_missing_fraction"}
    assert reads["select"] == {"budgets"}
    assert set(SPECIES_STAGES["fetch"].widened_by) == {"extent_nm", "center_jitter_nm"}
    consumes = {name: stage.consumes for name, stage in [*SPECIES_STAGES.items(), (SHARD.name, SHARD)]}
    assert consumes == {"roots": (), "bank": ("roots",), "select": ("bank",), "fetch": ("select",),
                        "render": ("fetch",), "split": ("select",), "shard": ("render", "split")}  # fmt: skip


def test_make_readme_rewrites_only_the_table():
    text = (REPO / "README.md").read_text()
    stale = text.replace(table(), "| key | redoes |\n|---|---|\n| `seed` | nothing |")
    assert stale != text
    assert with_table(stale) == text


# ------------------------------------------------------------------------------------------ the units redone
# Each config key changed in a built work dir: which units (partitions of every stage, the bank's proofread roots and
# selection and the release included) the runner's markers then call not done, against the README's row for the
# key. First the key alone (each unit found not done is sealed again with the outputs it had: what the key redoes
# by itself, the row's first part); then as if every unit redone wrote other bytes (the row's whole: what consumes
# them follows). Sealing goes through the runner's own `seal`; nothing is built.

STAGE_NAMES = (*SPECIES_STAGES, SHARD.name)
OTHER_VALUE = {  # keys whose value in the demo config is None: what another species would set
    "datastack": "another_datastack",
    "server_address": "https://another.invalid",
    "viewer_voxel_nm": (8.0, 8.0, 40.0),
    "materialization_version": 3,
    "proofread_table": "another_proofread_table",
    "synapse_table": "another_synapse_table",
    "synapse_score_above": {"size": 10.0},
}


def _another(key: str, value: object) -> object:
    """A value of `key` other than `value` (a nested model: its first field changed)."""
    from pydantic import BaseModel

    if key in OTHER_VALUE:
        return OTHER_VALUE[key]
    if isinstance(value, BaseModel):
        first = next(iter(type(value).model_fields))
        return value.model_copy(update={first: _another(first, getattr(value, first))})
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return f"{value}-another"
    if isinstance(value, (list, tuple)):
        return type(value)(_another(key, v) for v in value)
    if isinstance(value, dict):
        return {**value, "another": 1}
    raise AssertionError(f"no other value of config key {key!r} ({value!r}): add one to OTHER_VALUE")


def _readme_rows() -> dict[str, str]:
    """config key -> its row's `redoes` cell in the README's table."""
    rows = {}
    for line in readme_table((REPO / "README.md").read_text()).splitlines()[2:]:
        keys, cell = line.strip().strip("|").split("|")
        rows.update(dict.fromkeys(re.findall(r"`(\w+)`", keys), cell.strip()))
    return rows


def _stages_named(text: str) -> set[str]:
    """The stages a row's cell names (a key that is no input redoes none, whatever its words say of the stages)."""
    if text.startswith("nothing by"):
        return set()
    return {word for word in re.findall(r"\w+", text) if word in STAGE_NAMES}


def _other_bytes(path: Path) -> None:
    """The output as a rerun that made other bytes would leave it, still readable: a parquet of bank rows with other
    row digests (what fetch and render key their samples by), another parquet with other metadata, other JSON, or
    bytes added."""
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        if "row_digest" in table.column_names:
            other = pa.array([f"{d}-another" for d in table.column("row_digest").to_pylist()], pa.string())
            table = table.set_column(table.column_names.index("row_digest"), "row_digest", other)
        pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), b"another": b"1"}), path)
    elif path.suffix == ".json":
        path.write_text(json.dumps({**json.loads(path.read_text()), "another": 1}))
    else:
        path.write_bytes(path.read_bytes() + b"another")


def _redo(graph, name: str, other_bytes: bool) -> bool:  # noqa: ANN001
    """Seal again, as the runner does after a run, every unit of `name` whose marker no longer says done (with the
    outputs it recorded, given other bytes first if `other_bytes`); whether there was any."""
    from pipeline.markers import read_marker
    from pipeline.runner import seal
    from pipeline.stage import Outcome, is_done

    ctx = graph.ctx
    todo = [p for p in graph.partitions(name) if not is_done(ctx, p)]
    for part in todo:
        marker = read_marker(part.marker_path(ctx)) or {}
        outputs = [ctx.work_dir / rel for rel in marker.get("outputs", {})]
        for path in outputs if other_bytes else ():
            _other_bytes(path)
        seal(ctx, part, Outcome(built=marker.get("n_built", 0), outputs=outputs, samples=marker.get("samples", {})),
             None)  # fmt: skip
    if todo:
        graph.changed(name)
    return bool(todo)


def _units_redone(work: Path, out: Path, cfg, other_bytes: bool) -> set[str]:  # noqa: ANN001
    """The stages with a unit the runner would run again under `cfg`, each redone in build order, the release last."""
    from pipeline.context import BuildContext
    from pipeline.stages.shard import release_graph
    from pipeline.stages.species import species_graph

    graph = species_graph(BuildContext("demo", cfg, work.resolve(), out.resolve()))
    redone = {name for name in graph.order if _redo(graph, name, other_bytes)}
    release = release_graph(work, out, {"demo": graph})
    return redone | ({SHARD.name} if _redo(release, SHARD.name, other_bytes) else set())


@pytest.fixture(scope="module")
def built(tiny_release, tiny_configs, tmp_path_factory):
    """(run dir, pristine copy, the tiny config): a built work dir and release where every key is changed in turn,
    restored from the pristine copy (at the same path: the release's fingerprint covers where it is) before each."""
    from config import load_config
    from pipeline.build import RunOptions, write_release_all

    root = tmp_path_factory.mktemp("invalidation")
    run, pristine = root / "run", root / "pristine"
    world = tiny_release[0] / "demo" / "world"
    keep_world_digest = lambda d, names: [n for n in names if Path(d) == world and n != "world.json"]  # noqa: E731
    shutil.copytree(tiny_release[0], run / "work", ignore=keep_world_digest)
    with pytest.MonkeyPatch.context() as env:  # the release written where this test's runs find it
        env.setenv("CB2_CONFIG_DIR", str(tiny_configs))
        write_release_all(run / "work", run / "out", RunOptions(scheduler="sync", progress=False))
    cfg = load_config("demo", tiny_configs)
    assert _units_redone(run / "work", run / "out", cfg, False) == set()  # nothing changed: nothing is redone
    shutil.copytree(run, pristine)
    return run, pristine, cfg


@pytest.mark.parametrize("key", list(SpeciesConfig.model_fields))
def test_a_changed_key_redoes_the_units_the_readme_says(built, key):
    run, pristine, cfg = built
    changed = cfg.model_copy(update={key: _another(key, getattr(cfg, key))})
    row = _readme_rows()[key]
    first, _, then = row.partition("; then ")
    found = {}
    for other_bytes in (False, True):
        shutil.rmtree(run)
        shutil.copytree(pristine, run)
        found[other_bytes] = _units_redone(run / "work", run / "out", changed, other_bytes)
    assert found[False] == _stages_named(first), (key, row)  # what the key redoes by itself
    assert found[True] == _stages_named(first) | _stages_named(then), (key, row)  # and what consumes their outputs
