"""`wandb_finished_runs_sensor`: requests an export for each run that reached a terminal state
since the last tick. The cursor is a heartbeat watermark per project; run keys make repeats
harmless, and each tick handles a bounded number of runs."""


import json

import dagster as dg

from run_pipeline.export import discover_runs
from run_pipeline.settings import SENSOR_MAX_RUNS_PER_TICK, TERMINAL_STATES

from .jobs import wandb_catalog_job, wandb_export_job
from .partitions import wandb_runs_partitions
from .resources import WandbResource


@dg.sensor(
    jobs=[wandb_export_job, wandb_catalog_job],
    minimum_interval_seconds=30,
    description="Exports each W&B run once it finishes (finished, crashed, failed, killed).",
)
def wandb_finished_runs_sensor(context: dg.SensorEvaluationContext, wandb: WandbResource):
    cursor = json.loads(context.cursor) if context.cursor else {}
    found = []
    with wandb.get_api() as api:
        entity, projects = wandb.target(api)
        for project in projects:
            since = cursor.get(f"{entity}/{project}")
            batch = discover_runs(api, entity, project, states=TERMINAL_STATES, since=since,
                                  limit=SENSOR_MAX_RUNS_PER_TICK - len(found))
            found.extend(batch)
            if batch:
                cursor[f"{entity}/{project}"] = max(r.heartbeat_at for r in batch)
            if len(found) >= SENSOR_MAX_RUNS_PER_TICK:
                break
    if not found:
        return dg.SensorResult(skip_reason="no run finished since the last tick", cursor=json.dumps(cursor))
    existing = set(context.instance.get_dynamic_partitions(wandb_runs_partitions.name))
    new_keys = sorted({r.ref.partition_key for r in found} - existing)
    requests = [dg.RunRequest(partition_key=r.ref.partition_key, job_name=wandb_export_job.name,
                              run_key=f"{r.ref.partition_key}@{r.heartbeat_at}", tags={"wandb/state": r.state})
                for r in found]
    context.log.info(f"{len(found)} finished runs, {len(new_keys)} new partitions")
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(cursor),
        dynamic_partitions_requests=[wandb_runs_partitions.build_add_request(new_keys)] if new_keys else [],
    )


# Running by default: the DuckDB views follow the Parquet without anyone turning it on.
wandb_catalog_automation_sensor = dg.AutomationConditionSensorDefinition(
    "wandb_catalog_automation_sensor",
    target=dg.AssetSelection.assets("wandb_catalog"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Refreshes wandb_catalog (the DuckDB views) after run partitions are exported.",
)
