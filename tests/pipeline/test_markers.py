"""Completion markers (pipeline/markers.py) without a build: current only with the same fingerprint and every output
at its recorded size; digests relative to the work dir; one digest of a partition's outputs."""

from __future__ import annotations

import os

from core.hashing import sha256_file
from pipeline.markers import corrupt_outputs, digests, marker_is_current, outputs_digest, read_marker, write_marker


def _done(tmp_path, content=b"rows"):
    out = tmp_path / "render" / "part-00000.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(content)
    marker = tmp_path / "render" / "part-00000.done"
    write_marker(marker, {"fingerprint": "fp1", "outputs": digests(tmp_path, [out])})
    return out, marker


def test_a_marker_is_current_only_for_its_fingerprint_and_outputs(tmp_path):
    out, marker = _done(tmp_path)
    assert marker_is_current(tmp_path, marker, "fp1")
    assert not marker_is_current(tmp_path, marker, "fp2")  # inputs changed
    out.write_bytes(b"row")  # truncated
    assert not marker_is_current(tmp_path, marker, "fp1")
    out.unlink()
    assert not marker_is_current(tmp_path, marker, "fp1")
    assert not marker_is_current(tmp_path, tmp_path / "absent.done", "fp1")


def test_unreadable_markers_are_absent(tmp_path):
    bad = tmp_path / "x.done"
    bad.write_text("{not json")
    assert read_marker(bad) is None
    bad.write_text("[1, 2]")
    assert read_marker(bad) is None


def test_digests_are_relative_and_reuse_a_known_sha_only_for_the_same_size_and_mtime(tmp_path):
    out, marker = _done(tmp_path)
    rec = read_marker(marker)["outputs"]
    assert list(rec) == ["render/part-00000.parquet"]  # relative: the work dir may move
    assert rec["render/part-00000.parquet"]["sha256"] == sha256_file(out)
    known = {"render/part-00000.parquet": {**rec["render/part-00000.parquet"], "sha256": "recorded"}}
    assert digests(tmp_path, [out], known)["render/part-00000.parquet"]["sha256"] == "recorded"
    st = out.stat()
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert digests(tmp_path, [out], known)["render/part-00000.parquet"]["sha256"] == sha256_file(out)


def test_corrupt_outputs_are_found_by_their_bytes(tmp_path):
    out, marker = _done(tmp_path)
    assert corrupt_outputs(tmp_path, marker) == []
    out.write_bytes(b"ROWS")  # same size: only the sha256 tells
    assert marker_is_current(tmp_path, marker, "fp1") and corrupt_outputs(tmp_path, marker) == [str(out)]


def test_outputs_digest_covers_paths_and_bytes_not_order():
    a = {"outputs": {"x": {"sha256": "1"}, "y": {"sha256": "2"}}}
    b = {"outputs": {"y": {"sha256": "2"}, "x": {"sha256": "1"}}}
    assert outputs_digest(a) == outputs_digest(b)
    assert outputs_digest(a) != outputs_digest({"outputs": {"x": {"sha256": "1"}, "y": {"sha256": "3"}}})
    assert outputs_digest(a) != outputs_digest({"outputs": {"x": {"sha256": "1"}, "z": {"sha256": "2"}}})
    assert outputs_digest(None) == "not-done"
