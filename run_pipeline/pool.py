"""Exporting many runs at once: a pool of worker processes (parsing holds the GIL) or threads,
each outcome reported as it completes; a failed run is named and the others still land."""

from __future__ import annotations

import os
import signal
from concurrent.futures import (
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    as_completed,
)
from dataclasses import dataclass
from typing import Any, Iterator

from run_pipeline.client import Api, Run, WandbNotFoundError
from run_pipeline.discovery import FoundRun
from run_pipeline.export import Exporter
from run_pipeline.lifeline import die_with
from run_pipeline.warehouse import RunExport, RunKey, Warehouse

#: With fewer runs than this per worker, threads: a process pool's start-up would not pay off.
MIN_RUNS_PER_PROCESS = 4
#: Imported once by the fork server, so workers start with them loaded. pyarrow imports pandas
#: (when installed) the first time it converts Python values, about 0.5 s of CPU that every
#: worker would otherwise pay; a missing module is skipped by multiprocessing.
FORKSERVER_PRELOAD = ("run_pipeline.pool", "pandas")


@dataclass(frozen=True)
class Outcome:
    """One run of `export_runs`: its result, or the error that stopped it (its message, naming
    the run, and the error's class name, e.g. "WandbQueryError"), or `deleted`: the server no
    longer has the run, which is not a failure (its rows stay in the warehouse, marked with
    the time the deletion was seen, when it was ever exported)."""

    target: FoundRun | RunKey
    result: RunExport | None
    error: str | None
    error_type: str | None
    deleted: bool = False

    @property
    def key(self) -> RunKey:
        return _key(self.target)


def export_runs(api: Api, warehouse: Warehouse, targets: list[FoundRun] | list[RunKey], *, full: bool = False,
                workers: int = 1, processes: bool | None = None) -> Iterator[Outcome]:
    """Export `targets`, `workers` at a time; yield each outcome as it completes. A failed run
    is reported and the others still land.

    A target is a listed run (`FoundRun`: exported from the listing's fields, no request to
    load it) or a `RunKey` (loaded under the run's lock first, as Dagster partitions are).
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

        def submit(target: FoundRun | RunKey) -> Future:
            attrs = target.run.server_attrs if isinstance(target, FoundRun) else {}
            return pool.submit(_export_in_worker, _key(target), attrs, full)
    else:
        exporter = Exporter(api, warehouse)
        pool = ThreadPoolExecutor(max_workers=workers)

        def submit(target: FoundRun | RunKey) -> Future:
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


def _key(target: FoundRun | RunKey) -> RunKey:
    return target.key if isinstance(target, FoundRun) else target


def _what(target: FoundRun | RunKey) -> Run | RunKey:
    return target.run if isinstance(target, FoundRun) else target


def _export_here(exporter: Exporter, run: Run | RunKey,
                 full: bool) -> tuple[RunExport | None, str | None, str | None, bool]:
    try:
        return exporter.export_run(run, full=full), None, None, False
    except WandbNotFoundError as exc:
        key = run if isinstance(run, RunKey) else RunKey(run.entity, run.project, run.id)
        try:
            if exporter.mark_if_deleted(key):
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


def _export_in_worker(key: RunKey, attrs: dict[str, Any],
                      full: bool) -> tuple[RunExport | None, str | None, str | None, bool]:
    exporter = _worker_exporter
    assert exporter is not None, "export worker not started"
    run = Run(exporter.api, key.entity, key.project, key.run_id, attrs=attrs) if attrs.get("id") else key
    return _export_here(exporter, run, full)
