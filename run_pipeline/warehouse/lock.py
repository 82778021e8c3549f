"""One writer per run: an advisory OS file lock around everything that changes a run's files.

The commit protocol (see `state.py`) and the staging directories assume that one export of a
run runs at a time. Dagster does not promise that: a sensor-triggered run and a backfill can
materialize the same partition at once, and `run-pipeline export` can run beside them. On a
local root every writer of a run therefore holds `fcntl.flock` on
`<root>/_staging/locks/<run token>.lock`; a second writer waits, then finds the first one's
commit (an incremental export then has nothing to do).

The kernel releases the lock when its holder dies, even by SIGKILL, so a crash never leaves a
run locked. Lock files are tiny and never deleted (deleting one would let two writers lock
two different files). On object stores (`s3://`) the same lock is an object created with a
conditional write (`objectlock.py`), which serialises writers on different hosts.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import WarehouseLockError
from .layout import STAGING, RunKey, WarehouseRoot, project_token
from .objectlock import STALE_SECONDS, object_lock

LOCKS = "locks"
#: How often a writer with a timeout retries a held lock.
_POLL_SECONDS = 0.05
# Locks this thread holds: taking one again nests instead of deadlocking (flock locks belong
# to an open file, so a second open() of the same lock file would wait for the first).
_held = threading.local()


def lock_path(root: WarehouseRoot, run: RunKey) -> str:
    return root.path(STAGING, LOCKS, f"{run.token()}.lock")


@contextmanager
def run_lock(root: WarehouseRoot, run: RunKey, timeout: float | None = None) -> Iterator[None]:
    """Hold the run's write lock (a file lock on local roots, a lock object on object stores).
    Waits for another writer of the same run; with `timeout` (seconds) gives up with
    `WarehouseLockError` naming the run. Re-entrant within a thread."""
    with _hold(root, lock_path(root, run), f"run {run.entity}/{run.project}/{run.run_id}",
               "another export of it", timeout):
        yield


def packs_lock_path(root: WarehouseRoot, entity: str, project: str) -> str:
    return root.path(STAGING, LOCKS, f"packs-{project_token(entity, project)}.lock")


@contextmanager
def packs_lock(root: WarehouseRoot, entity: str, project: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the lock of a project's metrics packs (see `packs.py`): whoever writes a pack file
    holds it. Taken after a run's lock, never before one that it waits for."""
    with _hold(root, packs_lock_path(root, entity, project), f"metrics packs of {entity}/{project}",
               "another writer of them", timeout):
        yield


@contextmanager
def _hold(root: WarehouseRoot, path: str, what: str, holder: str, timeout: float | None) -> Iterator[None]:
    held = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    if not root.is_local:
        with object_lock(root.fs, path, what, timeout=timeout, stale_after=STALE_SECONDS):
            held.add(path)
            try:
                yield
            finally:
                held.discard(path)
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:  # the warehouse's first lock
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise WarehouseLockError(
                            f"{what}: {holder} has held {path} for more than {timeout:g}s") from None
                    time.sleep(_POLL_SECONDS)
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)
    finally:
        os.close(fd)  # closing the descriptor releases the lock
