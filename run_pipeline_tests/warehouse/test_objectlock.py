"""The per-run lock on an `s3://` root: a lock object created with a conditional write
(`If-None-Match: *`) against moto's S3 server, which honours it as S3 does."""

from __future__ import annotations

import threading
import time

import pytest

from run_pipeline.warehouse import WarehouseRoot
from run_pipeline.warehouse.errors import WarehouseLockError
from run_pipeline.warehouse.layout import RunKey
from run_pipeline.warehouse.lock import lock_path, run_lock
from run_pipeline.warehouse.objectlock import object_lock


@pytest.fixture
def root(s3) -> WarehouseRoot:
    fs, bucket = s3
    return WarehouseRoot.parse(f"s3://{bucket}/wh", filesystem=fs)


RUN = RunKey("demo", "proj", "run1")


def test_writers_of_one_run_on_an_object_store_never_overlap(root):
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def writer():
        try:
            with run_lock(root, RUN):
                start = time.monotonic()
                time.sleep(0.15)
                spans.append((start, time.monotonic()))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    spans.sort()
    assert len(spans) == 4
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert not root.fs.get_file_info(lock_path(root, RUN)).is_file  # released


def test_a_writer_that_cannot_wait_is_refused_naming_the_run_and_the_object(root):
    with run_lock(root, RUN):
        with run_lock(root, RUN):  # re-entrant in one thread
            pass
        outcome: list[str] = []

        def other():
            try:
                with run_lock(root, RUN, timeout=0.5):
                    outcome.append("acquired")
            except WarehouseLockError as exc:
                outcome.append(str(exc))

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert outcome == [f"run demo/proj/run1: another export of it has held s3://{lock_path(root, RUN)} "
                       "for more than 0.5s"]


def test_a_lock_left_by_a_dead_holder_is_taken_over_once_stale(root):
    path = lock_path(root, RUN)
    with root.fs.open_output_stream(path) as out:  # what a SIGKILLed holder leaves behind
        out.write(b"{}")
    with pytest.raises(WarehouseLockError):
        with object_lock(root.fs, path, "run demo/proj/run1", timeout=0.3, stale_after=3600):
            pass
    with object_lock(root.fs, path, "run demo/proj/run1", timeout=5, stale_after=0):
        assert root.fs.get_file_info(path).is_file
    assert not root.fs.get_file_info(path).is_file
