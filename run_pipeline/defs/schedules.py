"""`wandb_nightly_schedule`: every night, export every run whose heartbeat moved since the
previous night (running runs too: exports are incremental, so only new steps are fetched)."""


from datetime import timedelta

import dagster as dg

from run_pipeline.export import discover_runs
from run_pipeline.settings import NIGHTLY_CRON

from .jobs import wandb_export_job
from .partitions import wandb_runs_partitions
from .resources import WandbResource


@dg.schedule(job=wandb_export_job, cron_schedule=NIGHTLY_CRON, execution_timezone="UTC",
             description="Nightly incremental export of every run updated in the last day.")
def wandb_nightly_schedule(context: dg.ScheduleEvaluationContext, wandb: WandbResource):
    since = (context.scheduled_execution_time - timedelta(days=1, hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    found = []
    with wandb.get_api() as api:
        entity, projects = wandb.target(api)
        for project in projects:
            found.extend(discover_runs(api, entity, project, since=since))
    if not found:
        return dg.SkipReason(f"no run updated since {since}")
    keys = sorted({r.ref.partition_key for r in found})
    existing = set(context.instance.get_dynamic_partitions(wandb_runs_partitions.name))
    missing = [k for k in keys if k not in existing]
    if missing:
        # Schedules cannot return partition requests; the partitions must exist before the runs.
        context.instance.add_dynamic_partitions(wandb_runs_partitions.name, missing)
    tick = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [dg.RunRequest(partition_key=k, run_key=f"nightly-{tick}-{k}") for k in keys]
