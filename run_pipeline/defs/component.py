"""`WandbExportComponent`: the whole export (run assets and checks, `wandb_catalog`, sensors,
schedule) as a Dagster component configured by a `defs.yaml`:

    dg scaffold defs run_pipeline.WandbExportComponent wandb_export --entity E --project P

It builds its Definitions with the same factory as `definitions.py`."""


import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Optional

import dagster as dg
import yaml
from pydantic import BaseModel, Field

from run_pipeline.settings import (
    DEFAULT_WAREHOUSE,
    NIGHTLY_CRON,
    SENSOR_RUNS_PER_DAGSTER_RUN,
    WANDB_POOL,
)

from .assets import CATALOG_AUTOMATION, GROUP, export_partitions
from .factory import ExportOptions, build_definitions
from .resources import WandbResource, WarehouseResource

API_KEY_VARIABLE = "WANDB_API_KEY"


class WandbScaffoldParams(BaseModel):
    entity: str | None = Field(default=None, description="W&B entity (user or team) to export")
    project: str | None = Field(default=None, description="W&B project to export (a name or a glob)")


class WandbExportScaffolder(dg.Scaffolder[WandbScaffoldParams]):
    """Writes a defs.yaml with every field at its default, the key read from WANDB_API_KEY."""

    @classmethod
    def get_scaffold_params(cls) -> type[WandbScaffoldParams]:
        return WandbScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[WandbScaffoldParams]) -> None:
        params = request.params or WandbScaffoldParams()
        attributes = {
            "base_url": "{{ env.WANDB_BASE_URL }}",
            "api_key": "{{ env.WANDB_API_KEY }}",
            "entities": [params.entity] if params.entity else [],
            "projects": [params.project] if params.project else [],
            "warehouse": "{{ project_root }}/" + DEFAULT_WAREHOUSE,
            "schedule_cron": NIGHTLY_CRON,
            "schedule_timezone": "UTC",
            "sensor_interval_seconds": 30,
            "runs_per_dagster_run": SENSOR_RUNS_PER_DAGSTER_RUN,
            "pool": WANDB_POOL,
            "group_name": GROUP,
            "tags": {},
        }
        target = Path(request.target_path)
        target.mkdir(parents=True, exist_ok=True)
        (target / "defs.yaml").write_text(yaml.safe_dump({"type": request.type_name, "attributes": attributes},
                                                         sort_keys=False))


def _field(description: str, **kw):
    return dg.Resolver.default(description=description, **kw)


@dg.scaffold_with(WandbExportScaffolder)
@dataclass
class WandbExportComponent(dg.Component, dg.Resolvable):
    """Exports W&B runs (config, summary, full history, system metrics) into a Parquet warehouse
    with DuckDB views: one partition per W&B run (`entity/project/run_id`) of every configured
    entity and project, one discovery sensor, one finished-runs sensor and one nightly schedule
    covering them all."""

    base_url: Annotated[Optional[str], _field(  # noqa: UP045 (the component schema wants Optional)
        "W&B API URL, e.g. https://api.wandb.ai; empty: $WANDB_BASE_URL, else W&B SaaS")] = None
    api_key: Annotated[Optional[str], _field(  # noqa: UP045
        'API key, e.g. "{{ env.WANDB_API_KEY }}"; empty: ~/.netrc')] = field(default=None, repr=False)
    entities: Annotated[list[str], _field("entities to export; empty: the key's default")] = field(
        default_factory=list)
    projects: Annotated[list[str], _field(
        "projects of each entity, names or globs (`exp-*`); empty: every project")] = field(default_factory=list)
    warehouse: Annotated[str, _field("warehouse root: a directory or s3://bucket/prefix")] = DEFAULT_WAREHOUSE
    schedule_cron: Annotated[str, _field("when wandb_nightly_schedule runs")] = NIGHTLY_CRON
    schedule_timezone: Annotated[str, _field("the schedule's timezone")] = "UTC"
    sensor_interval_seconds: Annotated[int, _field("minimum seconds between sensor ticks")] = 30
    finished_runs_sensor_running: Annotated[bool, _field(
        "start wandb_finished_runs_sensor running by default")] = False
    runs_per_dagster_run: Annotated[int, _field(
        "W&B runs per Dagster run the finished-runs sensor launches")] = SENSOR_RUNS_PER_DAGSTER_RUN
    pool: Annotated[Optional[str], _field(  # noqa: UP045
        "Dagster concurrency pool of the export steps (bounds concurrent calls to W&B)")] = WANDB_POOL
    group_name: Annotated[str, _field("asset group of the generated assets")] = GROUP
    key_prefix: Annotated[list[str], _field("prefix of every generated asset key")] = field(default_factory=list)
    tags: Annotated[dict[str, str], _field("tags of the generated assets")] = field(default_factory=dict)
    automation_condition: Annotated[Optional[dg.AutomationCondition], _field(  # noqa: UP045
        "automation condition of wandb_catalog, e.g. '{{ automation_condition.on_cron(\"0 * * * *\") }}'; "
        "empty: after each export", model_field_type=Optional[str])] = None  # noqa: UP045
    freshness_hours: Annotated[float, _field(
        "wandb_runs must have materialized within this many hours before each tick of the schedule")] = 24.0

    def get_asset_spec(self, table: str, spec: dg.AssetSpec) -> dg.AssetSpec:
        """The translator: the spec of the asset of one warehouse table (`wandb_runs`,
        `wandb_run_config`, `wandb_run_summary`, `wandb_run_history`, `wandb_run_system_metrics`,
        `wandb_catalog`). Override it to rename or annotate them; the default applies `key_prefix`."""
        return spec.replace_attributes(key=spec.key.with_prefix(self.key_prefix)) if self.key_prefix else spec

    def execute(self, context: dg.AssetExecutionContext, wandb: WandbResource, warehouse: WarehouseResource,
                keys: Mapping[str, dg.AssetKey]) -> Iterator:
        """One Dagster run of the run assets: exports its partitions (W&B runs) and yields their
        materializations and check results. Override to wrap or replace the export."""
        yield from export_partitions(context, wandb, warehouse, keys)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        wandb = WandbResource(base_url=self.base_url or None, api_key=self._api_key(),
                              entity=(self.entities or [None])[0], entities=self.entities[1:],
                              projects=self.projects)
        options = ExportOptions(
            nightly_cron=self.schedule_cron, timezone=self.schedule_timezone,
            sensor_interval=self.sensor_interval_seconds, runs_per_dagster_run=self.runs_per_dagster_run,
            finished_runs_sensor_status=(dg.DefaultSensorStatus.RUNNING if self.finished_runs_sensor_running
                                         else dg.DefaultSensorStatus.STOPPED),
            pool=self.pool, group=self.group_name, tags=self.tags,
            catalog_automation=self.automation_condition or CATALOG_AUTOMATION,
            freshness_window=timedelta(hours=self.freshness_hours))
        return build_definitions(wandb, WarehouseResource(root=self.warehouse), options,
                                 spec_for=self.get_asset_spec, execute=self.execute)

    def _api_key(self):
        # The template has already put the key's value here; when it is WANDB_API_KEY's, hand
        # Dagster the variable instead so the UI shows its name, never its value.
        if self.api_key and self.api_key == os.environ.get(API_KEY_VARIABLE):
            return dg.EnvVar(API_KEY_VARIABLE)
        return self.api_key or None
