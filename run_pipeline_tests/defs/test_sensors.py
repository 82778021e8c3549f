"""The sensors against W&B's real behaviours: a run marked crashed without its heartbeat moving,
a listing that shows a finished run late, partitions registered before any export, and the
server-side heartbeat filter that keeps a quiet tick from listing whole projects."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from run_pipeline.defs.batching import requested_partitions
from run_pipeline.defs.partitions import decode_partition_key, wandb_runs_partitions
from run_pipeline.defs.resources import WandbResource
from run_pipeline.defs.sensors import looked_back, wandb_finished_runs_sensor, wandb_runs_discovery_sensor
from run_pipeline.settings import SENSOR_LOOKBACK_SECONDS, TERMINAL_STATES

PROJECT = "image-classification"


@pytest.fixture
def wandb(emulator):
    return WandbResource(base_url=emulator.base_url, api_key=emulator.api_key, entity="demo", projects=[PROJECT])


def tick(sensor, instance, wandb, cursor=None):
    result = sensor(dg.build_sensor_context(instance=instance, resources={"wandb": wandb}, cursor=cursor))
    result.order = order_after(instance, result)
    return result


def order_after(instance, result) -> list[str]:
    """Every partition key in Dagster's order once the tick's partition requests are applied."""
    added = [k for r in (result.dynamic_partitions_requests or []) for k in r.partition_keys]
    return list(instance.get_dynamic_partitions(wandb_runs_partitions.name)) + added


def run_ids(result) -> list[str]:
    """The W&B runs the tick's run requests export (a batch is a partition range)."""
    return sorted(decode_partition_key(k).run_id for r in result.run_requests
                  for k in requested_partitions(r, result.order))


def runs_by_state(emulator, states) -> list[str]:
    return sorted(r.run_id for r in emulator.store.project_runs("demo", PROJECT) if r.meta["state"] in states)


def after_index_lag(emulator) -> None:
    """Wait until a lagging search index (W&B's filtered listings) has seen the latest changes."""
    if "lagging-filters" in emulator.profiles:
        time.sleep(emulator.store.profiles.options["filter_lag_seconds"] + 0.5)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_run_marked_crashed_without_a_heartbeat_is_exported(emulator, wandb):
    instance = dg.DagsterInstance.ephemeral()
    running = runs_by_state(emulator, ("running",))
    # A run that stopped beating long ago (its process died): only its name can find it again.
    oldest = min(r.heartbeat_at for r in emulator.store.project_runs("demo", PROJECT))
    emulator.store.touch_heartbeat("demo", PROJECT, running[0], oldest - timedelta(days=1))
    first = tick(wandb_finished_runs_sensor, instance, wandb)
    assert run_ids(first) == runs_by_state(emulator, TERMINAL_STATES)
    assert json.loads(first.cursor)[f"demo/{PROJECT}"]["running"] == running
    # The server's watchdog marks the run crashed; its heartbeat stays where it was, far
    # behind the sensor's watermark.
    victim = emulator.store.get_run("demo", PROJECT, running[0])
    emulator.store.update_run(victim, state="crashed")
    second = tick(wandb_finished_runs_sensor, instance, wandb, first.cursor)
    assert run_ids(second) == [running[0]]
    assert second.run_requests[0].tags["wandb/state"] == "crashed"
    assert running[0] not in json.loads(second.cursor)[f"demo/{PROJECT}"]["running"]
    third = tick(wandb_finished_runs_sensor, instance, wandb, second.cursor)
    assert not third.run_requests  # found once


