"""Export one run into the warehouse, with no orchestrator: its row, config and summary, its
history (full or incremental) and its system metrics. Dagster assets and the CLI both call this.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow.fs as pafs

from run_pipeline.settings import TERMINAL_STATES

from .deletions import clear_deleted
from .errors import WarehousePathError
from .layout import RUN_CONFIG, RUN_SUMMARY, RUNS, TABLES, RunKey, WarehouseRoot
from .lock import run_lock
from .parquet import Stage, delete_file, list_files, write_table_file
from .parts import HISTORY_SPEC, SYSTEM_SPEC
from .records import RunRecord, key_value_table, runs_table
from .series import HistorySource, SeriesResult, SystemSource, export_series
from .state import delete_series

#: File name of the single Parquet file each run has in the runs, run_config and run_summary tables.
RUN_FILES = {RUNS: "run.parquet", RUN_CONFIG: "config.parquet", RUN_SUMMARY: "summary.parquet"}

Root = str | os.PathLike | WarehouseRoot


@dataclass(frozen=True)
class MetadataResult:
    """The run's row, config and summary files as written."""

    config_keys: int
    summary_keys: int
    bytes: int
    exported_at: datetime
    #: The files placed, as `table/name` (every one of `RUN_FILES`).
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunExport:
    """One run's export: what the warehouse committed for each of its tables, and what the
    run's record said the source holds. The one result of exporting a run, passed as it is from
    `export_run` through `Exporter.export_run` and `pool.export_runs` to the CLI and to the
    Dagster checks and metadata (`defs/checks.py`)."""

    key: RunKey
    #: The run's state as exported.
    state: str | None
    #: Rows the source said the run's history holds (the record's `history_line_count`; 0 when
    #: it did not say).
    source_history_rows: int
    history: SeriesResult | None
    system_metrics: SeriesResult | None
    metadata: MetadataResult
    seconds: float

    @property
    def mode(self) -> str:
        return self.history.mode if self.history else "metadata"

    @property
    def history_rows_written(self) -> int:
        return self.history.rows_written if self.history else 0

    @property
    def history_rows_total(self) -> int:
        return self.history.rows_total if self.history else 0

    @property
    def last_step(self) -> int:
        return self.history.last_step if self.history else -1

    @property
    def system_rows_total(self) -> int:
        return self.system_metrics.rows_total if self.system_metrics else 0

    @property
    def bytes(self) -> int:
        return (self.metadata.bytes + (self.history.bytes if self.history else 0)
                + (self.system_metrics.bytes if self.system_metrics else 0))

    @property
    def reconciled(self) -> bool:
        """Whether the warehouse holds every history row the source said the run has. A
        running run may log rows between the record's read and the history's, so more is
        fine until it reaches a terminal state."""
        if self.state in TERMINAL_STATES:
            return self.history_rows_total == self.source_history_rows
        return self.history_rows_total >= self.source_history_rows

    def describe(self) -> str:
        # The run's state comes last and is named: "failed" first read as the export failing.
        return (f"{self.mode} history export: {self.history_rows_written} rows written, "
                f"{self.history_rows_total} in the warehouse (server: {self.source_history_rows}), "
                f"{self.system_rows_total} system rows, {self.seconds:.2f}s (W&B state: {self.state})")


