import json

import numpy as np
import pyarrow as pa
import pytest

import split_assign
from core.errors import UserError
from core.hashing import unit_interval

BBOX_MIN = [1000.0, -5000.0, 0.0]
BBOX_MAX = [2_001_000.0, 1_995_000.0, 800_000.0]
SALT = "test-salt"


def points(coords, species="fly", prefix="h"):
    return pa.table(
        {
            "combined_sample_hash": [f"{prefix}{i:05d}" for i in range(len(coords))],
            "species": [species] * len(coords),
            "coord_nm": pa.array([list(map(float, c)) for c in coords], pa.list_(pa.float64())),
        }
    )


def random_points(n, seed=0, prefix="h"):
    rng = np.random.default_rng(seed)
    lo, hi = np.array(BBOX_MIN), np.array(BBOX_MAX)
    return points(lo + rng.random((n, 3)) * (hi - lo), prefix=prefix)


def test_cube_index_math():
    coords = [
        [1000.0, -5000.0, 0.0],  # the bbox min: cube 0,0,0
        [1000.0 + 79_999.9, -5000.0 + 80_000.0, 160_000.0],  # just below / exactly on boundaries
        [1000.0 + 3.5 * 80_000, -5000.0 + 0.5 * 80_000, 799_999.0],
    ]
    t = split_assign.assign(points(coords), BBOX_MIN, BBOX_MAX, "fly", SALT)
    got = {
        h: (x, y, z)
        for h, x, y, z in zip(
            *(t.column(c).to_pylist() for c in ("combined_sample_hash", "cube_x", "cube_y", "cube_z")), strict=True
        )
    }
    assert got == {"h00000": (0, 0, 0), "h00001": (0, 1, 2), "h00002": (3, 0, 9)}
    assert t.schema.equals(split_assign.ASSIGNMENT_SCHEMA)


def test_cube_split_is_the_documented_hash():
    for i, j, k in [(0, 0, 0), (3, 1, 4), (24, 24, 9)]:
        u = unit_interval("fly", i, j, k, SALT)
        want = "train" if u < 0.75 else "validation" if u < 0.875 else "test"
        assert split_assign.cube_split("fly", i, j, k, SALT) == want
    assert split_assign.split_of_unit(0.7499) == "train"
    assert split_assign.split_of_unit(0.75) == "validation"
    assert split_assign.split_of_unit(0.875) == "test"


def test_ratios_roughly_right_over_many_cubes():
    splits = [split_assign.cube_split("mouse", i, j, k, SALT) for i in range(20) for j in range(20) for k in range(10)]
    n = len(splits)
    assert abs(splits.count("train") / n - 0.75) < 0.03
    assert abs(splits.count("validation") / n - 0.125) < 0.02
    assert abs(splits.count("test") / n - 0.125) < 0.02


def test_salt_and_species_change_the_split():
    a = [split_assign.cube_split("fly", i, 0, 0, SALT) for i in range(200)]
    assert a != [split_assign.cube_split("fly", i, 0, 0, "other") for i in range(200)]
    assert a != [split_assign.cube_split("mouse", i, 0, 0, SALT) for i in range(200)]


def test_adding_or_removing_samples_never_moves_a_cube():
    base = random_points(300, seed=1)
    more = pa.concat_tables([base, random_points(500, seed=2, prefix="x")])
    fewer = base.slice(0, 120)
    ta, tb, tc = (split_assign.assign(p, BBOX_MIN, BBOX_MAX, "fly", SALT) for p in (base, more, fewer))

    def by_hash(t):
        return {r["combined_sample_hash"]: r for r in t.to_pylist()}

    a, b, c = by_hash(ta), by_hash(tb), by_hash(tc)
    assert all(b[h] == a[h] for h in a)
    assert all(a[h] == c[h] for h in c)
    # the split of a cube is the same whatever samples sit in it
    cube_split = {}
    for r in list(a.values()) + list(b.values()):
        key = (r["cube_x"], r["cube_y"], r["cube_z"])
        assert cube_split.setdefault(key, r["split"]) == r["split"]


