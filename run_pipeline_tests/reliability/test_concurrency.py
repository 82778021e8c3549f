"""Concurrency: exports of the same run at the same time (a sensor-triggered materialization and
a backfill of one partition, two CLI/Exporter processes, several threads) leave exactly one
copy of every row, because every writer of a run holds the run's lock (`warehouse/lock.py`).
The emulator's 8 clients × 500 requests load test lives in emulator/test_faults_http.py."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from run_pipeline.client import Api
from run_pipeline.defs.assets import wandb_run_tables
from run_pipeline.defs.batching import requested_partitions
from run_pipeline.defs.partitions import encode_partition_key, wandb_runs_partitions
from run_pipeline.defs.resources import WandbResource, WarehouseResource
from run_pipeline.defs.sensors import wandb_finished_runs_sensor
from run_pipeline.emulator.sample import generate_run
from run_pipeline.emulator.server import EmulatorServer
from run_pipeline.export import Exporter
from run_pipeline.warehouse import RunKey, Warehouse, WarehouseLockError

from ..conftest import TEST_API_KEY
from . import reconcile as rc
from .digest import explain_difference, warehouse_digest

ENTITY, PROJECT = "demo", "busy"
RUNNING = RunKey(ENTITY, PROJECT, "running1")    # grows between trials; served as live pages
FINISHED = RunKey(ENTITY, PROJECT, "finished")   # what the sensor requests; served as Parquet


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrency") / "dataset"
    generate_run(root / ENTITY / PROJECT / RUNNING.run_id, state="running", steps=12_000, metrics=8, seed=1)
    generate_run(root / ENTITY / PROJECT / FINISHED.run_id, state="finished", steps=12_000, metrics=8, seed=2)
    with EmulatorServer(root, api_key=TEST_API_KEY) as s:
        yield s


def source_steps(server, ref: RunKey) -> list[int]:
    rows = rc.read_jsonl(server.dataset_dir / ref.entity / ref.project / ref.run_id / "history.jsonl")
    return sorted(r["_step"] for r in rows)


def assert_one_copy_of_every_row(root: Path, ref: RunKey, steps: list[int]) -> None:
    """The run's visible history holds each source row once, its metrics once per value, and
    its manifest names exactly the files on disk."""
    key = (ref.entity, ref.project, ref.run_id)
    files = rc.parquet_files(root, "history")[key]
    got = sorted(s for f in files for s in pq.read_table(f, columns=["_step"]).column("_step").to_pylist())
    assert got == steps, f"{len(got)} rows for {len(steps)} source rows"
    metrics = [(s, k) for f in rc.parquet_files(root, "metrics")[key]
               for s, k in zip(*pq.read_table(f, columns=["step", "key"]).to_pydict().values())]
    assert len(metrics) == len(set(metrics))
    state = Warehouse(root).run_state(ref)
    assert state is not None and state.rows == len(steps)
    assert sorted(p.name for p in state.parts) == sorted(f.name for f in files)
    assert len(rc.parquet_files(root, "runs")[key]) == 1


def assert_equals_clean_export(server, root: Path, ref: RunKey, tmp_path: Path) -> None:
    clean = tmp_path / f"clean-{ref.run_id}"
    with Api(api_key=server.api_key, base_url=server.base_url) as api:
        Exporter(api, Warehouse(clean)).export_run(ref, full=True)
    for r in (clean, root):
        Warehouse(r).refresh_catalog()
    a, b = warehouse_digest(root), warehouse_digest(clean)
    assert a == b, explain_difference(root, clean)


def run_threads(targets) -> list[BaseException]:
    """Start callables together (a barrier), wait for all; return what they raised."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def wrap(fn):
        try:
            barrier.wait()
            fn()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(fn,)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return errors


def test_threads_exporting_one_run_at_once_leave_one_copy_of_every_row(server, tmp_path):
    rng = random.Random(7)
    root = tmp_path / "wh"
    for trial in range(12):
        if trial % 4 == 0:
            root = tmp_path / f"wh{trial}"  # from nothing: every writer starts a full export
        else:
            last = server.store.get_run(*RUNNING.path.split("/")).history.last_step
            server.store.append_history(ENTITY, PROJECT, RUNNING.run_id,
                                        [{"_step": last + 1 + i, "train/loss": rng.random()}
                                         for i in range(rng.randint(1, 300))])

        def export(full: bool, root=root):
            with Api(api_key=server.api_key, base_url=server.base_url) as api:
                Exporter(api, Warehouse(root)).export_run(RUNNING, full=full)

        # Two incremental exports (sensor, schedule), one full re-materialization (backfill).
        modes = [False, False, True]
        rng.shuffle(modes)
        errors = run_threads([lambda f=f: export(f) for f in modes])
        assert errors == [], f"trial {trial}: {errors!r}"
        assert_one_copy_of_every_row(root, RUNNING, source_steps(server, RUNNING))
    assert_equals_clean_export(server, root, RUNNING, tmp_path)


