"""The export path shared by the Dagster assets and `run-pipeline export`: find runs through
the client, stream each into the warehouse (incremental by default), report what landed.
Plain Python: no Dagster import."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, unquote

from run_pipeline.client import Api, Run, WandbClientError, WandbNotFoundError
from run_pipeline.lifeline import die_with
from run_pipeline.settings import LIST_PAGE_SIZE, TERMINAL_STATES
from run_pipeline.warehouse import RunExport, Warehouse, WarehouseError

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


@dataclass(frozen=True)
class FoundRun:
    ref: RunRef
    state: str
    heartbeat_at: str  # the server's DateTime text, comparable as a string
    run: Run

    @property
    def partition_key(self) -> str:
        return self.ref.partition_key


def iter_runs(api: Api, entity: str, project: str, *, states=None, since: str | None = None,
              after: str | None = None, run_ids=None) -> Iterator[FoundRun]:
    """Runs of a project in heartbeat order, filtered on the server, lazily paged: `states`,
    heartbeat at or after `since` or strictly after `after` (ISO, UTC), `run_ids`."""
    clauses: list[dict[str, Any]] = []
    if states:
        clauses.append({"state": {"$in": list(states)}})
    if since:
        clauses.append({"heartbeatAt": {"$gte": since}})
    if after:
        clauses.append({"heartbeatAt": {"$gt": after}})
    if run_ids:
        clauses.append({"name": {"$in": list(run_ids)}})
    filters = {"$and": clauses} if clauses else None
    for run in api.runs(f"{entity}/{project}", filters=filters, order="+heartbeat_at", per_page=LIST_PAGE_SIZE):
        yield FoundRun(RunRef(entity, project, run.id), run.state, run.heartbeat_at or "", run)


def discover_runs(api: Api, entity: str, project: str, *, states=None, since: str | None = None,
                  after: str | None = None, run_ids=None, limit: int | None = None) -> list[FoundRun]:
    """`iter_runs` as a list of at most `limit` runs."""
    runs = iter_runs(api, entity, project, states=states, since=since, after=after, run_ids=run_ids)
    return list(runs if limit is None else islice(runs, max(0, limit)))


def run_metadata(run: Run) -> dict[str, Any]:
    """The warehouse's run record, from a loaded client Run."""
    user = run.user
    keys = run.history_keys or {}
    return {
        "entity": run.entity, "project": run.project, "run_id": run.id, "name": run.name,
        "state": run.state, "created_at": run.created_at_utc, "heartbeat_at": run.heartbeat_at_utc,
        "tags": list(run.tags or []), "notes": run.notes, "group": run.group, "job_type": run.job_type,
        "username": user.username if user else None, "url": run.url,
        "config": run.config, "summary": run.summary_metrics, "system_metrics": run.system_metrics,
        "history_line_count": run.history_line_count,
        "last_step": keys.get("lastStep", -1) if isinstance(keys, dict) else -1,
    }


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
        meta = run_metadata(run)
        written = self.warehouse.export_run(
            meta,
            history=lambda min_step: self._until_stopped(
                run.iter_history_batches(min_step=min_step, page_size=self.page_size)),
            system_metrics=lambda: self._until_stopped(run.iter_system_metrics_batches()),
            incremental=not full,
        )
        return ExportResult(ref, run.state, written, int(meta["history_line_count"] or 0), time.perf_counter() - start)

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


#: With fewer runs than this per worker, threads: a process pool's start-up would not pay off.
MIN_RUNS_PER_PROCESS = 4
#: Imported once by the fork server, so workers start with them loaded. pyarrow imports pandas
#: (when installed) the first time it converts Python values, about 0.5 s of CPU that every
#: worker would otherwise pay; a missing module is skipped by multiprocessing.
FORKSERVER_PRELOAD = ("run_pipeline.export", "pandas")


@dataclass(frozen=True)
class Outcome:
    """One run of `export_runs`: its result, or the error that stopped it (its message, naming
    the run, and the error's class name, e.g. "WandbQueryError"), or `deleted`: the server no
    longer has the run, which is not a failure (its rows stay in the warehouse, marked with
    the time the deletion was seen, when it was ever exported)."""

    target: FoundRun | RunRef
    result: ExportResult | None
    error: str | None
    error_type: str | None
    deleted: bool = False

    @property
    def ref(self) -> RunRef:
        return _ref(self.target)


