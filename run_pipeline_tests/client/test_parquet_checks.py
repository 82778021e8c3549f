"""What an exported history file's bytes say (client/parquet_checks.py), on real Parquet files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from run_pipeline.client.parquet_checks import footer_max_step, parquet_problem


def _write(path, steps, row_group_size=40, **columns):
    pq.write_table(pa.table({"_step": pa.array(steps, pa.int64()), **columns}), path,
                   row_group_size=row_group_size)
    return path.read_bytes()


def test_a_whole_file_passes_and_its_footer_gives_the_last_step(tmp_path):
    data = _write(tmp_path / "h.parquet", [3, 1, 99, 7] + list(range(10, 100)))
    assert parquet_problem(str(tmp_path / "h.parquet"), len(data)) == ""
    assert footer_max_step(data[-64 * 1024:]) == 99
    assert footer_max_step(data) == 99


def test_a_cut_or_empty_download_is_named(tmp_path):
    data = _write(tmp_path / "h.parquet", list(range(100)))
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    assert parquet_problem(str(cut), len(data) // 2) == "no Parquet magic bytes at both ends: cut short or not Parquet"
    assert parquet_problem(str(cut), 0) == "0 bytes"


def test_the_footer_cannot_tell_without_the_whole_footer_or_a_step_column(tmp_path):
    data = _write(tmp_path / "h.parquet", list(range(100)))
    assert footer_max_step(data[-20:]) is None  # the tail holds only part of the footer
    assert footer_max_step(None) is None and footer_max_step(b"") is None
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"loss": [0.5, 0.25]}), other)
    assert footer_max_step(other.read_bytes()) is None
