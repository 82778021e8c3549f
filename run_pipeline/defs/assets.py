"""Assets: one partition per W&B run lands its row, config, summary, history and system
metrics in Parquet; `wandb_catalog` keeps the DuckDB views over them (the only writer)."""


from collections.abc import Callable, Iterator, Mapping, Sequence

import dagster as dg

from run_pipeline.pool import export_runs
from run_pipeline.settings import (
    BACKFILL_PARTITIONS_PER_RUN,
    EXPORT_WORKERS_PER_DAGSTER_RUN,
    WANDB_POOL,
)
from run_pipeline.warehouse import WarehouseError
from run_pipeline.warehouse.catalog import (
    EMPTY_COLUMNS,
    HISTORY,
    RUN_CONFIG,
    RUN_SUMMARY,
    RUNS,
    SYSTEM_METRICS,
)

from .checks import (
    RUN_ASSETS,
    asset_metadata,
    check_results,
    check_specs,
    failure_description,
    partition_materializations,
)
from .partitions import (
    decode_partition_key,
    encode_partition_key,
    wandb_runs_partitions,
)
from .resources import WandbResource, WarehouseResource

GROUP = "wandb"

DESCRIPTIONS = {
    "wandb_runs": "One row per W&B run: state, times, tags, notes, config, summary and system metrics as JSON.",
    "wandb_run_config": "One row per config key of one W&B run (nested keys joined with '.').",
    "wandb_run_summary": "One row per summary key of one W&B run (nested keys joined with '.').",
    "wandb_run_history": "One row per logged step of one W&B run: the full, unsampled history.",
    "wandb_run_system_metrics": "One row per system-metric event of one W&B run: the full stream, not a sample.",
}
# The DuckDB view each asset's rows appear in; its columns are the asset's column schema.
VIEWS = {"wandb_runs": RUNS, "wandb_run_config": RUN_CONFIG, "wandb_run_summary": RUN_SUMMARY,
         "wandb_run_history": HISTORY, "wandb_run_system_metrics": SYSTEM_METRICS}
CATALOG_DESCRIPTION = ("One DuckDB view per warehouse table (runs, run_config, run_summary, history, system_metrics, "
                       "metrics) over the Parquet partitions; the only writer of warehouse.duckdb. Each "
                       "materialization first packs finished runs' long-form metrics into a few files per project "
                       "(as `run-pipeline compact` does), so queries across runs read few files.")
# Plain eager() waits until every parent partition has been materialized once, so one run
# that keeps failing (or a partition added but not yet run) would stop refreshes for good.
CATALOG_AUTOMATION = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())


def column_schema(view: str) -> dg.TableSchema:
    """The view's fixed columns and DuckDB types (history and system metrics add one column
    per logged key, which vary by run)."""
    return dg.TableSchema(columns=[dg.TableColumn(name, type) for name, type in EMPTY_COLUMNS[view]])


def default_run_table_specs(group: str = GROUP, freshness_policy: dg.FreshnessPolicy | None = None
                            ) -> dict[str, dg.AssetSpec]:
    """The run assets, keyed by table name, before any renaming."""
    return {
        table: dg.AssetSpec(
            table, group_name=group, partitions_def=wandb_runs_partitions, description=description,
            metadata={"dagster/column_schema": column_schema(VIEWS[table]), "warehouse/view": VIEWS[table]},
            freshness_policy=freshness_policy if table == "wandb_runs" else None)
        for table, description in DESCRIPTIONS.items()
    }


