"""One OS lock per work dir (pipeline/locks.py), in process: a second holder refuses at once naming the pid; shared
locks coexist; a LockSet does not lock twice what it holds; closing releases."""

from __future__ import annotations

import os

import pytest

from core.errors import UserError
from pipeline.locks import LockSet, hold


def test_a_second_exclusive_lock_refuses_naming_the_holder(tmp_path):
    path = tmp_path / "demo" / ".lock"
    with hold(path, "the work dir of species demo"):
        assert path.read_text().strip() == str(os.getpid())
        refused = rf"species demo is in use by pid {os.getpid()} \(lock .*\.lock\)"
        with pytest.raises(UserError, match=refused), hold(path, "the work dir of species demo"):
            pass
        with pytest.raises(UserError), hold(path, "x", shared=True):
            pass
    with hold(path, "again"):  # released when the first holder closed
        pass


def test_shared_locks_coexist_and_keep_out_a_writer(tmp_path):
    path = tmp_path / ".lock"
    with hold(path, "r1", shared=True), hold(path, "r2", shared=True):
        refused = pytest.raises(UserError, match="w is in use")
        with refused, hold(path, "w"):
            pass


def test_a_lockset_takes_each_lock_once(tmp_path):
    path = tmp_path / ".lock"
    with LockSet() as locks:
        locks.take(path, "species")
        locks.take(path, "species")  # already held: no self-deadlock
        locks.take(path, "species", shared=True)  # exclusive covers shared
        with pytest.raises(UserError), hold(path, "other"):
            pass
    with LockSet() as locks:
        locks.take(path, "species", shared=True)
        with pytest.raises(AssertionError, match="upgrade"):
            locks.take(path, "species")
