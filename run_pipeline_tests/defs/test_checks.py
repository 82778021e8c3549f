"""The asset checks and materialization metadata are pure functions of the exports' results:
built here from real exports into `tmp_path`, with no Dagster run and no read-back."""

from __future__ import annotations

from run_pipeline.defs.checks import asset_metadata, check_results, preview_markdown
from run_pipeline.defs.partitions import encode_partition_key
from run_pipeline.warehouse import RunKey, Warehouse

from ..warehouse.helpers import GrowingHistory, batch, make_run


def _export(wh: Warehouse, run_id: str, steps: list[int], **record):
    history = GrowingHistory([batch(steps, {"loss": [float(i) for i in range(len(steps))]})])
    record = {"history_line_count": len(steps), "last_step": max(steps), **record}
    return wh.export_run(make_run(run_id=run_id, **record), history, incremental=True)


def test_checks_come_from_what_the_writer_saw(tmp_path):
    wh = Warehouse(tmp_path)
    clean = _export(wh, "clean001", [0, 1, 2])
    repeats = _export(wh, "repeat01", [0, 1, 1, 1, 2])
    short = _export(wh, "short001", [0, 1], history_line_count=5)  # the server said 5 rows
    checks = {c.check_name: c for c in check_results([clean, repeats, short])}
    assert checks["steps_unique"].passed is False
    assert checks["steps_unique"].metadata["repeated steps per run"].value == {
        encode_partition_key(RunKey("team", "proj", "repeat01")): 2}
    assert checks["history_reconciled"].metadata["mismatches [warehouse, server]"].value == {
        encode_partition_key(RunKey("team", "proj", "short001")): [2, 5]}
    assert checks["config_and_summary_present"].passed and checks["system_metrics_reconciled"].passed


def test_metadata_of_one_run_previews_its_last_rows_and_of_a_batch_totals(tmp_path):
    wh = Warehouse(tmp_path)
    one = _export(wh, "run1", list(range(8)))
    md = asset_metadata([one], [], "runs")
    preview = md["wandb_run_history"]["preview"].value
    assert preview.splitlines() == ["Last rows of team/proj/run1:", "", "| _step | loss |", "|---|---|",
                                    *[f"| {s} | {float(s):.6g} |" for s in range(3, 8)]]
    assert (md["wandb_run_history"]["rows_total"], md["wandb_run_config"]["keys"]) == (8, 0)
    again = _export(wh, "run1", list(range(8)))
    assert preview_markdown(again) == "(no new rows: 8 rows up to step 7, unchanged)"
    two = _export(wh, "run2", [0, 1])
    batch_md = asset_metadata([again, two], [RunKey("team", "proj", "gone")], "runs")
    assert batch_md["wandb_run_history"]["batch_rows_total"] == 10
    assert batch_md["wandb_run_history"]["batch_rows_written"] == 2
    assert batch_md["wandb_runs"]["deleted_on_server"].value == ["team/proj/gone"]
    assert "| team/proj/run2 | finished | full | 2 | 2 | 1 |" in batch_md["wandb_run_history"]["per_run"].value
