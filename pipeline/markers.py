"""Completion markers: a partition is done when its marker exists, names the current fingerprint and every
output it records is still there at its recorded size.

A marker is written last, after the partition's outputs and failures file. It records:
- `fingerprint`: digest of everything the partition's outputs depend on (stage.reads config values, the code
  version, the source, the upstream outputs' digests, the partition's members);
- `outputs`: size, mtime and sha256 of every output, keyed by the path relative to the work dir (which may move;
  an output outside it, the release's files, by its absolute path);
- `samples`: each sample's key (the digest of its own inputs), so a later run can reuse what did not change;
- `dropped` (fetch, under `keep_fetched: false`): outputs removed by the user's choice once rendered, each with its
  record: not checked on disk, still covered by `outputs_digest` (dropping a file changes nothing downstream).
"""

from __future__ import annotations

import json
from pathlib import Path

from core.atomic import write_json
from core.hashing import key_of, md5_hex, sha256_file


def read_marker(path: Path) -> dict | None:
    try:
        marker = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) else None


def write_marker(path: Path, marker: dict) -> None:
    write_json(path, marker)


def outputs_match(work_dir: Path, marker: dict) -> bool:
    """Every recorded output still exists at its recorded size (cheap; the sha256 check is `corrupt_outputs`)."""
    for rel, recorded in marker.get("outputs", {}).items():
        try:
            if (Path(work_dir) / rel).stat().st_size != recorded["size"]:
                return False
        except FileNotFoundError:
            return False
    return True


def marker_is_current(work_dir: Path, path: Path, fingerprint: str) -> bool:
    marker = read_marker(path)
    return marker is not None and marker.get("fingerprint") == fingerprint and outputs_match(work_dir, marker)


def corrupt_outputs(work_dir: Path, marker_path: Path) -> list[str]:
    """Outputs of a finished partition whose bytes no longer match its marker (the full sha256 check)."""
    marker = read_marker(marker_path) or {}
    bad = []
    for rel, recorded in marker.get("outputs", {}).items():
        path = Path(work_dir) / rel
        if not path.exists() or sha256_file(path) != recorded["sha256"]:
            bad.append(str(path))
    return bad


def digests(work_dir: Path, paths: list[Path], known: dict[str, dict] | None = None) -> dict[str, dict]:
    """Size, mtime and sha256 of each output, keyed by its path relative to the work dir (absolute when outside
    it). A file whose size and mtime match `known` (an earlier marker's record of the same path) keeps its
    recorded sha256 unread."""
    known = known or {}
    out = {}
    for p in paths:
        inside = Path(p).is_relative_to(work_dir)
        rel = str(Path(p).relative_to(work_dir)) if inside else str(Path(p).resolve())
        st = Path(p).stat()
        prior = known.get(rel)
        if prior and prior.get("size") == st.st_size and prior.get("mtime_ns") == st.st_mtime_ns:
            sha = prior["sha256"]
        else:
            sha = sha256_file(p)
        out[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    return out


def outputs_digest(marker: dict | None) -> str:
    """One digest of a finished partition's outputs, the dropped ones too: what a downstream fingerprint is built
    from."""
    if marker is None:
        return "not-done"
    recorded = {**marker.get("dropped", {}), **marker.get("outputs", {})}
    items = sorted((rel, rec["sha256"]) for rel, rec in recorded.items())
    return md5_hex(key_of(*(f"{rel}={sha}" for rel, sha in items)))
