import csv
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.hashing import sha256_file
from core.release_schema import METADATA_SIDECAR_SCHEMA, NON_IMAGE_COLUMNS, RELEASE_SCHEMA, SPLIT_DIRS, SPLITS
from shard.release import SHARDS_CSV_HEADER, ReleaseError, write_release
from tests.shard import fakes

SHARD_BYTES = 40_000  # a few rows per shard with the fake rows (~4-5 kB each)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return fakes.build_inputs(tmp_path_factory.mktemp("work"), n_per_species=40)


@pytest.fixture(scope="module")
def release(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("rel") / "out"
    summary = write_release(out_dir=out, shard_bytes=SHARD_BYTES, row_group_rows=4, **inputs)
    return out, summary


def read_csv(out):
    with open(out / "shards.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def all_files(root):
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_shards_csv(release):
    out, summary = release
    rows = read_csv(out)
    assert tuple(rows[0].keys()) == SHARDS_CSV_HEADER
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    for r in rows:
        p = out / r["path"]
        assert p.parent.name == SPLIT_DIRS[r["split"]]
        assert p.name == f"{SPLIT_DIRS[r['split']]}-{int(r['shard_id']):05d}.parquet"
        assert sha256_file(p) == r["sha256"] and p.stat().st_size == int(r["size"])
        assert pq.ParquetFile(p).metadata.num_rows == int(r["n_samples"])
    for name in (
        "README.md",
        "demo.parquet",
        "figures/channel_decomposition.png",
        "metadata/train.parquet",
        "metadata/val.parquet",
        "metadata/test.parquet",
    ):
        assert (out / name).is_file(), name
    assert not list(out.parent.glob(".out.*")), "temp dirs left behind"
    assert summary["total_rows"] == 80


def test_rows_ordered_split_column_and_schema(release, inputs):
    out, _ = release
    assigned = {}
    for p in inputs["splits"].values():
        t = pq.read_table(p)
        assigned.update(zip(t.column("combined_sample_hash").to_pylist(), t.column("split").to_pylist(), strict=True))
    seen = []
    for split in SPLITS:
        hashes = []
        for r in sorted((r for r in read_csv(release[0]) if r["split"] == split), key=lambda r: int(r["shard_id"])):
            pf = pq.ParquetFile(out / r["path"])
            assert pf.schema_arrow.equals(RELEASE_SCHEMA, check_metadata=False)
            assert pf.schema_arrow.metadata[b"huggingface"] == RELEASE_SCHEMA.metadata[b"huggingface"]
            assert pf.metadata.row_group(0).num_rows <= 4
            t = pf.read(columns=["combined_sample_hash", "split"])
            assert set(t.column("split").to_pylist()) == {split}
            hashes += t.column("combined_sample_hash").to_pylist()
        assert hashes == sorted(hashes)
        assert all(assigned[h] == split for h in hashes)
        seen += hashes
    assert sorted(seen) == sorted(assigned)


def test_shards_close_at_the_byte_target(release):
    rows = read_csv(release[0])
    for split in SPLITS:
        shards = sorted((r for r in rows if r["split"] == split), key=lambda r: int(r["shard_id"]))
        assert len(shards) >= 2, split
        assert [int(r["shard_id"]) for r in shards] == list(range(len(shards)))
        for r in shards[:-1]:
            assert int(r["size"]) >= SHARD_BYTES
            # closed at the first row group that reached the target: well under two targets
            assert int(r["size"]) < 2 * SHARD_BYTES


def test_sidecars_agree_with_shards(release):
    out, _ = release
    for split in SPLITS:
        d = SPLIT_DIRS[split]
        side = pq.read_table(out / "metadata" / f"{d}.parquet")
        assert side.schema.equals(METADATA_SIDECAR_SCHEMA, check_metadata=False)
        want = []
        for r in sorted((r for r in read_csv(out) if r["split"] == split), key=lambda r: int(r["shard_id"])):
            t = pq.read_table(out / r["path"], columns=list(NON_IMAGE_COLUMNS))
            want += [{**x, "shard_path": r["path"]} for x in t.to_pylist()]
        assert side.to_pylist() == want


def test_demo_is_stratified(release, inputs):
    out, _ = release
    demo = pq.read_table(out / "demo.parquet")
    assert demo.schema.equals(RELEASE_SCHEMA, check_metadata=False)
    train = []
    for r in read_csv(out):
        if r["split"] == "train":
            train += pq.read_table(out / r["path"], columns=["combined_sample_hash", "sample_type"]).to_pylist()
    train.sort(key=lambda r: r["combined_sample_hash"])
    want = []
    for st in fakes.TYPES:
        want += [r["combined_sample_hash"] for r in train if r["sample_type"] == st][:4]
    assert demo.column("combined_sample_hash").to_pylist() == sorted(want)
    assert set(demo.column("split").to_pylist()) == {"train"}


def test_card_counts_and_front_matter(release):
    out, summary = release
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    front = text.split("---\n")[1]
    for s in SPLITS:
        assert f"- split: {s}\n    path: {SPLIT_DIRS[s]}/*.parquet" in front
    assert "**80 samples**" in text
    assert f"| train | {summary['rows']['train']} |" in text
    se = summary["split_edits"]
    assert f"{se['with_after_mask']} / {se['total']} split_edits" in text
    assert "| render | mesh_missing |" in text and "| fetch | timeout |" in text
    assert "| 128 | after-root A |" in text and "| 255 | after-root B |" in text
    assert "load_dataset" in text and "floor((point - bbox_min) / cube_nm)" in text
    assert "| fly | 80000.0 | fake-salt | 0.75/0.125/0.125 |" in text  # from work/fly/split/manifest.json


def _card_routing_table(text: str) -> dict[str, list[str]]:
    """sample_type -> [same_neuron, task_routing, false_split_correction_label, false_merge_identification_label]."""
    section = text.split("## Task routing and labels\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ")][1:]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}


