"""The runs, run_config and run_summary tables as a user reads them in DuckDB."""

from __future__ import annotations

import datetime as dt
import json
import math

from run_pipeline.warehouse import export_run

from .helpers import columns, make_run, query

CONFIG = {"optimizer": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999]}, "epochs": 10,
          "nan": math.nan, "inf": -math.inf, "big": 2**70, "flag": True, "empty": {}, "none": None,
          "dotted.key": "x"}
SUMMARY = {"acc": 0.9, "image": {"_type": "image-file", "path": "media/a.png"}, "_wandb": {"runtime": 12}}


def test_runs_row(tmp_path):
    run = make_run(created_at="2024-05-01T14:00:00+02:00", heartbeat_at=dt.datetime(2024, 5, 1, 13, 0, tzinfo=dt.timezone.utc),
                   tags=["a", "b'c"], notes="n", config=CONFIG, summary=SUMMARY,
                   system_metrics={"gpu": 1.5}, history_line_count=7, last_step=6)
    export_run(tmp_path, run)
    types = columns(tmp_path, "runs")
    assert types["created_at"] == types["heartbeat_at"] == types["exported_at"] == "TIMESTAMP"
    assert types["tags"] == "VARCHAR[]" and types["config"] == types["summary"] == "JSON"
    [row] = query(tmp_path, "SELECT name, state, created_at, heartbeat_at, tags, notes, run_group, job_type, "
                            "username, url, config, summary, system_metrics, history_line_count, last_step FROM runs")
    assert row[:10] == ("name-run1", "finished", dt.datetime(2024, 5, 1, 12, 0), dt.datetime(2024, 5, 1, 13, 0),
                        ["a", "b'c"], "n", "g", "train", "alice", "https://wandb.example/run1")
    config = json.loads(row[10])
    assert config["optimizer"] == {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999]}
    assert (config["nan"], config["inf"], config["big"]) == ("NaN", "-Infinity", 2**70)
    assert json.loads(row[11])["image"]["_type"] == "image-file"
    assert json.loads(row[12]) == {"gpu": 1.5}
    assert row[13:] == (7, 6)
    assert query(tmp_path, "SELECT config -> '$.optimizer' ->> 'name' FROM runs") == [("adam",)]


def test_config_and_summary_are_flattened(tmp_path):
    export_run(tmp_path, make_run(config=CONFIG, summary=SUMMARY))
    rows = {k: (v, d, t) for k, v, d, t in query(
        tmp_path, "SELECT key, value, value_double, value_text FROM run_config")}
    assert set(rows) == {"optimizer.name", "optimizer.lr", "optimizer.betas", "epochs", "nan", "inf", "big",
                         "flag", "empty", "none", "dotted.key"}
    assert rows["optimizer.name"] == ('"adam"', None, "adam")
    assert rows["optimizer.lr"] == ("0.001", 1e-3, None)
    assert json.loads(rows["optimizer.betas"][0]) == [0.9, 0.999]
    assert rows["epochs"] == ("10", 10.0, None)
    assert rows["nan"][0] == '"NaN"' and math.isnan(rows["nan"][1])
    assert rows["inf"] == ('"-Infinity"', -math.inf, None)
    assert json.loads(rows["big"][0]) == 2**70
    assert rows["flag"] == ("true", None, None)
    assert rows["empty"] == ("{}", None, None) and rows["none"] == ("null", None, None)
    summary = {k: v for k, v in query(tmp_path, "SELECT key, value FROM run_summary")}
    assert set(summary) == {"acc", "image", "_wandb.runtime"}
    assert json.loads(summary["image"]) == SUMMARY["image"]


def test_metadata_reexport_replaces_rows(tmp_path):
    export_run(tmp_path, make_run(config={"a": 1, "b": 2}, state="running"))
    export_run(tmp_path, make_run(config={"a": 3}, state="finished"))
    assert query(tmp_path, "SELECT key, value FROM run_config") == [("a", "3")]
    assert query(tmp_path, "SELECT state FROM runs") == [("finished",)]