def export_runs(api: Api, warehouse: Warehouse, targets: list[FoundRun] | list[RunRef], *, full: bool = False,
                workers: int = 1, processes: bool | None = None) -> Iterator[Outcome]:
    """Export `targets`, `workers` at a time; yield each outcome as it completes. A failed run
    is reported and the others still land.

    A target is a listed run (`FoundRun`: exported from the listing's fields, no request to
    load it) or a `RunRef` (loaded under the run's lock first, as Dagster partitions are).
    Parsing history holds the GIL, so with `workers > 1` runs are exported in a pool of
    processes, each with its own client and connection pool; `processes=None` picks threads
    when there are too few runs to pay for starting the pool.
    """
    workers = max(1, int(workers))
    if processes is None:
        processes = workers > 1 and len(targets) >= workers * MIN_RUNS_PER_PROCESS
    if workers == 1 and not processes:
        exporter = Exporter(api, warehouse)
        for target in targets:
            yield Outcome(target, *_export_here(exporter, _what(target), full))
        return
    if processes:
        import multiprocessing

        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            context.set_forkserver_preload(list(FORKSERVER_PRELOAD))
        pool: Any = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                        initializer=_start_worker, initargs=(api, warehouse, os.getpid()))

        def submit(target: FoundRun | RunRef) -> Future:
            attrs = target.run.server_attrs if isinstance(target, FoundRun) else {}
            return pool.submit(_export_in_worker, _ref(target), attrs, full)
    else:
        exporter = Exporter(api, warehouse)
        pool = ThreadPoolExecutor(max_workers=workers)

        def submit(target: FoundRun | RunRef) -> Future:
            return pool.submit(_export_here, exporter, _what(target), full)

    with pool:
        futures = {submit(t): t for t in targets}
        try:
            for future in as_completed(futures):
                yield Outcome(futures[future], *future.result())
        finally:
            for future in futures:
                future.cancel()
            if not processes:
                exporter.stop.set()  # threads still exporting abandon their runs


def _ref(target: FoundRun | RunRef) -> RunRef:
    return target.ref if isinstance(target, FoundRun) else target


def _what(target: FoundRun | RunRef) -> Run | RunRef:
    return target.run if isinstance(target, FoundRun) else target


def _export_here(exporter: Exporter, run: Run | RunRef,
                 full: bool) -> tuple[ExportResult | None, str | None, str | None, bool]:
    try:
        return exporter.export_run(run, full=full), None, None, False
    except WandbNotFoundError as exc:
        ref = run if isinstance(run, RunRef) else RunRef(run.entity, run.project, run.id)
        try:
            if exporter.mark_if_deleted(ref):
                return None, None, None, True
        except Exception as check:  # noqa: BLE001 - the original error is the one to report
            exc.__context__ = check
        return None, f"{type(exc).__name__}: {exc}", type(exc).__name__, False
    except Exception as exc:  # reported per run; the others still land
        return None, f"{type(exc).__name__}: {exc}", type(exc).__name__, False


_worker_exporter: Exporter | None = None


def _start_worker(api: Api, warehouse: Warehouse, owner_pid: int) -> None:
    global _worker_exporter
    die_with(owner_pid)  # killed owner, even by SIGKILL: no orphaned worker (nor fork server)
    exporter = _worker_exporter = Exporter(api, warehouse)
    # Ctrl-C reaches the whole process group: a worker abandons its run at the next batch
    # (nothing of it committed) instead of dying at an arbitrary point.
    signal.signal(signal.SIGINT, lambda *_: exporter.stop.set())


def _export_in_worker(ref: RunRef, attrs: dict[str, Any],
                      full: bool) -> tuple[ExportResult | None, str | None, str | None, bool]:
    exporter = _worker_exporter
    assert exporter is not None, "export worker not started"
    run = Run(exporter.api, ref.entity, ref.project, ref.run_id, attrs=attrs) if attrs.get("id") else ref
    return _export_here(exporter, run, full)


def _name_run(exc: Exception, path: str) -> None:
    """Put the run's path in front of an error's message (same class, attributes and cause), so
    "gave up on GraphQL RunFullHistory ..." says which run it gave up on."""
    if exc.args and isinstance(exc.args[0], str) and path not in exc.args[0]:
        exc.args = (f"run {path}: {exc.args[0]}", *exc.args[1:])