def _card_routes(text: str, has_after_mask: bool) -> list[str]:
    """A task_routing cell of the card ("a, b (+ c if has_after_mask)") as the list a row carries."""
    always, _, rest = text.partition(" (+ ")
    routes = always.split(", ")
    if rest and has_after_mask:
        routes += rest.removesuffix(" if has_after_mask)").split(", ")
    return routes


def _label(value: float | None) -> str:
    return "null" if value is None else str(value)


def test_card_states_the_rules_every_row_obeys(release):
    """The card's routing and label table and its source_archive line describe every shipped row exactly."""
    out, _ = release
    text = (out / "README.md").read_text()
    table = _card_routing_table(text)
    archives_line = next(line for line in text.splitlines() if line.startswith("- `source_archive`: "))
    rows = pa.concat_tables([pq.read_table(out / "metadata" / f"{SPLIT_DIRS[s]}.parquet") for s in SPLITS]).to_pylist()
    assert {r["sample_type"] for r in rows} == set(table)
    for r in rows:
        same, routes, fsc, fmi = table[r["sample_type"]]
        assert same == str(r["same_neuron"]).lower(), r["sample_type"]
        assert _card_routes(routes, r["has_after_mask"]) == r["task_routing"], r["sample_type"]
        assert [fsc, fmi] == [_label(r["false_split_correction_label"]), _label(r["false_merge_identification_label"])]
        archive = r["source_archive"].replace(f"_{r['species']}", "_{species}")
        assert f"`{archive}` (" in archives_line
        assert r["sample_type"] in archives_line.split(f"`{archive}` (", 1)[1].split(")", 1)[0]


def test_figure_is_a_png_from_real_rows(release):
    img = Image.open(release[0] / "figures" / "channel_decomposition.png")
    assert img.format == "PNG" and img.width > 7 * 224 and img.height > 2 * 224


def test_two_builds_are_byte_identical(release, inputs, tmp_path):
    out, _ = release
    again = tmp_path / "again"
    write_release(out_dir=again, shard_bytes=SHARD_BYTES, row_group_rows=4, **inputs)
    assert (again / "shards.csv").read_bytes() == (out / "shards.csv").read_bytes()
    assert all_files(again) == all_files(out)


