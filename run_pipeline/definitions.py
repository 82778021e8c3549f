"""The one Definitions object (`dagster dev -w workspace.yaml`). Configuration comes from the
environment here and nowhere else below the CLI; see .env.example."""

from __future__ import annotations

import os

import dagster as dg

from run_pipeline.defs.assets import wandb_catalog, wandb_run_tables
from run_pipeline.defs.jobs import wandb_catalog_job, wandb_export_job
from run_pipeline.defs.resources import WandbResource, WarehouseResource
from run_pipeline.defs.schedules import build_nightly_schedule
from run_pipeline.defs.sensors import (
    wandb_catalog_automation_sensor,
    wandb_finished_runs_sensor,
    wandb_runs_discovery_sensor,
)
from run_pipeline.settings import DEFAULT_WAREHOUSE, NIGHTLY_CRON


def _env_list(name: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]


defs = dg.Definitions(
    assets=[wandb_run_tables, wandb_catalog],
    jobs=[wandb_export_job, wandb_catalog_job],
    sensors=[wandb_runs_discovery_sensor, wandb_finished_runs_sensor, wandb_catalog_automation_sensor],
    schedules=[build_nightly_schedule(os.environ.get("RUN_PIPELINE_NIGHTLY_CRON") or NIGHTLY_CRON,
                                      os.environ.get("RUN_PIPELINE_SCHEDULE_TIMEZONE") or "UTC")],
    resources={
        "wandb": WandbResource(
            base_url=os.environ.get("WANDB_BASE_URL") or None,
            # EnvVar keeps the key out of the run config shown in the UI and the event log.
            api_key=dg.EnvVar("WANDB_API_KEY") if os.environ.get("WANDB_API_KEY") else None,
            entity=os.environ.get("WANDB_ENTITY") or None,
            projects=_env_list("WANDB_PROJECT"),
            emulator_dataset=os.environ.get("RUN_PIPELINE_EMULATOR_DATASET") or None,
        ),
        "warehouse": WarehouseResource(root=os.environ.get("RUN_PIPELINE_WAREHOUSE") or DEFAULT_WAREHOUSE),
    },
)
