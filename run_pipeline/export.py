"""The sync of one run from a client into a warehouse, shared by the Dagster assets and
`run-pipeline export`: the run's record and the `Exporter` that streams it in (incremental by
default) and returns the warehouse's `RunExport`. Finding runs is `discovery.py`, exporting many
at once `pool.py`. Plain Python: no Dagster import."""

from __future__ import annotations

import threading
from typing import Any, Iterator

from run_pipeline.client import Api, Run, WandbClientError, WandbNotFoundError
from run_pipeline.warehouse import (
    RunExport,
    RunKey,
    RunRecord,
    Warehouse,
    WarehouseError,
)


def run_record(run: Run) -> RunRecord:
    """The warehouse's record of a loaded client Run."""
    user = run.user
    keys = run.history_keys or {}
    count = run.history_line_count
    return RunRecord(
        entity=run.entity, project=run.project, run_id=run.id, name=run.name, state=run.state,
        created_at=run.created_at_utc, heartbeat_at=run.heartbeat_at_utc, tags=tuple(run.tags or ()),
        notes=run.notes, group=run.group, job_type=run.job_type,
        username=user.username if user else None, url=run.url,
        config=run.config, summary=run.summary_metrics, system_metrics=run.system_metrics,
        history_line_count=None if count is None else int(count),
        last_step=keys.get("lastStep", -1) if isinstance(keys, dict) else -1,
    )


class ExportInterrupted(Exception):
    """The export was stopped (Ctrl-C) before this run committed: none of it is visible."""


class Exporter:
    """Exports runs from one Api into one Warehouse.

    Setting `stop` abandons the runs in flight at their next record batch, before anything of
    them is committed (their staged files are removed), and refuses runs not yet started.
    """

    def __init__(self, api: Api, warehouse: Warehouse, *, page_size: int = 1000):
        self.api = api
        self.warehouse = warehouse
        self.page_size = page_size
        self.stop = threading.Event()

    def export_run(self, target: RunKey | Run, *, full: bool = False) -> RunExport:
        """Export one run: incremental (only steps after the last exported one are fetched)
        unless `full`, which replaces the run's partitions.

        A `RunKey` is read from the server under the run's write lock, so an export of it
        running elsewhere (a sensor's run and a backfill of the same partition) finishes first
        and this one sees its result; a listed `Run` is exported from the fields it was listed
        with. An error names the run."""
        key = target if isinstance(target, RunKey) else RunKey(target.entity, target.project, target.id)
        try:
            with self.warehouse.run_lock(key):
                # Not `api.run(key.path)`: parsing a path mangles names with "/runs/" or edge spaces.
                run = target if isinstance(target, Run) else Run(self.api, key.entity, key.project, key.run_id)
                self._check_stop()
                return self.warehouse.export_run(
                    run_record(run),
                    history=lambda min_step: self._until_stopped(
                        run.iter_history_batches(min_step=min_step, page_size=self.page_size,
                                                 with_system_metrics=True)),
                    system_metrics=lambda: self._until_stopped(run.iter_system_metrics_batches()),
                    incremental=not full,
                )
        except (WandbClientError, WarehouseError) as exc:
            _name_run(exc, key.path)
            raise

    def mark_if_deleted(self, key: RunKey) -> bool:
        """Whether the server no longer has the run (asked afresh: a missing file is not a
        missing run); if so, mark it deleted in the warehouse when it was exported before."""
        try:
            Run(self.api, key.entity, key.project, key.run_id)
        except WandbNotFoundError:
            self.warehouse.mark_deleted(key)
            return True
        return False

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise ExportInterrupted("interrupted before it was committed")

    def _until_stopped(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self._check_stop()
            yield batch


def _name_run(exc: Exception, path: str) -> None:
    """Put the run's path in front of an error's message (same class, attributes and cause), so
    "gave up on GraphQL RunFullHistory ..." says which run it gave up on."""
    if exc.args and isinstance(exc.args[0], str) and path not in exc.args[0]:
        exc.args = (f"run {path}: {exc.args[0]}", *exc.args[1:])