def test_rebuild_replaces_the_release_whole(inputs, tmp_path):
    out = tmp_path / "out"
    write_release(out_dir=out, shard_bytes=SHARD_BYTES, row_group_rows=4, **inputs)
    (out / "train" / "train-00099.parquet").write_bytes(b"stale")
    write_release(out_dir=out, shard_bytes=10**9, **inputs)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["train-00000.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_build_leaves_the_old_release(inputs, tmp_path):
    out = tmp_path / "out"
    write_release(out_dir=out, shard_bytes=SHARD_BYTES, row_group_rows=4, **inputs)
    before = all_files(out)
    rows = fakes.make_rows("fly", 12, seed=0)
    rows[-1]["false_split_correction_label"] = 0.5 if rows[-1]["false_split_correction_label"] is not None else 1.0
    work = tmp_path / "work"
    bad = {
        "species_parts": {"fly": fakes.write_parts(work, "fly", rows, 5)},
        "splits": {"fly": fakes.write_split(work, "fly", rows)},
        "failures": [],
    }
    with pytest.raises(ReleaseError, match=rows[-1]["combined_sample_hash"]):
        write_release(out_dir=out, shard_bytes=SHARD_BYTES, **bad)
    assert all_files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "work"]


def _single_species(tmp_path, rows, rows_per_part=5, forced=None):
    work = tmp_path / "work"
    return {
        "species_parts": {"fly": fakes.write_parts(work, "fly", rows, rows_per_part)},
        "splits": {"fly": fakes.write_split(work, "fly", rows, forced)},
        "failures": [],
    }


def test_duplicate_hash_is_rejected(tmp_path):
    rows = fakes.make_rows("fly", 8)
    rows = rows[:5] + [rows[4]] + rows[5:]  # the duplicate starts the second part
    inp = _single_species(tmp_path, rows)
    inp["splits"]["fly"] = fakes.write_split(tmp_path / "work", "fly", fakes.make_rows("fly", 8))
    with pytest.raises(ReleaseError, match=f"duplicate combined_sample_hash {rows[4]['combined_sample_hash']}"):
        write_release(out_dir=tmp_path / "out", shard_bytes=SHARD_BYTES, **inp)
    assert not (tmp_path / "out").exists()


def test_duplicate_split_assignment_is_rejected(tmp_path):
    rows = fakes.make_rows("fly", 6)
    inp = _single_species(tmp_path, rows)
    inp["splits"]["fly"] = fakes.write_split(tmp_path / "work", "fly", rows + rows[:1])
    with pytest.raises(ReleaseError, match=rows[0]["combined_sample_hash"]):
        write_release(out_dir=tmp_path / "out", shard_bytes=SHARD_BYTES, **inp)


def test_unsorted_parts_are_rejected(tmp_path):
    rows = fakes.make_rows("fly", 8)
    rows[2], rows[6] = rows[6], rows[2]
    with pytest.raises(ReleaseError, match="out of hash order"):
        write_release(out_dir=tmp_path / "out", shard_bytes=SHARD_BYTES, **_single_species(tmp_path, rows))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("false_merge_identification_label", 0.0, "false_merge_identification_label"),
        ("same_neuron", None, "same_neuron"),
        ("task_routing", ["false_split_correction", "split_mask_generation"], "task_routing"),
        ("has_after_mask", True, "has_after_mask"),
        ("present_slots", ["geometry"], "present_slots"),
        ("source_archive_sample_hash", "000000000000", "combined_sample_hash is not md5"),
    ],
)
def test_bad_rows_are_rejected_naming_the_hash(tmp_path, field, value, message):
    rows = fakes.make_rows("fly", 10)
    victim = next(r for r in rows if r["sample_type"] == "merge_edit")
    victim[field] = value
    with pytest.raises(ReleaseError, match=f"{victim['combined_sample_hash']}.*{message}"):
        write_release(out_dir=tmp_path / "out", shard_bytes=SHARD_BYTES, **_single_species(tmp_path, rows))


def test_missing_split_is_rejected(tmp_path):
    rows = fakes.make_rows("fly", 6)
    inp = _single_species(tmp_path, rows)
    inp["splits"]["fly"] = fakes.write_split(tmp_path / "work", "fly", rows[1:])
    with pytest.raises(ReleaseError, match=rows[0]["combined_sample_hash"]):
        write_release(out_dir=tmp_path / "out", shard_bytes=SHARD_BYTES, **inp)