def test_a_finished_run_the_listing_showed_late_is_still_found(emulator, wandb):
    instance = dg.DagsterInstance.ephemeral()
    first = tick(wandb_finished_runs_sensor, instance, wandb)
    watermark = json.loads(first.cursor)[f"demo/{PROJECT}"]["after"]
    # A run whose heartbeat lies before the watermark, inside the look-back: the listing of
    # the first tick did not show it yet (W&B's filtered listings lag behind).
    moment = datetime.fromisoformat(watermark.replace("Z", "+00:00")) - timedelta(seconds=SENSOR_LOOKBACK_SECONDS // 2)
    late = emulator.store.create_run("demo", PROJECT, "late0001",
                                     {"state": "finished", "heartbeat_at": iso(moment), "created_at": iso(moment)})
    assert late.heartbeat_at.replace(tzinfo=None) < datetime.fromisoformat(watermark.replace("Z", "")).replace(tzinfo=None)
    after_index_lag(emulator)
    second = tick(wandb_finished_runs_sensor, instance, wandb, first.cursor)
    assert run_ids(second) == ["late0001"]
    # Beyond the look-back it would be lost; the cursor's watermark never moves backwards.
    assert json.loads(second.cursor)[f"demo/{PROJECT}"]["after"] == watermark


def test_a_quiet_tick_lists_no_run(emulator, wandb):
    instance = dg.DagsterInstance.ephemeral()
    first = tick(wandb_finished_runs_sensor, instance, wandb)
    before = emulator.app.requests_served
    second = tick(wandb_finished_runs_sensor, instance, wandb, first.cursor)
    assert isinstance(second, dg.SensorResult) and not second.run_requests
    # One filtered listing page per project, plus the watched runs by name (a server that
    # interleaves empty pages adds one request per listing).
    assert emulator.app.requests_served - before <= (6 if "empty-pages" in emulator.profiles else 3)


def test_looked_back_subtracts_the_look_back_from_server_time_text():
    assert looked_back("2026-11-01T00:10:00", 600) == "2026-11-01T00:00:00"
    assert looked_back("2026-11-01T00:10:00Z", 60) == "2026-11-01T00:09:00"
    assert looked_back(None) is None


def test_discovery_registers_every_run_before_any_export(emulator, wandb):
    instance = dg.DagsterInstance.ephemeral()
    first = tick(wandb_runs_discovery_sensor, instance, wandb)
    every = sorted(r.run_id for r in emulator.store.project_runs("demo", PROJECT))
    assert not first.run_requests
    keys = first.dynamic_partitions_requests[0].partition_keys
    assert sorted(decode_partition_key(k).run_id for k in keys) == every  # running ones too
    instance.add_dynamic_partitions(wandb_runs_partitions.name, list(keys))
    second = tick(wandb_runs_discovery_sensor, instance, wandb, first.cursor)
    assert not second.dynamic_partitions_requests
    emulator.store.create_run("demo", PROJECT, "new00001")
    after_index_lag(emulator)
    third = tick(wandb_runs_discovery_sensor, instance, wandb, second.cursor)
    assert [decode_partition_key(k).run_id for k in third.dynamic_partitions_requests[0].partition_keys] \
        == ["new00001"]


def test_the_discovery_sensor_runs_by_default():
    assert wandb_runs_discovery_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert wandb_finished_runs_sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_the_schedule_marks_a_deleted_run_and_unmarks_it_once_restored(emulator, wandb, tmp_path):
    from run_pipeline.defs.assets import wandb_run_tables
    from run_pipeline.defs.resources import WarehouseResource
    from run_pipeline.defs.schedules import build_nightly_schedule
    from run_pipeline.settings import NIGHTLY_CRON
    from run_pipeline.warehouse import RunKey, Warehouse

    resources = {"wandb": wandb, "warehouse": WarehouseResource(root=str(tmp_path / "wh"))}
    schedule = build_nightly_schedule(NIGHTLY_CRON, "UTC")
    with dg.instance_for_test() as instance:

        def tick() -> list:
            with dg.build_schedule_context(instance=instance, resources=resources,
                                           scheduled_execution_time=datetime.now(timezone.utc)) as ctx:
                result = schedule(ctx)
                return [] if isinstance(result, dg.SkipReason) else list(result)

        def materialize(requests) -> None:
            for r in requests:  # the schedule requests one partition per run
                dg.materialize([wandb_run_tables], partition_key=r.partition_key, resources=resources,
                               instance=instance)

        materialize(tick())
        assert tick() == []
        victim = runs_by_state(emulator, ("finished",))[0]
        emulator.store.delete_run(emulator.store.require_run("demo", PROJECT, victim))
        gone = tick()
        assert [decode_partition_key(k).run_id for r in gone for k in [r.partition_key]] == [victim]
        materialize(gone)  # the export finds it gone: recorded, not failed
        wh = Warehouse(tmp_path / "wh")
        assert wh.deleted_at(RunKey("demo", PROJECT, victim)) is not None
        assert tick() == []  # marked once; no request every night
        emulator.store.restore_run("demo", PROJECT, victim)
        back = tick()
        assert [decode_partition_key(k).run_id for r in back for k in [r.partition_key]] == [victim]
        materialize(back)
        assert wh.deleted_at(RunKey("demo", PROJECT, victim)) is None
