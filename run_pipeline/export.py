"""The sync of one run from a client into a warehouse, shared by the Dagster assets and
`run-pipeline export`: the run's identity, its record, and the `Exporter` that streams it in
(incremental by default) and reports what landed. Finding runs is `discovery.py`, exporting
many at once `pool.py`. Plain Python: no Dagster import."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import quote, unquote

from run_pipeline.client import Api, Run, WandbClientError, WandbNotFoundError
from run_pipeline.settings import TERMINAL_STATES
from run_pipeline.warehouse import RunExport, RunRecord, Warehouse, WarehouseError

# Characters Dagster partition keys must not contain (and "%", our escape), plus "/" which
# separates the three parts.
_KEY_UNSAFE = set("/%|,[]")


def _encode_part(value: str) -> str:
    out = "".join(quote(c, safe="") if c in _KEY_UNSAFE or not c.isprintable() else c for c in value)
    return out.replace("...", "%2E%2E%2E")


@dataclass(frozen=True)
class RunRef:
    """One W&B run; its Dagster partition key is `entity/project/run_id` (parts escaped)."""

    entity: str
    project: str
    run_id: str

    @property
    def partition_key(self) -> str:
        return "/".join(_encode_part(p) for p in (self.entity, self.project, self.run_id))

    @classmethod
    def from_partition_key(cls, key: str) -> "RunRef":
        parts = key.split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"partition key {key!r} is not entity/project/run_id")
        return cls(*(unquote(p) for p in parts))

    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}/{self.run_id}"


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


@dataclass(frozen=True)
class ExportResult:
    """One run's export: what the warehouse wrote and what the server holds."""

    ref: RunRef
    state: str
    written: RunExport
    server_history_rows: int
    seconds: float

    mode = property(lambda self: self.written.mode)
    history_rows_written = property(lambda self: self.written.history_rows_written)
    history_rows_total = property(lambda self: self.written.history_rows_total)
    last_step = property(lambda self: self.written.last_step)
    system_rows_total = property(lambda self: self.written.system_rows_total)
    config_keys = property(lambda self: self.written.metadata.config_keys)
    summary_keys = property(lambda self: self.written.metadata.summary_keys)

    @property
    def server_system_rows(self) -> int:
        # The client refuses a system stream whose length differs from the server's count.
        return self.written.system_rows_total

    @property
    def reconciled(self) -> bool:
        # A running run may log rows between the metadata read and the history read.
        if self.state in TERMINAL_STATES:
            return self.history_rows_total == self.server_history_rows
        return self.history_rows_total >= self.server_history_rows

    def describe(self) -> str:
        return (f"{self.state}, {self.mode} history export: {self.history_rows_written} rows written, "
                f"{self.history_rows_total} in the warehouse (server: {self.server_history_rows}), "
                f"{self.system_rows_total} system rows, {self.seconds:.2f}s")


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

    def export_run(self, target: RunRef | Run, *, full: bool = False) -> ExportResult:
        """Export one run: incremental (only steps after the last exported one are fetched)
        unless `full`, which replaces the run's partitions."""
        start = time.perf_counter()
        ref = target if isinstance(target, RunRef) else RunRef(target.entity, target.project, target.id)
        try:
            if isinstance(target, RunRef):
                # Read the run under its lock: an export of it running elsewhere (a sensor's run and
                # a backfill of the same partition) finishes first, so this one sees its result.
                with self.warehouse.run_lock(target.entity, target.project, target.run_id):
                    # Not `api.run(target.path)`: parsing a path mangles names with "/runs/" or edge spaces.
                    run = Run(self.api, target.entity, target.project, target.run_id)
                    return self._export(run, full, start)
            return self._export(target, full, start)
        except (WandbClientError, WarehouseError) as exc:
            _name_run(exc, ref.path)
            raise

    def _export(self, run: Run, full: bool, start: float) -> ExportResult:
        ref = RunRef(run.entity, run.project, run.id)
        self._check_stop()
        record = run_record(run)
        written = self.warehouse.export_run(
            record,
            history=lambda min_step: self._until_stopped(
                run.iter_history_batches(min_step=min_step, page_size=self.page_size, with_system_metrics=True)),
            system_metrics=lambda: self._until_stopped(run.iter_system_metrics_batches()),
            incremental=not full,
        )
        return ExportResult(ref, run.state, written, record.history_line_count or 0, time.perf_counter() - start)

    def mark_if_deleted(self, ref: RunRef) -> bool:
        """Whether the server no longer has the run (asked afresh: a missing file is not a
        missing run); if so, mark it deleted in the warehouse when it was exported before."""
        try:
            Run(self.api, ref.entity, ref.project, ref.run_id)
        except WandbNotFoundError:
            self.warehouse.mark_deleted(ref.entity, ref.project, ref.run_id)
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


