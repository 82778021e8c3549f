"""`Warehouse`: one root, every warehouse operation as a method (what resources build)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs

from . import catalog, compaction, deletions, export, exported, state
from .layout import HISTORY, RunKey, WarehouseRoot
from .lock import run_lock
from .records import RunRecord
from .series import HistorySource, SystemSource

if TYPE_CHECKING:  # duckdb is imported where a catalog is built or opened
    import duckdb


class Warehouse:
    """A warehouse root (local directory or `s3://bucket/prefix`) and what can be done to it."""

    def __init__(self, root: str | os.PathLike | WarehouseRoot, filesystem: pafs.FileSystem | None = None):
        self.root = WarehouseRoot.parse(root, filesystem)

    def __repr__(self) -> str:
        return f"Warehouse({self.root.uri!r})"

    @property
    def uri(self) -> str:
        return self.root.uri

    def export_run(self, run: RunRecord | Mapping[str, Any], history: HistorySource | None = None,
                   system_metrics: SystemSource | None = None, *, incremental: bool = False,
                   exported_at: datetime | None = None, lock_timeout: float | None = None) -> export.RunExport:
        """Export one run (see `export.export_run`)."""
        return export.export_run(self.root, run, history, system_metrics, incremental=incremental,
                                 exported_at=exported_at, lock_timeout=lock_timeout)

    def run_lock(self, run: RunKey, timeout: float | None = None) -> AbstractContextManager[None]:
        """The run's write lock (see `lock.run_lock`): hold it to read a run's source state and
        export it with no other writer of the run in between. Re-entrant within a thread."""
        return run_lock(self.root, run, timeout)

    def write_run_metadata(self, run: RunRecord | Mapping[str, Any]) -> export.MetadataResult:
        """Replace one run's row, config and summary."""
        return export.write_run_metadata(self.root, run)

    def delete_run(self, run: RunKey) -> None:
        """Remove every file of one run."""
        export.delete_run(self.root, run)

    def mark_deleted(self, run: RunKey, when: datetime | None = None) -> datetime | None:
        """Mark an exported run deleted on the server, keeping its rows (see `deletions.py`);
        None when the run was never exported."""
        return deletions.mark_deleted(self.root, run, when)

    def deleted_at(self, run: RunKey) -> datetime | None:
        return deletions.deleted_at(self.root, run)

    def deleted_runs(self) -> Iterator[tuple[RunKey, datetime]]:
        """Every run marked deleted, with the time of its mark."""
        return deletions.iter_deleted(self.root)

    def exported_run_ids(self, entity: str, project: str) -> set[str]:
        """Ids of a project's runs that have a row in `runs`."""
        return deletions.exported_run_ids(self.root, entity, project)

    def prune(self, deleted_before: datetime) -> list[RunKey]:
        """Remove every file of the runs marked deleted before `deleted_before` (each run's
        files go under its lock: its row first, then its series) and refresh the catalog when
        the root is local. Returns the runs removed."""
        removed = []
        for key, when in list(deletions.iter_deleted(self.root)):
            if when < deleted_before:
                export.delete_run(self.root, key)
                removed.append(key)
        if removed and self.root.is_local:
            self.refresh_catalog()
        return removed

    def exported_states(self, entity: str, project: str) -> dict[str, tuple[str | None, str]]:
        """Run id → (state, heartbeat ISO text) of every run of a project as last exported, in one
        pass (see `exported.exported_states`)."""
        return exported.exported_states(self.root, entity, project)

    def run_state(self, run: RunKey, table: str = HISTORY) -> state.RunState | None:
        """The committed manifest of a run's history (or system metrics), None if never exported."""
        return state.read_state(self.root, table, run)

    def run_states(self, table: str = HISTORY) -> Iterator[tuple[RunKey, state.RunState]]:
        """Every exported run with its committed history (or system metrics) state."""
        return state.iter_run_states(self.root, table)

    def last_exported_step(self, run: RunKey) -> int:
        """Last committed history step of a run; -1 when none."""
        return state.last_exported_step(self.root, run)

    def compact(self, entity: str | None = None, projects: Iterable[str] | None = None, *,
                min_runs: int = compaction.MIN_RUNS, refresh: bool = True) -> list[compaction.CompactResult]:
        """Pack the long-form `metrics` of finished runs into a few files per project (see
        `compaction.py`): every project, those of `entity`, or the named `projects` of it.
        Refreshes the catalog of a local root unless `refresh` is False (a no-op when its views
        are current; a compaction killed after promoting its first pack left them without the
        packs). Returns one result per project looked at."""
        wanted = None if projects is None else {projects} if isinstance(projects, str) else set(projects)
        results = []
        for e, p in self.projects():
            if (entity is not None and e != entity) or (wanted is not None and p not in wanted):
                continue
            results.append(compaction.compact_project(self.root, e, p, min_runs=min_runs))
        if refresh and self.root.is_local:
            self.refresh_catalog()
        return results

    def projects(self) -> list[tuple[str, str]]:
        """Every (entity, project) with a run in the warehouse."""
        return exported.projects(self.root)

    def refresh_catalog(self, database: str | os.PathLike | None = None, *, force: bool = False) -> dict:
        """(Re)create the DuckDB views, unless they are up to date or `force` (see
        `catalog.refresh_catalog`)."""
        return catalog.refresh_catalog(self.root, database=database, force=force)

    def view_statements(self) -> list[str]:
        """`CREATE OR REPLACE VIEW` statements over this root."""
        return catalog.view_statements(self.root)

    def connect(self, s3_secret: dict | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with the views (see `catalog.connect`)."""
        return catalog.connect(self.root, s3_secret=s3_secret)
