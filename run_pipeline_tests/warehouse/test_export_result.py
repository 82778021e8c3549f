"""What an export returns without reading its files back: repeated steps and the last rows the
writer saw, carried across incremental exports by the manifest; and the state each run of a
project was exported with, read in one pass."""

from __future__ import annotations

import json

from run_pipeline.warehouse import FULL, INCREMENTAL, UNCHANGED, RunKey, Warehouse

from .helpers import GrowingHistory, batch, make_run


def test_the_result_counts_repeated_steps_and_carries_the_last_rows(tmp_path):
    wh = Warehouse(tmp_path)
    batches = [batch([0, 1, 1, 2], {"loss": [4.0, 3.0, 3.5, 2.0]}),  # 1 repeated inside a batch
               batch([2, 3], {"loss": [1.9, 1.0], "acc": [0.5, 0.6]})]  # 1 repeated across batches
    result = wh.export_run(make_run(history_line_count=6, last_step=3), GrowingHistory(batches))
    assert result.mode == FULL and result.history.repeated_steps == 2
    rows = result.history.last_rows
    assert rows.column_names[:2] == ["_step", "loss"]
    assert rows.to_pydict()["_step"] == [1, 1, 2, 2, 3]
    assert rows.to_pydict()["loss"] == [3.0, 3.5, 2.0, 1.9, 1.0]
    assert rows.to_pydict()["acc"] == [None, None, None, 0.5, 0.6]
    assert result.reconciled and result.history_rows_total == result.source_history_rows == 6


def test_repeats_accumulate_over_incremental_exports_and_survive_an_unchanged_one(tmp_path):
    wh = Warehouse(tmp_path)
    first = [batch([0, 0, 1], {"x": [1, 2, 3]})]
    wh.export_run(make_run(history_line_count=3, last_step=1), GrowingHistory(first))
    grown = first + [batch([2, 3, 3], {"x": [4, 5, 6]})]
    result = wh.export_run(make_run(history_line_count=6, last_step=3), GrowingHistory(grown), incremental=True)
    assert result.mode == INCREMENTAL and result.history.repeated_steps == 2
    assert result.history.last_rows.to_pydict()["_step"] == [2, 3, 3]  # only what this export wrote
    again = wh.export_run(make_run(history_line_count=6, last_step=3), GrowingHistory(grown), incremental=True)
    assert again.mode == UNCHANGED and again.history.repeated_steps == 2 and again.history.last_rows is None


def test_a_manifest_from_before_repeats_were_recorded_is_counted_from_its_files(tmp_path):
    wh = Warehouse(tmp_path)
    first = [batch([0, 0, 1, 1, 1], {"x": [1, 2, 3, 4, 5]})]
    key = RunKey("team", "proj", "run1")
    wh.export_run(make_run(history_line_count=5, last_step=1), GrowingHistory(first))
    manifest = next((tmp_path / "history").rglob("_manifest.json"))
    data = json.loads(manifest.read_text())
    del data["repeated_steps"]
    manifest.write_text(json.dumps(data))
    assert wh.run_state(key).repeated_steps is None
    grown = GrowingHistory(first + [batch([2], {"x": [6]})])
    result = wh.export_run(make_run(history_line_count=6, last_step=2), grown, incremental=True)
    assert result.mode == INCREMENTAL and result.history.repeated_steps == 3
    assert wh.run_state(key).repeated_steps == 3  # recorded from now on


def test_exported_states_lists_every_run_of_a_project_in_one_pass(tmp_path):
    wh = Warehouse(tmp_path)
    assert wh.exported_states("team", "proj") == {}
    wh.export_run(make_run(run_id="a/b c", state="running", heartbeat_at="2024-05-01T13:00:00.123456Z"))
    wh.export_run(make_run(run_id="r2", heartbeat_at=None))
    wh.export_run(make_run(project="other", run_id="r3"))
    assert wh.exported_states("team", "proj") == {"a/b c": ("running", "2024-05-01T13:00:00"), "r2": ("finished", "")}
    wh.delete_run(RunKey("team", "proj", "r2"))
    assert set(wh.exported_states("team", "proj")) == {"a/b c"}


def test_exported_states_on_an_object_store(s3):
    fs, bucket = s3
    wh = Warehouse(f"s3://{bucket}/wh", filesystem=fs)
    assert wh.exported_states("team", "proj") == {}
    for run_id, state in (("r1", "finished"), ("r 2%", "crashed")):
        wh.export_run(make_run(run_id=run_id, state=state))
    assert wh.exported_states("team", "proj") == {"r1": ("finished", "2024-05-01T13:00:00"),
                                                  "r 2%": ("crashed", "2024-05-01T13:00:00")}
