"""One factory for the whole deployment: `definitions.py` (environment variables) and the
`WandbExportComponent` (a `defs.yaml`) both build their Definitions here."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import dagster as dg

from run_pipeline.settings import NIGHTLY_CRON, SENSOR_RUNS_PER_DAGSTER_RUN, WANDB_POOL

from .assets import (
    CATALOG_AUTOMATION,
    GROUP,
    build_catalog,
    build_run_tables,
    default_run_table_specs,
)
from .jobs import build_catalog_job, build_export_job
from .resources import WandbResource, WarehouseResource
from .schedules import build_nightly_schedule
from .sensors import (
    build_catalog_automation_sensor,
    build_discovery_sensor,
    build_finished_runs_sensor,
)


@dataclass(frozen=True)
class ExportOptions:
    """How the deployment's assets, sensors and schedule behave (everything but where runs
    come from and where they land)."""

    nightly_cron: str = NIGHTLY_CRON
    timezone: str = "UTC"
    sensor_interval: int = 30
    discovery_interval: int = 60
    runs_per_dagster_run: int = SENSOR_RUNS_PER_DAGSTER_RUN
    finished_runs_sensor_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED
    pool: str | None = WANDB_POOL
    group: str = GROUP
    tags: Mapping[str, str] = field(default_factory=dict)
    catalog_automation: dg.AutomationCondition | None = CATALOG_AUTOMATION
    # `wandb_runs` must have materialized within this long before each tick of the schedule.
    freshness_window: timedelta = timedelta(hours=24)

    def freshness_policy(self) -> dg.FreshnessPolicy:
        return dg.FreshnessPolicy.cron(deadline_cron=self.nightly_cron, lower_bound_delta=self.freshness_window,
                                       timezone=self.timezone)


SpecFor = Callable[[str, dg.AssetSpec], dg.AssetSpec]
Execute = Callable[..., Iterator]


def build_definitions(wandb: WandbResource, warehouse: WarehouseResource, options: ExportOptions | None = None, *,
                      spec_for: SpecFor | None = None, execute: Execute | None = None) -> dg.Definitions:
    """The run assets and their checks, `wandb_catalog`, both jobs, the discovery, finished-runs
    and catalog sensors and the nightly schedule, over one W&B resource (any number of
    entities and projects) and one warehouse. `spec_for(table, spec)` may rename or retag each
    run asset (the component's translator); `execute` replaces the export step."""
    options = options or ExportOptions()
    specs = default_run_table_specs(options.group, options.freshness_policy())
    if options.tags:
        specs = {t: s.replace_attributes(tags={**s.tags, **options.tags}) for t, s in specs.items()}
    if spec_for:
        specs = {t: spec_for(t, s) for t, s in specs.items()}
    run_tables = build_run_tables(specs, execute, pool=options.pool)
    catalog_key = spec_for("wandb_catalog", dg.AssetSpec("wandb_catalog")).key if spec_for else "wandb_catalog"
    catalog = build_catalog([s.key for s in specs.values()], key=catalog_key, group=options.group,
                            tags=options.tags, automation_condition=options.catalog_automation)
    export_job, catalog_job = build_export_job(run_tables), build_catalog_job(catalog)
    return dg.Definitions(
        assets=[run_tables, catalog],
        jobs=[export_job, catalog_job],
        sensors=[build_discovery_sensor(options.discovery_interval),
                 build_finished_runs_sensor(export_job, catalog_job, interval=options.sensor_interval,
                                            runs_per_dagster_run=options.runs_per_dagster_run,
                                            default_status=options.finished_runs_sensor_status),
                 build_catalog_automation_sensor(catalog, options.sensor_interval)],
        schedules=[build_nightly_schedule(options.nightly_cron, options.timezone, export_job)],
        resources={"wandb": wandb, "warehouse": warehouse},
    )
