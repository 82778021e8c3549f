"""Sensors. `wandb_runs_discovery_sensor` (running by default) registers every run of the
configured projects as a partition, so a fresh deployment can backfill any run from the UI.
`wandb_finished_runs_sensor` requests the export of the runs that reached a terminal state,
batched into Dagster runs over partition ranges (`batching.py`).
Both page the server with a `heartbeatAt > watermark - look-back` filter (W&B honours it), so a
tick lists what changed, not whole projects; the look-back absorbs listings that lag behind
state changes. Run keys make a repeated find harmless."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import dagster as dg

from run_pipeline.client import WandbNotFoundError
from run_pipeline.discovery import FoundRun, iter_runs
from run_pipeline.settings import (
    DISCOVERY_MAX_PARTITIONS_PER_TICK,
    SENSOR_LOOKBACK_SECONDS,
    SENSOR_MAX_RUNS_PER_TICK,
    SENSOR_MAX_WATCHED_RUNS,
    SENSOR_RUNS_PER_DAGSTER_RUN,
    TERMINAL_STATES,
)

from .batching import batch_requests
from .jobs import wandb_catalog_job, wandb_export_job
from .partitions import encode_partition_key, wandb_runs_partitions
from .resources import WandbResource


def looked_back(watermark: str | None, seconds: float = SENSOR_LOOKBACK_SECONDS) -> str | None:
    """The heartbeat a listing starts after: the watermark minus the look-back (server text)."""
    if not watermark:
        return None
    try:
        moment = datetime.fromisoformat(watermark.replace("Z", "+00:00"))
    except ValueError:
        return watermark
    return (moment.replace(tzinfo=None) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def _project_cursor(cursor: dict, project_key: str) -> dict:
    value = cursor.get(project_key)
    if isinstance(value, str):  # the earlier cursor: a bare heartbeat watermark
        return {"after": value, "running": [], "recent": {}}
    value = dict(value or {})
    return {"after": value.get("after"), "running": list(value.get("running") or []),
            "recent": dict(value.get("recent") or {})}


def run_key(found: FoundRun) -> str:
    """Unique per state and heartbeat: a run that crashes without its heartbeat moving, or that
    is resumed and finishes again, is exported again; a repeated find is not."""
    return f"{encode_partition_key(found.key)}@{found.state}@{found.heartbeat_at}"


def finished_in_project(api, entity: str, project: str, state: dict, room: int) -> list[FoundRun]:
    """Runs of one project that reached a terminal state since the cursor `state` (updated in
    place): those whose heartbeat passed the watermark (less the look-back), and those seen
    running before that are no longer running (asked for by name). At most `room` new ones;
    the watermark only moves past what was taken, so the rest come on the next tick."""
    recent: dict[str, str] = state["recent"]
    found: list[FoundRun] = []
    running: set[str] = set()
    watermark = state.get("after") or ""
    for run in iter_runs(api, entity, project, after=looked_back(state.get("after"))):
        if run.state not in TERMINAL_STATES:
            running.add(run.key.run_id)
        elif run_key(run) not in recent:
            if len(found) >= room:
                break
            found.append(run)
            recent[run_key(run)] = run.heartbeat_at
        watermark = max(watermark, run.heartbeat_at)
    watched = [r for r in state["running"] if r not in running]
    if watched:
        # A state change without a heartbeat (the server's crash detection) moves no watermark.
        for run in iter_runs(api, entity, project, run_ids=watched[:SENSOR_MAX_WATCHED_RUNS]):
            if run.state not in TERMINAL_STATES:
                running.add(run.key.run_id)
            elif run_key(run) not in recent:
                found.append(run)
                recent[run_key(run)] = run.heartbeat_at
    state["after"] = watermark or None
    state["running"] = sorted(running)[:SENSOR_MAX_WATCHED_RUNS]
    horizon = looked_back(watermark) or ""
    state["recent"] = {k: hb for k, hb in recent.items() if hb >= horizon}
    return found


def build_finished_runs_sensor(export_job: dg.UnresolvedAssetJobDefinition = wandb_export_job,
                               catalog_job: dg.UnresolvedAssetJobDefinition | None = wandb_catalog_job, *,
                               interval: int = 30, runs_per_dagster_run: int = SENSOR_RUNS_PER_DAGSTER_RUN,
                               default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
                               ) -> dg.SensorDefinition:
    """The finished-runs sensor of `export_job`; the runs a tick finds go into Dagster runs of
    up to `runs_per_dagster_run` W&B runs each (see `batching.py`)."""

    @dg.sensor(
        name="wandb_finished_runs_sensor",
        jobs=[export_job, *([catalog_job] if catalog_job else [])],
        minimum_interval_seconds=interval,
        default_status=default_status,
        description="Exports each W&B run once it finishes (finished, crashed, failed, killed, preempted), also "
                    "when the server marks it crashed without its heartbeat moving; up to "
                    f"{runs_per_dagster_run} W&B runs per Dagster run.",
    )
    def wandb_finished_runs_sensor(context: dg.SensorEvaluationContext, wandb: WandbResource):
        cursor = json.loads(context.cursor) if context.cursor else {}
        found: list[FoundRun] = []
        with wandb.get_api() as api:
            for entity, project in wandb.targets(api):
                room = SENSOR_MAX_RUNS_PER_TICK - len(found)
                if room <= 0:
                    break
                key = f"{entity}/{project}"
                state = _project_cursor(cursor, key)
                try:
                    found.extend(finished_in_project(api, entity, project, state, room))
                except WandbNotFoundError:
                    context.log.warning(f"project {key} not found; skipped")
                    continue
                cursor[key] = state
        if not found:
            return dg.SensorResult(skip_reason="no run finished since the last tick", cursor=json.dumps(cursor))
        order = list(context.instance.get_dynamic_partitions(wandb_runs_partitions.name))
        existing = set(order)
        by_key = {encode_partition_key(r.key): r for r in found}
        new_keys = sorted(set(by_key) - existing)
        requests = [
            req.with_replaced_attrs(tags={**req.tags, "wandb/state": by_key[req.partition_key].state})
            if req.partition_key else req
            for req in batch_requests({k: run_key(r) for k, r in by_key.items()}, order + new_keys,
                                      runs_per_dagster_run, job_name=export_job.name)]
        context.log.info(f"{len(found)} finished runs in {len(requests)} Dagster runs, {len(new_keys)} new partitions")
        return dg.SensorResult(
            run_requests=requests,
            cursor=json.dumps(cursor),
            dynamic_partitions_requests=[wandb_runs_partitions.build_add_request(new_keys)] if new_keys else [],
        )

    return wandb_finished_runs_sensor


def build_discovery_sensor(interval: int = 60) -> dg.SensorDefinition:
    @dg.sensor(
        name="wandb_runs_discovery_sensor",
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Registers every run of the configured projects (running ones too) as a partition of the run "
                    "assets, so any run can be backfilled from the UI. Requests no export.",
    )
    def wandb_runs_discovery_sensor(context: dg.SensorEvaluationContext, wandb: WandbResource):
        return discover(context, wandb)

    return wandb_runs_discovery_sensor


def discover(context: dg.SensorEvaluationContext, wandb: WandbResource) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    existing = set(context.instance.get_dynamic_partitions(wandb_runs_partitions.name))
    new_keys: list[str] = []
    with wandb.get_api() as api:
        for entity, project in wandb.targets(api):
            key = f"{entity}/{project}"
            watermark = cursor.get(key) or ""
            try:
                for run in iter_runs(api, entity, project, after=looked_back(cursor.get(key))):
                    partition = encode_partition_key(run.key)
                    if partition not in existing:
                        if len(new_keys) >= DISCOVERY_MAX_PARTITIONS_PER_TICK:
                            break
                        new_keys.append(partition)
                        existing.add(partition)
                    watermark = max(watermark, run.heartbeat_at)
            except WandbNotFoundError:
                context.log.warning(f"project {key} not found; skipped")
                continue
            cursor[key] = watermark or None
            if len(new_keys) >= DISCOVERY_MAX_PARTITIONS_PER_TICK:
                break
    if not new_keys:
        return dg.SensorResult(skip_reason="no new run", cursor=json.dumps(cursor))
    context.log.info(f"{len(new_keys)} new runs registered as partitions")
    return dg.SensorResult(cursor=json.dumps(cursor),
                           dynamic_partitions_requests=[wandb_runs_partitions.build_add_request(new_keys)])


def build_catalog_automation_sensor(target: dg.AssetsDefinition | None = None,
                                    interval: int = 30) -> dg.AutomationConditionSensorDefinition:
    # Running by default: the DuckDB views follow the Parquet without anyone turning it on.
    return dg.AutomationConditionSensorDefinition(
        "wandb_catalog_automation_sensor",
        target=dg.AssetSelection.assets(target if target is not None else "wandb_catalog"),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=interval,
        description="Refreshes wandb_catalog (the DuckDB views) after run partitions are exported.",
    )


wandb_finished_runs_sensor = build_finished_runs_sensor()
wandb_runs_discovery_sensor = build_discovery_sensor()
wandb_catalog_automation_sensor = build_catalog_automation_sensor()
