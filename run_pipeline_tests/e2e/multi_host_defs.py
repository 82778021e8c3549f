"""The code location of one "host" in the multi-host test: the deployment the factory builds,
pointed at the shared emulator and the shared s3:// warehouse. Each host prefixes its asset
keys with its name (two code locations may not define the same asset); both share the
instance's `wandb_runs` partitions, so they export the same W&B runs."""

import os

import dagster as dg

from run_pipeline.defs.factory import ExportOptions, build_definitions
from run_pipeline.defs.resources import WandbResource, WarehouseResource

HOST = os.environ["RUN_PIPELINE_TEST_HOST"]

defs = build_definitions(
    WandbResource(base_url=os.environ["WANDB_BASE_URL"], api_key=dg.EnvVar("WANDB_API_KEY"), entity="demo",
                  projects=os.environ["WANDB_PROJECT"].split(",")),
    WarehouseResource(root=os.environ["RUN_PIPELINE_WAREHOUSE"]),
    ExportOptions(sensor_interval=5, runs_per_dagster_run=int(os.environ["RUN_PIPELINE_TEST_BATCH"]),
                  finished_runs_sensor_status=dg.DefaultSensorStatus.RUNNING, catalog_automation=None),
    spec_for=lambda table, spec: spec.replace_attributes(key=spec.key.with_prefix(HOST)),
)