def export_run(root: Root, run: RunRecord | Mapping[str, Any], history: HistorySource | None = None,
               system_metrics: SystemSource | None = None, *, incremental: bool = False,
               filesystem: pafs.FileSystem | None = None,
               exported_at: datetime | None = None, lock_timeout: float | None = None) -> RunExport:
    """Export one run.

    `run` is the run's `RunRecord` (or a mapping of the same names). `history` is `fetch(min_step)` returning
    record batches in ascending `_step` order, or an iterable of such batches; None leaves the
    run's history untouched. `system_metrics` is a zero-argument callable or an iterable of
    batches with `_timestamp` and `_runtime`; it is always replaced whole.

    A full export replaces the run's partitions. With `incremental=True` only steps after the
    last exported one are fetched and appended; the export falls back to a full replace when
    nothing is committed yet, the committed files do not match their manifest (an interrupted
    commit), or the run's `last_step` / `history_line_count` show its history shrank. It does
    nothing to the history when both equal what is committed. History and system metrics are
    committed before the run's row, so `runs` never lists history that is not there yet.

    One writer per run: on a local root the export holds the run's lock (`lock.run_lock`), so
    a concurrent export of the same run waits for this one (at most `lock_timeout` seconds).
    A run whose names cannot be stored is refused with `WarehousePathError` naming it.
    """
    started = time.perf_counter()
    wr = WarehouseRoot.parse(root, filesystem)
    run = RunRecord.of(run)
    key = _storable_key(run)
    with run_lock(wr, key, lock_timeout):
        # One staging directory for the whole run (history, system metrics and metadata).
        with Stage(wr, RUNS, key) as stage:
            history_result = system_result = None
            if history is not None:
                history_result = export_series(wr, HISTORY_SPEC, key, history, stage, incremental=incremental,
                                               source_last_step=_opt_int(run.last_step),
                                               source_rows=_opt_int(run.history_line_count))
            if system_metrics is not None:
                system_result = export_series(wr, SYSTEM_SPEC, key, system_metrics, stage)
            metadata = _write_metadata(wr, key, run, exported_at, stage)
        clear_deleted(wr, key)  # exported again: the run exists on the server (restored)
    return RunExport(key, run.state, _opt_int(run.history_line_count) or 0, history_result, system_result, metadata,
                     time.perf_counter() - started)


def _storable_key(run: RunRecord) -> RunKey:
    key = run.key
    try:
        key.components()
    except WarehousePathError as exc:
        raise WarehousePathError(f"run {key.entity}/{key.project}/{key.run_id} cannot be stored: {exc}") from exc
    return key


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def write_run_metadata(root: Root, run: RunRecord | Mapping[str, Any], *, filesystem: pafs.FileSystem | None = None,
                       exported_at: datetime | None = None) -> MetadataResult:
    """Replace the run's row in `runs` and its rows in `run_config` and `run_summary`; each
    is one file per run, replaced atomically (under the run's lock)."""
    wr = WarehouseRoot.parse(root, filesystem)
    run = RunRecord.of(run)
    key = _storable_key(run)
    with run_lock(wr, key):
        with Stage(wr, RUNS, key) as stage:
            return _write_metadata(wr, key, run, exported_at, stage)


def _write_metadata(wr: WarehouseRoot, key: RunKey, run: RunRecord,
                    exported_at: datetime | None, stage: Stage) -> MetadataResult:
    exported_at = exported_at or datetime.now(timezone.utc)
    config, summary = key_value_table(run.config), key_value_table(run.summary)
    tables = {RUNS: runs_table(run, exported_at), RUN_CONFIG: config, RUN_SUMMARY: summary}
    size = 0
    for table, data in tables.items():
        size += write_table_file(stage, table, RUN_FILES[table], data)
    placed = []
    for table in (RUN_CONFIG, RUN_SUMMARY, RUNS):
        stage.place(table, RUN_FILES[table], f"{wr.run_dir(table, key)}/{RUN_FILES[table]}")
        placed.append(f"{table}/{RUN_FILES[table]}")
    return MetadataResult(len(config), len(summary), size, exported_at, tuple(placed))


def delete_run(root: Root, key: RunKey, *, filesystem: pafs.FileSystem | None = None) -> None:
    """Remove every file of a run (e.g. deleted in W&B): its row first, then its series."""
    wr = WarehouseRoot.parse(root, filesystem)
    with run_lock(wr, key):
        for table in (RUNS, RUN_CONFIG, RUN_SUMMARY):
            delete_file(wr.fs, f"{wr.run_dir(table, key)}/{RUN_FILES[table]}")
        delete_series(wr, HISTORY_SPEC, key)
        delete_series(wr, SYSTEM_SPEC, key)
        clear_deleted(wr, key)
        for table in TABLES:
            directory = wr.run_dir(table, key)
            if not list_files(wr.fs, directory) and wr.fs.get_file_info(directory).type == pafs.FileType.Directory:
                wr.fs.delete_dir(directory)

