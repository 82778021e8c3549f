"""Assets: one partition per W&B run lands its row, config, summary, history and system
metrics in Parquet; `wandb_catalog` keeps the DuckDB views over them (the only writer)."""


import dagster as dg

from run_pipeline.export import RunRef, export_runs, inspect_run
from run_pipeline.settings import BACKFILL_PARTITIONS_PER_RUN, EXPORT_WORKERS_PER_DAGSTER_RUN

from .checks import CHECK_SPECS, asset_metadata, check_results, failure_description, partition_materializations
from .partitions import wandb_runs_partitions
from .resources import WandbResource, WarehouseResource

GROUP = "wandb"

RUN_TABLE_SPECS = [
    dg.AssetSpec("wandb_runs", group_name=GROUP, partitions_def=wandb_runs_partitions,
                 description="One row per W&B run: state, times, tags, notes, config, summary and system metrics as JSON."),
    dg.AssetSpec("wandb_run_config", group_name=GROUP, partitions_def=wandb_runs_partitions,
                 description="One row per config key of one W&B run (nested keys joined with '.')."),
    dg.AssetSpec("wandb_run_summary", group_name=GROUP, partitions_def=wandb_runs_partitions,
                 description="One row per summary key of one W&B run (nested keys joined with '.')."),
    dg.AssetSpec("wandb_run_history", group_name=GROUP, partitions_def=wandb_runs_partitions,
                 description="One row per logged step of one W&B run: the full, unsampled history."),
    dg.AssetSpec("wandb_run_system_metrics", group_name=GROUP, partitions_def=wandb_runs_partitions,
                 description="One row per system-metric event of one W&B run: the full stream, not a sample."),
]


@dg.multi_asset(
    name="wandb_run_tables",
    specs=RUN_TABLE_SPECS,
    check_specs=CHECK_SPECS,
    partitions_def=wandb_runs_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=BACKFILL_PARTITIONS_PER_RUN),
    can_subset=False,
)
def wandb_run_tables(context: dg.AssetExecutionContext, wandb: WandbResource, warehouse: WarehouseResource):
    """Export each run of the partition range; incremental for runs exported before. A run the
    server no longer has is marked deleted (its rows stay), not failed. When some runs of a
    batch fail, the ones that landed are materialized one partition at a time before the run
    fails, so only the failed partitions show as failed and a retry re-runs just those."""
    results, failures, deleted = [], {}, []
    refs = [RunRef.from_partition_key(key) for key in context.partition_keys]
    wh = warehouse.get_warehouse()
    with wandb.get_api() as api:
        # A backfill batch goes to a pool of worker processes; a single partition runs here.
        for outcome in export_runs(api, wh, refs, workers=EXPORT_WORKERS_PER_DAGSTER_RUN):
            key, result = outcome.ref.partition_key, outcome.result
            if outcome.deleted:
                context.log.warning(f"{outcome.ref.path}: deleted on the server; its rows stay in the warehouse, "
                                    "marked deleted (remove them with `run-pipeline prune`)")
                deleted.append(outcome.ref)
            elif result is None:  # one bad run must not hide the others' results
                failures[key] = outcome.error or "unknown error"
                context.log.error(f"export of {outcome.ref.path} failed: {outcome.error}")
            else:
                context.log.info(f"{outcome.ref.path}: {result.describe()}")
                results.append(result)
    order = {key: i for i, key in enumerate(context.partition_keys)}
    results.sort(key=lambda r: order[r.ref.partition_key])
    inspections = {r.ref.partition_key: inspect_run(wh, r.ref) for r in results}
    runs_path = wh.root.location(wh.root.path("runs"))
    if failures:
        for result in results:
            for event in partition_materializations(result, inspections[result.ref.partition_key], runs_path):
                context.log_event(event)
        raise dg.Failure(description=failure_description(failures, len(context.partition_keys)),
                         metadata={"failed_runs": dg.MetadataValue.json(failures), "exported_runs": len(results)})
    for asset, metadata in asset_metadata(results, inspections, deleted, runs_path).items():
        yield dg.MaterializeResult(asset_key=asset, metadata=metadata)
    yield from check_results(results, inspections)


@dg.asset(
    group_name=GROUP,
    deps=[spec.key for spec in RUN_TABLE_SPECS],
    # Plain eager() waits until every parent partition has been materialized once, so one run
    # that keeps failing (or a partition added but not yet run) would stop refreshes for good.
    automation_condition=dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing()),
    description="One DuckDB view per warehouse table (runs, run_config, run_summary, history, system_metrics, "
                "metrics) over the Parquet partitions; the only writer of warehouse.duckdb.",
)
def wandb_catalog(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    info = warehouse.get_warehouse().refresh_catalog()
    return dg.MaterializeResult(metadata={k: v for k, v in info.items() if isinstance(v, (int, float, str))})