def test_output_sorted_by_hash_and_deterministic():
    p = random_points(50, seed=3)
    shuffled = p.take(np.random.default_rng(0).permutation(50))
    t1 = split_assign.assign(p, BBOX_MIN, BBOX_MAX, "fly", SALT)
    t2 = split_assign.assign(shuffled, BBOX_MIN, BBOX_MAX, "fly", SALT)
    assert t1.equals(t2)
    hashes = t1.column("combined_sample_hash").to_pylist()
    assert hashes == sorted(hashes)


def test_point_outside_bbox_names_the_sample():
    p = points([[2000.0, 0.0, 0.0], [999.0, 0.0, 0.0]])
    with pytest.raises(UserError, match="h00001.*outside the canonical bbox"):
        split_assign.assign(p, BBOX_MIN, BBOX_MAX, "fly", SALT)
    with pytest.raises(UserError, match="h00000"):
        split_assign.assign(points([[np.nan, 0.0, 0.0]]), BBOX_MIN, BBOX_MAX, "fly", SALT)


def test_bad_inputs():
    with pytest.raises(UserError, match="duplicate"):
        split_assign.assign(pa.concat_tables([points([[2000, 0, 0]])] * 2), BBOX_MIN, BBOX_MAX, "fly", SALT)
    with pytest.raises(UserError, match="species"):
        split_assign.assign(points([[2000, 0, 0]], species="mouse"), BBOX_MIN, BBOX_MAX, "fly", SALT)
    with pytest.raises(UserError, match="ratios"):
        split_assign.assign(points([[2000, 0, 0]]), BBOX_MIN, BBOX_MAX, "fly", SALT, ratios=(0.5, 0.2, 0.2))
    empty = split_assign.assign(points([]), BBOX_MIN, BBOX_MAX, "fly", SALT)
    assert empty.num_rows == 0


def test_manifest_content(tmp_path):
    p = random_points(400, seed=4)
    t = split_assign.assign(p, BBOX_MIN, BBOX_MAX, "fly", SALT)
    m = split_assign.manifest(t, BBOX_MIN, BBOX_MAX, "fly", SALT)
    assert m["bbox_nm"] == {"min": BBOX_MIN, "max": BBOX_MAX}
    assert m["cube_nm"] == 80_000.0 and m["salt"] == SALT
    assert m["ratios"] == {"train": 0.75, "validation": 0.125, "test": 0.125}
    idx = [tuple(c["index"]) for c in m["cubes"]]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    assert sum(c["n_samples"] for c in m["cubes"]) == 400 == m["n_samples"]
    rows = t.to_pylist()
    for c in m["cubes"]:
        i, j, k = c["index"]
        assert c["split"] == split_assign.cube_split("fly", i, j, k, SALT)
        members = [r for r in rows if (r["cube_x"], r["cube_y"], r["cube_z"]) == (i, j, k)]
        assert len(members) == c["n_samples"] and {r["split"] for r in members} == {c["split"]}
    assert sum(v["samples"] for v in m["per_split"].values()) == 400
    path = tmp_path / "fly" / "split" / "manifest.json"
    split_assign.write_manifest(path, m)
    split_assign.write_assignment(tmp_path / "fly" / "split.parquet", t)
    assert json.loads(path.read_text()) == m
    first = path.read_bytes()
    split_assign.write_manifest(path, split_assign.manifest(t, BBOX_MIN, BBOX_MAX, "fly", SALT))
    assert path.read_bytes() == first


def test_cube_split_literal_values():
    """Pinned values of the rule (hash of species, cube, salt): a change of the hash's parts or order fails here."""
    cubes = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 3, 4), (5, 5, 5), (7, 1, 2), (3, 3, 3)]
    assert [split_assign.cube_split("fly", i, j, k, "cb2-v2") for i, j, k in cubes] == [
        "validation", "test", "train", "train", "train", "test", "train", "test",
    ]  # fmt: skip
    assert unit_interval("fly", 2, 3, 4, "cb2-v2") == 0.4697557582948447