def test_empty_split_gets_no_shard(tmp_path):
    rows = fakes.make_rows("fly", 6)
    inp = _single_species(tmp_path, rows, forced={r["combined_sample_hash"]: "train" for r in rows})
    summary = write_release(out_dir=tmp_path / "out", shard_bytes=10 * SHARD_BYTES, **inp)  # one shard holds them
    assert summary["rows"] == {"train": 6, "validation": 0, "test": 0}
    assert [r["path"] for r in read_csv(tmp_path / "out")] == ["train/train-00000.parquet"]
    front = (tmp_path / "out" / "README.md").read_text().split("---\n")[1]
    assert "split: train" in front and "split: test" not in front


def test_geometry_and_images_round_trip(release):
    out, _ = release
    t = pq.read_table(out / "demo.parquet")
    row = t.slice(0, 1).to_pylist()[0]
    geom = np.load(io.BytesIO(row["geometry"]))["arr_0"]
    assert geom.shape == (3, 7, 224, 224) and geom.dtype == np.float16
    img = Image.open(io.BytesIO(row["em_xy_before"]["bytes"]))
    assert img.size == (224, 224) and img.mode == "RGB"
    meta = json.loads(row["metadata"])
    assert meta["species"] == row["species"]
    assert pa.types.is_struct(t.schema.field("split_mask_top").type)


def test_a_bad_ledger_is_refused_before_anything_is_written(inputs, tmp_path):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"sample_id": ["x"]}), bad)
    out = tmp_path / "out"
    with pytest.raises(ReleaseError, match="lacks columns"):
        write_release(out_dir=out, shard_bytes=SHARD_BYTES, **{**inputs, "failures": [bad]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]  # no release, no temp dir


def _payload_rows(n: int, payload: str, size: int = 2_000) -> pa.Table:
    """`n` release rows (train, one fake row's labels, hashes 0, 1, 2, ...) whose geometry and EM images are `size`
    bytes each after their magic bytes: random (incompressible) or zeros (zstd makes a few bytes of them). The
    writer does not decode payloads."""
    from core.release_schema import EM_COLUMNS

    rng = np.random.default_rng(0)
    base = {**fakes.make_row("fly", "merge_edit", "payload"), "split": "train"}
    rows = []
    for i in range(n):
        body = (lambda: rng.bytes(size)) if payload == "incompressible" else (lambda: bytes(size))
        row = {**base, "combined_sample_hash": f"{i:032x}", "geometry": b"PK\x03\x04" + body()}
        for c in EM_COLUMNS:
            row[c] = {"bytes": b"\x89PNG\r\n\x1a\n" + body(), "path": None}
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=RELEASE_SCHEMA)


@pytest.mark.parametrize(
    ("payload", "n", "target"), [("incompressible", 400, 800_000), ("compressible", 4000, 100_000)]
)
def test_shards_land_within_ten_percent_of_the_target_whatever_the_payloads_compress_to(tmp_path, payload, n, target):
    """Every shard but a split's last lands within 10% of shard_bytes, measured on the file (its footer included),
    for rows that zstd cannot shrink and rows it shrinks ~100x (row groups of row_group_rows rows, each a few kB:
    before, the footer was a third of such a file and the groups' size was guessed from the payloads); rows stay in
    hash order, in the release schema, at most row_group_rows per row group."""
    from shard.release import _Part, _payload_bytes, _SplitWriter

    table = _payload_rows(n, payload)
    writer = _SplitWriter("train", tmp_path, target, row_group_rows=32)
    part = _Part(tmp_path / "part.parquet", table, [], _payload_bytes(table))
    for i in range(table.num_rows):
        writer.add(part, i)
    writer.close()
    shards = writer.shards
    assert len(shards) >= 4
    for s in shards[:-1]:
        size = (tmp_path / s["path"]).stat().st_size
        assert size == s["size"] and abs(size - target) <= 0.1 * target, (s["path"], size)
    hashes = []
    for s in shards:
        pf = pq.ParquetFile(tmp_path / s["path"])
        assert pf.schema_arrow.equals(RELEASE_SCHEMA, check_metadata=False)
        assert max(pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)) <= 32
        hashes += pf.read(columns=["combined_sample_hash"]).column(0).to_pylist()
    assert hashes == table.column("combined_sample_hash").to_pylist() == sorted(hashes)
