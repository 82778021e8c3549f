"""End to end under `dagster dev` (webserver + daemon) against the emulator: the sensor exports a
run that finishes during the test, a backfill launched through GraphQL re-exports every run, the
catalog refreshes through its eager automation condition, and DuckDB holds the dataset's rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from run_pipeline.defs.partitions import encode_partition_key
from run_pipeline.emulator.sample import generate
from run_pipeline.emulator.server import EmulatorServer
from run_pipeline.warehouse import RunKey

from .dagster_dev import DagsterDev, dagster_dev, pipeline_env

pytestmark = pytest.mark.slow

ENTITY, PROJECT = "demo", "image-classification"
EXPORT_ASSETS = ["wandb_runs", "wandb_run_config", "wandb_run_summary", "wandb_run_history",
                 "wandb_run_system_metrics"]
SENSOR = "wandb_finished_runs_sensor"
# The definitions' own automation sensor for wandb_catalog; it runs by default.
AUTOMATION_SENSOR = "wandb_catalog_automation_sensor"
RUN_DONE = {"SUCCESS", "FAILURE", "CANCELED"}
RUN_ACTIVE = ["QUEUED", "NOT_STARTED", "MANAGED", "STARTING", "STARTED", "CANCELING"]
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def dataset_runs(dataset: Path) -> dict[str, dict]:
    """run_id → {"state", "history_rows"} as the emulator's files hold them right now."""
    out = {}
    for run_dir in sorted((dataset / ENTITY / PROJECT).iterdir()):
        meta = json.loads((run_dir / "run.json").read_text())
        with open(run_dir / "history.jsonl", "rb") as fh:
            rows = sum(1 for line in fh if line.strip())
        out[run_dir.name] = {"state": meta["state"], "history_rows": rows}
    return out


def key(run_id: str) -> str:
    return encode_partition_key(RunKey(ENTITY, PROJECT, run_id))


def wait_runs_succeed(dev: DagsterDev, what: str, run_filter: dict, expected: int, timeout: float) -> list[dict]:
    """Wait until `expected` runs match the filter and all are done; fail on a failed run."""
    def probe():
        runs = dev.runs(**run_filter)
        failed = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
        assert not failed, f"{what}: runs failed: {failed}\n{dev.log_tail()}"
        return runs if len(runs) >= expected and all(r["status"] in RUN_DONE for r in runs) else None

    return dev.wait_until(what, probe, timeout, interval=2)


@pytest.fixture
def small_dataset(tmp_path) -> Path:
    # One project of six runs: two finished, one each running, crashed, failed and killed.
    summary = generate(tmp_path / "dataset", entity=ENTITY, projects=1, runs=6)
    assert summary.projects == [PROJECT]
    return tmp_path / "dataset"


def test_sensor_backfill_and_catalog_under_dagster_dev(small_dataset, tmp_path):
    warehouse = tmp_path / "wh"
    before = dataset_runs(small_dataset)
    running = [rid for rid, r in before.items() if r["state"] == "running"]
    terminal = [rid for rid, r in before.items() if r["state"] != "running"]
    assert len(running) == 1 and len(terminal) == 5, before

    with EmulatorServer(small_dataset, api_key="e2e" + "5" * 37) as emulator, \
            dagster_dev(tmp_path, pipeline_env(base_url=emulator.base_url, api_key=emulator.api_key,
                                               entity=ENTITY, projects=PROJECT, warehouse=warehouse)) as dev:
        # What a user does first in the UI: turn on the sensor (catalog automation runs already).
        dev.start_sensor(SENSOR)

        # First tick: every run already in a terminal state gets a partition and an export, in
        # batched Dagster runs (partition ranges of up to 25 runs).
        def first_tick():
            done = [t for t in dev.sensor_ticks(SENSOR) if t["status"] != "STARTED"]
            return done[-1] if done else None

        tick = dev.wait_until("the sensor's first tick", first_tick, timeout=60)
        assert tick["status"] == "SUCCESS", tick
        assert 0 < len(tick["runIds"]) < len(terminal), tick

        # A run finishes while the pipeline is live; its heartbeat must pass the sensor's cursor
        # even if the sample's fixed clock is ahead of this machine's.
        (run_id,) = running
        emulator.store.set_state(ENTITY, PROJECT, run_id, "finished")
        latest = max(emulator.store.get_run(ENTITY, PROJECT, rid).heartbeat_at for rid in before)
        emulator.store.touch_heartbeat(ENTITY, PROJECT, run_id, max(datetime.now(UTC), latest + timedelta(seconds=1)))

        wait_runs_succeed(dev, "the sensor's runs of the first tick", {"runIds": tick["runIds"]},
                          len(tick["runIds"]), timeout=150)
        wait_runs_succeed(dev, f"the sensor's run for {key(run_id)}",
                          {"tags": [{"key": "dagster/partition", "value": key(run_id)}]}, 1, timeout=120)

        # A backfill over every run partition, launched the way the UI launches one.
        partitions = sorted(key(rid) for rid in before)
        backfill_id = dev.launch_backfill(EXPORT_ASSETS, partitions)
        backfill = dev.wait_until("the backfill to finish",
                                  lambda: (b := dev.backfill(backfill_id))["status"] in BACKFILL_DONE and b,
                                  timeout=150, interval=2)
        assert backfill["status"] == "COMPLETED_SUCCESS", f"{backfill}\n{dev.log_tail()}"
        assert sorted(backfill["partitionNames"]) == partitions
        assert backfill["runs"] and all(r["status"] == "SUCCESS" for r in backfill["runs"]), backfill
        # BackfillPolicy.multi_run(25) groups the partitions (a range over the dynamic partitions)
        # into fewer runs than partitions, and every asset still records every partition.
        assert len(backfill["runs"]) < len(partitions), backfill["runs"]
        materialized = {(m["assetKey"]["path"][-1], m["partition"])
                        for r in backfill["runs"] for m in r["assetMaterializations"]}
        assert materialized == {(a, p) for a in EXPORT_ASSETS for p in partitions}

        # The eager catalog refreshes by itself once the backfill's materializations land.
        def catalog_after_backfill():
            latest_catalog = dev.latest_materialization("wandb_catalog")
            fresh = latest_catalog and float(latest_catalog["timestamp"]) / 1000 > backfill["endTimestamp"]
            return fresh and not dev.runs(statuses=RUN_ACTIVE)

        dev.wait_until("wandb_catalog to refresh after the backfill", catalog_after_backfill, timeout=120, interval=2)
        assert dev.sensor_ticks(AUTOMATION_SENSOR), "the catalog automation sensor never ticked"

    expected = dataset_runs(small_dataset)
    assert expected[run_id]["state"] == "finished"
    with duckdb.connect(str(warehouse / "warehouse.duckdb"), read_only=True) as con:
        history = dict(con.sql("select run_id, count(*) from history where entity = ? and project = ? group by 1",
                               params=[ENTITY, PROJECT]).fetchall())
        states = dict(con.sql("select run_id, state from runs").fetchall())
    assert history == {rid: r["history_rows"] for rid, r in expected.items()}
    assert states == {rid: r["state"] for rid, r in expected.items()}
