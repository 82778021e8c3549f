"""The staging area: one staging directory per run export, gone once the export ends."""

from __future__ import annotations

import pytest

from run_pipeline.warehouse import export_run
from run_pipeline.warehouse.layout import RUNS, RunKey, WarehouseRoot
from run_pipeline.warehouse.parquet import Stage, write_bytes_file

from .helpers import batch, make_run, query, system_batch


def staging_entries(root) -> list[str]:
    """Everything under `_staging` except the lock files and the per-table parent directories."""
    staging = root / "_staging"
    return sorted(str(p.relative_to(staging)) for p in staging.glob("*/*") if p.parent.name != "locks")


def test_export_stages_every_table_of_a_run_in_one_directory_and_removes_it(tmp_path, monkeypatch):
    seen: list[str] = []
    opened = Stage.__init__

    def record(self, root, table, run):
        opened(self, root, table, run)
        seen.append(self.local_dir)

    monkeypatch.setattr(Stage, "__init__", record)
    export_run(tmp_path, make_run(config={"lr": 0.1}, summary={"acc": 0.5}),
               [batch([0, 1, 2], {"loss": [0.5, 0.25, 0.125]})],
               [system_batch([10.0, 11.0], {"gpu": [1.0, 2.0]})])
    assert len(seen) == 1  # history, system metrics and the metadata files share it
    assert staging_entries(tmp_path) == []
    assert query(tmp_path, "SELECT count(*) FROM history") == [(3,)]
    assert query(tmp_path, "SELECT count(*) FROM system_metrics") == [(2,)]
    assert query(tmp_path, "SELECT key, value FROM run_config") == [("lr", "0.1")]


def test_failed_export_removes_its_staged_files(tmp_path):
    def failing():
        yield batch([0, 1], {"loss": [1.0, 2.0]})
        raise RuntimeError("connection lost")

    with pytest.raises(RuntimeError, match="connection lost"):
        export_run(tmp_path, make_run(), failing())
    assert staging_entries(tmp_path) == []
    assert not list((tmp_path / "_staging").rglob("*.tmp"))


def test_stage_cleanup_removes_files_never_placed(tmp_path):
    root = WarehouseRoot.parse(tmp_path)
    stage = Stage(root, RUNS, RunKey("e", "p", "r"))
    write_bytes_file(stage, RUNS, "x.json", b"{}")
    stage.cleanup()
    assert staging_entries(tmp_path) == []
    stage.cleanup()  # already gone: nothing to do