DRIVER = """
import sys
from run_pipeline.client import Api
from run_pipeline.export import Exporter
from run_pipeline.warehouse import RunKey, Warehouse
base_url, key, root, full = sys.argv[1:5]
print("ready", flush=True)
sys.stdin.readline()  # the test releases every process at once
with Api(api_key=key, base_url=base_url) as api:
    print(Exporter(api, Warehouse(root)).export_run(RunKey(*sys.argv[5:8]), full=full == "1").describe())
"""


def test_processes_exporting_one_run_at_once_leave_one_copy_of_every_row(server, tmp_path):
    for trial in range(4):
        root = tmp_path / f"wh{trial}"
        procs = [subprocess.Popen([sys.executable, "-c", DRIVER, server.base_url, server.api_key, str(root),
                                   str(int(full)), *RUNNING.path.split("/")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for full in (trial % 2 == 0, False, True)]
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
        assert_one_copy_of_every_row(root, RUNNING, source_steps(server, RUNNING))


def test_a_sensor_run_and_a_backfill_of_one_partition_at_once_leave_one_copy(server, tmp_path):
    """The sensor's RunRequest and a backfill of the same partition, materialized at the same
    time in two threads (each with its own instance, as two run workers would be)."""
    key = encode_partition_key(FINISHED)
    for trial in range(4):
        root = tmp_path / f"wh{trial}"
        resources = {"wandb": WandbResource(base_url=server.base_url, api_key=server.api_key, entity=ENTITY,
                                            projects=[PROJECT]),
                     "warehouse": WarehouseResource(root=str(root))}
        instance = dg.DagsterInstance.ephemeral()
        tick = wandb_finished_runs_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        added = [k for r in tick.dynamic_partitions_requests for k in r.partition_keys]
        request = next(r for r in tick.run_requests if key in requested_partitions(r, added))
        # The sensor batches runs into partition ranges; this test runs the one partition.
        sensor_tags = {k: v for k, v in request.tags.items() if not k.startswith("dagster/")}
        results = {}

        def materialize(name: str, tags: dict, resources=resources):
            with dg.DagsterInstance.ephemeral() as own:  # disposed in the thread that made it
                own.add_dynamic_partitions(wandb_runs_partitions.name, [key])
                results[name] = dg.materialize([wandb_run_tables], partition_key=key, resources=resources,
                                               instance=own, tags=tags, raise_on_error=False)

        errors = run_threads([lambda: materialize("sensor", {**sensor_tags, "trigger": "sensor"}),
                              lambda: materialize("backfill", {"trigger": "backfill"})])
        assert errors == []
        assert all(r.success for r in results.values()), trial
        modes = sorted(mode for r in results.values() for m in r.get_asset_materialization_events()
                       if m.asset_key == dg.AssetKey("wandb_run_history")
                       for mode in m.materialization.metadata["mode"].value)
        assert modes == ["full", "unchanged"]  # the second writer found the first one's commit
        assert_one_copy_of_every_row(root, FINISHED, source_steps(server, FINISHED))
    assert_equals_clean_export(server, root, FINISHED, tmp_path)


def test_a_writer_that_cannot_wait_is_refused_naming_the_run(tmp_path):
    warehouse = Warehouse(tmp_path / "wh")
    held, release = threading.Event(), threading.Event()

    def holder():
        with warehouse.run_lock(RunKey("e", "p'; --", "r1")):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        held.wait(10)
        with pytest.raises(WarehouseLockError, match=r"run e/p'; --/r1: another export of it has held"):
            warehouse.export_run({"entity": "e", "project": "p'; --", "run_id": "r1", "state": "finished"},
                                 history=[], lock_timeout=0.2)
        with warehouse.run_lock(RunKey("e", "p'; --", "r2"), timeout=0.2):  # other runs are not blocked
            pass
    finally:
        release.set()
        t.join()
    with warehouse.run_lock(RunKey("e", "p'; --", "r1"), timeout=1):  # released with its holder
        with warehouse.run_lock(RunKey("e", "p'; --", "r1"), timeout=1):  # and re-entrant in one thread
            pass
