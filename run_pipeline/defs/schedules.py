"""`wandb_nightly_schedule`: every night, export every run whose state or heartbeat changed
since its last export (running runs too: exports are incremental, so only new steps are
fetched). Comparing with the warehouse, not with the clock, means a missed night loses nothing."""

from __future__ import annotations

import dagster as dg

from run_pipeline.discovery import FoundRun, changed_runs

from .jobs import wandb_export_job
from .partitions import encode_partition_key, wandb_runs_partitions
from .resources import WandbResource, WarehouseResource


def build_nightly_schedule(cron: str, timezone: str, job: dg.UnresolvedAssetJobDefinition = wandb_export_job,
                           ) -> dg.ScheduleDefinition:
    @dg.schedule(name="wandb_nightly_schedule", job=job, cron_schedule=cron,
                 execution_timezone=timezone,
                 description=f"Incremental export of every run changed since its last export ({cron}, {timezone}).")
    def wandb_nightly_schedule(context: dg.ScheduleEvaluationContext, wandb: WandbResource,
                               warehouse: WarehouseResource):
        found = []
        with wandb.get_api() as api:
            wh = warehouse.get_warehouse()
            for entity, project in wandb.targets(api):
                found.extend(changed_runs(api, wh, entity, project))
        if not found:
            return dg.SkipReason("every run is exported up to date")
        # A bare RunKey is an exported run the listing no longer holds: its export checks with the
        # server and marks it deleted.
        states = {encode_partition_key(r.key if isinstance(r, FoundRun) else r):
                  r.state if isinstance(r, FoundRun) else "unlisted" for r in found}
        keys = sorted(states)
        existing = set(context.instance.get_dynamic_partitions(wandb_runs_partitions.name))
        missing = [k for k in keys if k not in existing]
        if missing:
            # Schedules cannot return partition requests; the partitions must exist before the runs.
            context.instance.add_dynamic_partitions(wandb_runs_partitions.name, missing)
        tick = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
        return [dg.RunRequest(partition_key=key, run_key=f"nightly-{tick}-{key}", tags={"wandb/state": state})
                for key, state in states.items()]

    return wandb_nightly_schedule
