"""The one Definitions object (`dagster dev -w workspace.yaml`). Configuration comes from the
environment here and nowhere else below the CLI; see .env.example. With no `WANDB_BASE_URL`
the W&B resource is bound here, at load time, to an in-process emulator over the built-in
sample dataset, so `dagster dev` works with no account, no credentials and no network: the one
place outside the CLI's demo and emulator commands that uses the emulator."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field

from run_pipeline.client import Api
from run_pipeline.defs.factory import ExportOptions, build_definitions
from run_pipeline.defs.resources import WandbResource, WarehouseResource
from run_pipeline.emulator.embedded import embedded_emulator
from run_pipeline.settings import (
    DEFAULT_WAREHOUSE,
    NIGHTLY_CRON,
    SENSOR_RUNS_PER_DAGSTER_RUN,
)


class EmbeddedWandbResource(WandbResource):
    """Runs from the embedded emulator (started per use, on a free loopback port)."""

    emulator_dataset: str | None = Field(default=None, description="dataset directory of the embedded emulator; "
                                                                    "unset: the built-in sample in the temp dir")

    @contextmanager
    def get_api(self) -> Iterator[Api]:
        with embedded_emulator(self.emulator_dataset) as server:
            with Api(api_key=server.api_key, base_url=server.base_url, timeout=self.timeout) as api:
                yield api


def _wandb_resource(*, base_url: str | None, emulator_dataset: str | None, **fields) -> WandbResource:
    """The real W&B resource when a URL is configured, else the embedded one."""
    if base_url:
        return WandbResource(base_url=base_url, **fields)
    return EmbeddedWandbResource(emulator_dataset=emulator_dataset, **fields)


def _env_list(name: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]


defs = build_definitions(
    # No WANDB_BASE_URL: the embedded emulator over the built-in sample, bound here, at load time.
    _wandb_resource(
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
