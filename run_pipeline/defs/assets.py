"""Assets: one partition per W&B run lands its row, config, summary, history and system
metrics in Parquet; `wandb_catalog` keeps the DuckDB views over them (the only writer)."""


import dagster as dg

from run_pipeline.client import WandbNotFoundError
from run_pipeline.export import RunRef, export_runs, inspect_run
from run_pipeline.settings import BACKFILL_PARTITIONS_PER_RUN, EXPORT_WORKERS_PER_DAGSTER_RUN

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
HISTORY_CHECK = dg.AssetCheckSpec("history_reconciled", asset="wandb_run_history",
                                  description="Rows in the warehouse equal the rows the server holds for the run.")
SYSTEM_CHECK = dg.AssetCheckSpec("system_metrics_reconciled", asset="wandb_run_system_metrics",
                                 description="System-metric events in the warehouse equal the server's count.")
STEPS_CHECK = dg.AssetCheckSpec("steps_unique", asset="wandb_run_history",
                                description="Every _step appears once per run (W&B allows repeats; they are kept "
                                            "and reported here as a warning).")
METADATA_CHECK = dg.AssetCheckSpec("config_and_summary_present", asset="wandb_runs",
                                   description="Every exported run has its runs, run_config and run_summary files.")


@dg.multi_asset(
    name="wandb_run_tables",
    specs=RUN_TABLE_SPECS,
    check_specs=[HISTORY_CHECK, SYSTEM_CHECK, STEPS_CHECK, METADATA_CHECK],
    partitions_def=wandb_runs_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=BACKFILL_PARTITIONS_PER_RUN),
    can_subset=False,
)
def wandb_run_tables(context: dg.AssetExecutionContext, wandb: WandbResource, warehouse: WarehouseResource):
    """Export each run of the partition range; incremental for runs exported before."""
    results, failures = [], {}
    refs = [RunRef.from_partition_key(key) for key in context.partition_keys]
    with wandb.get_api() as api:
        # A backfill batch goes to a pool of worker processes; a single partition runs here.
        for outcome in export_runs(api, warehouse.get_warehouse(), refs, workers=EXPORT_WORKERS_PER_DAGSTER_RUN):
            key, result = outcome.ref.partition_key, outcome.result
            if result is None:  # one bad run must not hide the others' results
                if outcome.error_type == WandbNotFoundError.__name__:
                    failures[key] = f"not found on the server (deleted?): {outcome.error}"
                else:
                    failures[key] = outcome.error
                    context.log.error(f"export of {key} failed: {outcome.error}")
                continue
            context.log.info(f"{key}: {result.describe()}")
            results.append(result)
    order = {key: i for i, key in enumerate(context.partition_keys)}
    results.sort(key=lambda r: order[r.ref.partition_key])
    if failures:
        raise dg.Failure(
            description=f"{len(failures)} of {len(context.partition_keys)} runs failed to export; "
                        "re-running these partitions resumes (exports are idempotent): "
                        + "; ".join(f"{k}: {v}" for k, v in list(failures.items())[:10]),
            metadata={"failed_runs": dg.MetadataValue.json(failures), "exported_runs": len(results)},
        )
    wh = warehouse.get_warehouse()
    inspections = {r.ref.partition_key: inspect_run(wh, r.ref) for r in results}
    # Dagster records one materialization per asset for the whole partition range of a run, so
    # with several runs per Dagster run (backfills) the figures are batch totals, named so,
    # with a per-run table beside them.
    label = (lambda name: name) if len(results) == 1 else (lambda name: f"batch_{name}")
    per_run = {} if len(results) == 1 else {"per_run": dg.MetadataValue.md(_per_run_table(results))}
    history = [r.written.history for r in results if r.written.history]
    system = [r.written.system_metrics for r in results if r.written.system_metrics]
    yield dg.MaterializeResult(asset_key="wandb_runs", metadata={
        label("runs"): len(results), label("states"): dg.MetadataValue.json(_count(r.state for r in results)),
        "path": dg.MetadataValue.path(wh.root.location(wh.root.path("runs")))})
    yield dg.MaterializeResult(asset_key="wandb_run_config", metadata={label("keys"): sum(r.config_keys for r in results)})
    yield dg.MaterializeResult(asset_key="wandb_run_summary", metadata={label("keys"): sum(r.summary_keys for r in results)})
    history_md = {
        label("rows_written"): sum(r.history_rows_written for r in results),
        label("rows_total"): sum(r.history_rows_total for r in results),
        label("last_step"): max(r.last_step for r in results),
        label("columns"): max((h.columns for h in history), default=0),
        label("bytes"): sum(h.bytes for h in history),
        label("mode"): dg.MetadataValue.json(_count(r.mode for r in results)),
        **per_run,
    }
    if len(results) == 1 and history:
        only = results[0]
        history_md["path"] = dg.MetadataValue.path(history[0].path)
        history_md["preview"] = dg.MetadataValue.md(
            f"Last rows of {only.ref.path}:\n\n{inspections[only.ref.partition_key].preview_markdown}")
    yield dg.MaterializeResult(asset_key="wandb_run_history", metadata=history_md)
    yield dg.MaterializeResult(asset_key="wandb_run_system_metrics", metadata={
        label("rows_total"): sum(r.system_rows_total for r in results), label("bytes"): sum(x.bytes for x in system)})
    bad_history = {r.ref.partition_key: [r.history_rows_total, r.server_history_rows] for r in results
                   if not r.reconciled}
    bad_system = {r.ref.partition_key: [r.system_rows_total, r.server_system_rows] for r in results
                  if r.system_rows_total != r.server_system_rows}
    repeats = {k: i.duplicate_steps for k, i in inspections.items() if i.duplicate_steps}
    missing = {k: i.missing_files for k, i in inspections.items() if i.missing_files}
    yield dg.AssetCheckResult(check_name=HISTORY_CHECK.name, asset_key="wandb_run_history", passed=not bad_history,
                              metadata={"mismatches [warehouse, server]": dg.MetadataValue.json(bad_history)})
    yield dg.AssetCheckResult(check_name=SYSTEM_CHECK.name, asset_key="wandb_run_system_metrics", passed=not bad_system,
                              metadata={"mismatches [warehouse, server]": dg.MetadataValue.json(bad_system)})
    yield dg.AssetCheckResult(check_name=STEPS_CHECK.name, asset_key="wandb_run_history", passed=not repeats,
                              severity=dg.AssetCheckSeverity.WARN,
                              metadata={"repeated steps per run": dg.MetadataValue.json(repeats)})
    yield dg.AssetCheckResult(check_name=METADATA_CHECK.name, asset_key="wandb_runs", passed=not missing,
                              metadata={"missing files": dg.MetadataValue.json(missing)})


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


def _per_run_table(results) -> str:
    lines = ["| run | state | mode | rows written | rows total | last step |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.ref.path} | {r.state} | {r.mode} | {r.history_rows_written} | {r.history_rows_total} | {r.last_step} |"
              for r in results]
    return "\n".join(lines)


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out
