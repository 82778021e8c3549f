"""The asset checks of the run tables and the metadata of their materializations, as pure
functions of what the exports returned (`RunExport`: the writer reports repeated steps and the
last rows it wrote, so nothing is read back): testable without running Dagster."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import dagster as dg
import pyarrow as pa

from run_pipeline.warehouse import RunExport, RunKey
from run_pipeline.warehouse.export import RUN_FILES

from .partitions import encode_partition_key

HISTORY_CHECK = dg.AssetCheckSpec("history_reconciled", asset="wandb_run_history",
                                  description="Rows in the warehouse equal the rows the server holds for the run.")
SYSTEM_CHECK = dg.AssetCheckSpec("system_metrics_reconciled", asset="wandb_run_system_metrics",
                                 description="System-metric events in the warehouse equal the server's count.")
STEPS_CHECK = dg.AssetCheckSpec("steps_unique", asset="wandb_run_history",
                                description="Every _step appears once per run (W&B allows repeats; they are kept "
                                            "and reported here as a warning).")
METADATA_CHECK = dg.AssetCheckSpec("config_and_summary_present", asset="wandb_runs",
                                   description="Every exported run has its runs, run_config and run_summary files.")
CHECK_SPECS = [HISTORY_CHECK, SYSTEM_CHECK, STEPS_CHECK, METADATA_CHECK]

RUN_ASSETS = ("wandb_runs", "wandb_run_config", "wandb_run_summary", "wandb_run_history",
              "wandb_run_system_metrics")


def _key(keys: Mapping[str, dg.AssetKey] | None, table: str) -> dg.AssetKey:
    return keys[table] if keys else dg.AssetKey(table)


def check_specs(keys: Mapping[str, dg.AssetKey] | None = None) -> list[dg.AssetCheckSpec]:
    """The four checks, on the run assets' keys (`keys`: table name → asset key)."""
    return [dg.AssetCheckSpec(spec.name, asset=_key(keys, spec.asset_key.path[-1]), description=spec.description)
            for spec in CHECK_SPECS]


def count(values: Iterable) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def per_run_table(results: list[RunExport]) -> str:
    lines = ["| run | state | mode | rows written | rows total | last step |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.key.path} | {r.state} | {r.mode} | {r.history_rows_written} | {r.history_rows_total} | "
              f"{r.last_step} |" for r in results]
    return "\n".join(lines)


def preview_markdown(result: RunExport, columns: int = 6) -> str:
    """The last history rows the export wrote, as a Markdown table of their first `columns`
    columns."""
    history = result.history
    if history is None or not history.rows_total:
        return "(no history)"
    rows: pa.Table | None = history.last_rows
    if rows is None or not rows.num_rows:
        return f"(no new rows: {history.rows_total} rows up to step {history.last_step}, unchanged)"
    names = rows.column_names[:columns]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows.select(names).to_pylist():
        lines.append("| " + " | ".join("" if row[n] is None else f"{row[n]:.6g}" if isinstance(row[n], float)
                                       else str(row[n])[:40] for n in names) + " |")
    return "\n".join(lines)


def missing_files(result: RunExport) -> list[str]:
    """The run's runs / run_config / run_summary files its export did not place."""
    return [f"{table}/{name}" for table, name in RUN_FILES.items() if f"{table}/{name}" not in result.metadata.files]