def export_partitions(context: dg.AssetExecutionContext, wandb: WandbResource, warehouse: WarehouseResource,
                      keys: Mapping[str, dg.AssetKey] | None = None) -> Iterator:
    """Export each run of the partition range; incremental for runs exported before. A run the
    server no longer has is marked deleted (its rows stay), not failed. When some runs of a
    batch fail, the ones that landed are materialized one partition at a time before the run
    fails, so only the failed partitions show as failed and a retry re-runs just those.
    `keys` maps each table to its asset key (the table name unless renamed)."""
    keys = dict(keys or {table: dg.AssetKey(table) for table in RUN_ASSETS})
    results, failures, deleted = [], {}, []
    runs = [decode_partition_key(key) for key in context.partition_keys]
    wh = warehouse.get_warehouse()
    with wandb.get_api() as api:
        # A backfill batch goes to a pool of worker processes; a single partition runs here.
        for outcome in export_runs(api, wh, runs, workers=EXPORT_WORKERS_PER_DAGSTER_RUN):
            path, result = outcome.key.path, outcome.result
            if outcome.deleted:
                context.log.warning(f"{path}: deleted on the server; its rows stay in the warehouse, "
                                    "marked deleted (remove them with `run-pipeline prune`)")
                deleted.append(outcome.key)
            elif result is None:  # one bad run must not hide the others' results
                failures[encode_partition_key(outcome.key)] = outcome.error or "unknown error"
                context.log.error(f"export of {path} failed: {outcome.error}")
            else:
                context.log.info(f"{path}: {result.describe()}")
                results.append(result)
    order = {key: i for i, key in enumerate(context.partition_keys)}
    results.sort(key=lambda r: order[encode_partition_key(r.key)])
    runs_path = wh.root.location(wh.root.path("runs"))
    if failures:
        for result in results:
            for event in partition_materializations(result, runs_path, keys):
                context.log_event(event)
        raise dg.Failure(description=failure_description(failures, len(context.partition_keys)),
                         metadata={"failed_runs": dg.MetadataValue.json(failures), "exported_runs": len(results)})
    for asset, metadata in asset_metadata(results, deleted, runs_path).items():
        yield dg.MaterializeResult(asset_key=keys[asset], metadata=metadata)
    yield from check_results(results, keys)


def build_run_tables(specs: Mapping[str, dg.AssetSpec] | None = None, execute: Callable[..., Iterator] | None = None,
                     *, pool: str | None = WANDB_POOL, name: str = "wandb_run_tables") -> dg.AssetsDefinition:
    """The multi-asset of the run tables. `specs` (table → spec) may rename, regroup or tag the
    assets; `execute(context, wandb, warehouse, keys)` does the work (`export_partitions`).
    Every step takes a slot of the concurrency pool `pool`: the deployment's bound on
    concurrent exports, hence on concurrent calls to W&B."""
    specs = dict(specs or default_run_table_specs())
    keys = {table: spec.key for table, spec in specs.items()}
    run = execute or export_partitions

    @dg.multi_asset(
        name=name,
        specs=list(specs.values()),
        check_specs=check_specs(keys),
        partitions_def=wandb_runs_partitions,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=BACKFILL_PARTITIONS_PER_RUN),
        can_subset=False,
        pool=pool,
    )
    def _run_tables(context: dg.AssetExecutionContext, wandb: WandbResource, warehouse: WarehouseResource):
        yield from run(context, wandb, warehouse, keys)

    return _run_tables


def build_catalog(deps: Sequence[dg.AssetKey] | None = None, *, key: dg.AssetKey | str = "wandb_catalog",
                  group: str = GROUP, tags: Mapping[str, str] | None = None,
                  automation_condition: dg.AutomationCondition | None = CATALOG_AUTOMATION) -> dg.AssetsDefinition:
    """`wandb_catalog`: the DuckDB views over the run tables `deps`."""

    @dg.asset(key=dg.AssetKey.from_coercible(key), group_name=group, tags=dict(tags or {}),
              deps=list(deps or [dg.AssetKey(t) for t in RUN_ASSETS]),
              automation_condition=automation_condition, description=CATALOG_DESCRIPTION)
    def _catalog(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        store = warehouse.get_warehouse()
        packed, failed = [], ""
        try:
            packed = store.compact(refresh=False)  # refreshed below, with its figures
        except WarehouseError as exc:  # the views are refreshed all the same; the next run tries again
            failed = str(exc)
            context.log.error(f"compaction failed, the catalog is refreshed without it: {failed}")
        for result in packed:
            if result.runs or result.recovered or result.busy:
                context.log.info(result.describe())
        info = store.refresh_catalog()
        info = {**info, "packed_runs": sum(r.runs for r in packed), "packs_written": sum(len(r.packs) for r in packed)}
        if failed:
            info["compaction_error"] = failed
        return dg.MaterializeResult(metadata={k: v for k, v in info.items() if isinstance(v, (int, float, str))})

    return _catalog


wandb_run_tables = build_run_tables()
wandb_catalog = build_catalog()
