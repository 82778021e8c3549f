"""The one Definitions object (`dagster dev -w workspace.yaml`). Configuration comes from the
environment here and nowhere else below the CLI; see .env.example."""

from __future__ import annotations

import os

import dagster as dg

from run_pipeline.defs.embedded import wandb_resource
from run_pipeline.defs.factory import ExportOptions, build_definitions
from run_pipeline.defs.resources import WarehouseResource
from run_pipeline.settings import (
    DEFAULT_WAREHOUSE,
    NIGHTLY_CRON,
    SENSOR_RUNS_PER_DAGSTER_RUN,
)


def _env_list(name: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]


defs = build_definitions(
    # No WANDB_BASE_URL: the embedded emulator over the built-in sample, bound here, at load time.
    wandb_resource(
        base_url=os.environ.get("WANDB_BASE_URL") or None,
        # EnvVar keeps the key out of the run config shown in the UI and the event log.
        api_key=dg.EnvVar("WANDB_API_KEY") if os.environ.get("WANDB_API_KEY") else None,
        entity=os.environ.get("WANDB_ENTITY") or None,
        projects=_env_list("WANDB_PROJECT"),
        emulator_dataset=os.environ.get("RUN_PIPELINE_EMULATOR_DATASET") or None,
    ),
    WarehouseResource(root=os.environ.get("RUN_PIPELINE_WAREHOUSE") or DEFAULT_WAREHOUSE),
    ExportOptions(nightly_cron=os.environ.get("RUN_PIPELINE_NIGHTLY_CRON") or NIGHTLY_CRON,
                  timezone=os.environ.get("RUN_PIPELINE_SCHEDULE_TIMEZONE") or "UTC",
                  runs_per_dagster_run=int(os.environ.get("RUN_PIPELINE_RUNS_PER_DAGSTER_RUN")
                                           or SENSOR_RUNS_PER_DAGSTER_RUN)),
)