def asset_metadata(results: list[RunExport], deleted: list[RunKey], warehouse_runs_path: str) -> dict[str, dict]:
    """Metadata of each run asset for one Dagster run. With one W&B run the figures are that
    run's; with several (a backfill batch) they are batch totals, named so, with a per-run
    table beside them. Runs found deleted on the server are listed, not failed."""
    single = len(results) <= 1
    label = (lambda name: name) if single else (lambda name: f"batch_{name}")
    per_run = {} if single or not results else {"per_run": dg.MetadataValue.md(per_run_table(results))}
    history = [r.history for r in results if r.history]
    system = [r.system_metrics for r in results if r.system_metrics]
    runs_md: dict = {label("runs"): len(results), label("states"): dg.MetadataValue.json(count(r.state for r in results)),
                     "path": dg.MetadataValue.path(warehouse_runs_path)}
    if deleted:
        runs_md["deleted_on_server"] = dg.MetadataValue.json([d.path for d in deleted])
    history_md: dict = {
        label("rows_written"): sum(r.history_rows_written for r in results),
        label("rows_total"): sum(r.history_rows_total for r in results),
        label("last_step"): max((r.last_step for r in results), default=-1),
        label("columns"): max((h.columns for h in history), default=0),
        label("bytes"): sum(h.bytes for h in history),
        label("mode"): dg.MetadataValue.json(count(r.mode for r in results)),
        **per_run,
    }
    if single and history:
        only = results[0]
        history_md["path"] = dg.MetadataValue.path(history[0].path)
        history_md["preview"] = dg.MetadataValue.md(f"Last rows of {only.key.path}:\n\n{preview_markdown(only)}")
    return {
        "wandb_runs": runs_md,
        "wandb_run_config": {label("keys"): sum(r.metadata.config_keys for r in results)},
        "wandb_run_summary": {label("keys"): sum(r.metadata.summary_keys for r in results)},
        "wandb_run_history": history_md,
        "wandb_run_system_metrics": {label("rows_total"): sum(r.system_rows_total for r in results),
                                     label("bytes"): sum(x.bytes for x in system)},
    }


def check_results(results: list[RunExport],
                  keys: Mapping[str, dg.AssetKey] | None = None) -> Iterator[dg.AssetCheckResult]:
    """The four checks over the runs of one Dagster run."""
    bad_history = {encode_partition_key(r.key): [r.history_rows_total, r.source_history_rows] for r in results
                   if not r.reconciled}
    # The client refuses a system-metrics stream shorter or longer than the server's count (the
    # run's export fails, named), so every run that landed holds all of its events.
    bad_system: dict[str, list[int]] = {}
    repeats = {encode_partition_key(r.key): r.history.repeated_steps for r in results
               if r.history and r.history.repeated_steps}
    missing = {encode_partition_key(r.key): missing_files(r) for r in results if missing_files(r)}
    history_key = _key(keys, "wandb_run_history")
    yield dg.AssetCheckResult(check_name=HISTORY_CHECK.name, asset_key=history_key, passed=not bad_history,
                              metadata={"mismatches [warehouse, server]": dg.MetadataValue.json(bad_history)})
    yield dg.AssetCheckResult(check_name=SYSTEM_CHECK.name, asset_key=_key(keys, "wandb_run_system_metrics"),
                              passed=not bad_system,
                              metadata={"mismatches [warehouse, server]": dg.MetadataValue.json(bad_system)})
    yield dg.AssetCheckResult(check_name=STEPS_CHECK.name, asset_key=history_key, passed=not repeats,
                              severity=dg.AssetCheckSeverity.WARN,
                              metadata={"repeated steps per run": dg.MetadataValue.json(repeats)})
    yield dg.AssetCheckResult(check_name=METADATA_CHECK.name, asset_key=_key(keys, "wandb_runs"), passed=not missing,
                              metadata={"missing files": dg.MetadataValue.json(missing)})


def partition_materializations(result: RunExport, warehouse_runs_path: str,
                               keys: Mapping[str, dg.AssetKey] | None = None) -> Iterator[dg.AssetMaterialization]:
    """One materialization per run asset for one W&B run's partition: what a batch logs for
    the runs that landed when another run of the batch failed, so they show as materialized."""
    metadata = asset_metadata([result], [], warehouse_runs_path)
    for asset in RUN_ASSETS:
        yield dg.AssetMaterialization(asset_key=_key(keys, asset), partition=encode_partition_key(result.key),
                                      metadata=metadata[asset])


def failure_description(failures: Mapping[str, str], total: int) -> str:
    shown = "; ".join(f"{k}: {v}" for k, v in list(failures.items())[:10])
    more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
    return (f"{len(failures)} of {total} runs failed to export (the others landed and show as materialized); "
            f"re-running the failed partitions resumes them: {shown}{more}")
