"""The failures ledger (core/ledger.py): its columns, one row per failure however many partitions found it,
a file without the columns refused naming it."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import UserError
from core.ledger import FAILURE_SCHEMA, Failure, read_failures, write_failures


def test_a_ledger_row_has_sample_id_species_type_stage_reason_and_exception(tmp_path):
    assert FAILURE_SCHEMA.names == ["sample_id", "species", "sample_type", "stage", "reason", "exception"]
    path = tmp_path / "part-00000.failures.parquet"
    failures = [Failure("h2", "demo", "merge_edit", "render", "em_chunks_missing", "3% of the window"),
                Failure("h1", "demo", "split_edit", "fetch", "missing_mesh", "no fragment")]  # fmt: skip
    write_failures(path, failures)
    assert pq.read_table(path).schema.equals(FAILURE_SCHEMA)
    assert read_failures(path) == sorted(failures, key=lambda f: (f.stage, f.sample_id))


def test_a_file_without_the_ledgers_columns_is_refused_naming_it(tmp_path):
    bad = tmp_path / "failures.parquet"
    pq.write_table(pa.table({"sample_id": ["x"]}), bad)
    with pytest.raises(UserError, match=f"{bad} lacks columns"):
        read_failures(bad)
    assert read_failures(tmp_path / "absent.parquet") == []
    with pytest.raises(UserError, match="does not exist"):
        read_failures(tmp_path / "absent.parquet", missing_ok=False)