@dataclass(frozen=True)
class RunInspection:
    """What the asset checks and materialization metadata look at for one exported run."""

    missing_files: list[str]
    duplicate_steps: int
    preview_markdown: str


def inspect_run(warehouse: Warehouse, ref: RunRef, preview_rows: int = 5, preview_columns: int = 6) -> RunInspection:
    """Check one exported run's files: its runs/run_config/run_summary files exist, how many
    `_step` values repeat in its history, and a small preview of the last rows."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    from run_pipeline.warehouse import RunKey
    from run_pipeline.warehouse.export import RUN_FILES

    root = warehouse.root
    key = RunKey(ref.entity, ref.project, ref.run_id)
    missing = []
    for table, name in RUN_FILES.items():
        path = f"{root.run_dir(table, key)}/{name}"
        if root.fs.get_file_info(path).type != pafs.FileType.File:
            missing.append(f"{table}/{name}")
    history_dir = root.run_dir("history", key)
    if root.fs.get_file_info(history_dir).type != pafs.FileType.Directory:
        return RunInspection(missing, 0, "(no history)")
    data = ds.dataset(history_dir, filesystem=root.fs, format="parquet", exclude_invalid_files=True)
    if "_step" not in data.schema.names:  # a run that logged no history
        return RunInspection(missing, 0, "(no history)")
    steps = data.to_table(columns=["_step"]).column("_step")
    duplicates = len(steps) - pc.count_distinct(steps).as_py() if len(steps) else 0
    names = [n for n in data.schema.names if n not in ("entity", "project", "run_id")][:preview_columns]
    table = data.to_table(columns=names)
    tail = table.slice(max(0, table.num_rows - preview_rows))
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in tail.to_pylist():
        lines.append("| " + " | ".join("" if row[n] is None else f"{row[n]:.6g}" if isinstance(row[n], float)
                                       else str(row[n])[:40] for n in names) + " |")
    return RunInspection(missing, duplicates, "\n".join(lines))


def exported_status(warehouse: Warehouse, ref: RunRef) -> tuple[str, str] | None:
    """(state, heartbeat ISO text) of the run as last exported, or None if never exported."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from run_pipeline.warehouse import RunKey
    from run_pipeline.warehouse.export import RUN_FILES

    root = warehouse.root
    path = f"{root.run_dir('runs', RunKey(ref.entity, ref.project, ref.run_id))}/{RUN_FILES['runs']}"
    if root.fs.get_file_info(path).type != pafs.FileType.File:
        return None
    row = pq.read_table(path, filesystem=root.fs, columns=["state", "heartbeat_at"]).to_pylist()[0]
    hb = row["heartbeat_at"]
    return row["state"], hb.strftime("%Y-%m-%dT%H:%M:%S") if hb is not None else ""


def vanished_runs(warehouse: Warehouse, entity: str, project: str,
                  listed: list[FoundRun]) -> list[RunRef]:
    """Exported runs of a project that a complete listing (`listed`) no longer holds and that
    are not marked deleted yet: exporting them checks with the server and marks them."""
    marked = {key.run_id for key, _ in warehouse.deleted_runs()
              if key.entity == entity and key.project == project}
    gone = warehouse.exported_run_ids(entity, project) - {f.ref.run_id for f in listed} - marked
    return [RunRef(entity, project, run_id) for run_id in sorted(gone)]


def changed_runs(api: Api, warehouse: Warehouse, entity: str, project: str) -> list[FoundRun | RunRef]:
    """What a nightly refresh must fetch, however long since the last one ran: runs whose state
    or heartbeat differ from their last export, runs never exported, runs marked deleted that
    the server lists again (restored), and, as `RunRef`s, exported runs that the complete
    listing no longer holds (their export finds them gone and marks them deleted)."""
    out: list[FoundRun | RunRef] = []
    listed = discover_runs(api, entity, project)
    marked = {key.run_id for key, _ in warehouse.deleted_runs()
              if key.entity == entity and key.project == project}
    for found in listed:
        if (found.ref.run_id in marked
                or exported_status(warehouse, found.ref) != (found.state, found.heartbeat_at[:19])):
            out.append(found)
    return out + vanished_runs(warehouse, entity, project, listed)
