"""`run-pipeline compact` as a user runs it: after an export, it packs the finished runs'
long form per project and the `metrics` view answers exactly as before; bad input is one line
and an exit code."""

from __future__ import annotations

import re

import duckdb

from ..warehouse.helpers import same_rows
from .helpers import emulator_env, error_line, run_cli

PROJECT = "rl-agents"
METRICS = "SELECT entity, project, run_id, step, key, value FROM metrics ORDER BY ALL"


def query(wh, sql):
    with duckdb.connect(str(wh / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_compact_packs_the_finished_runs_and_the_metrics_view_is_unchanged(emulator, tmp_path):
    wh = tmp_path / "wh"
    exported = run_cli(["export", "--entity", "demo", "--project", PROJECT, "--warehouse", str(wh), "--quiet",
                        "--workers", "1"], env=emulator_env(emulator))
    assert exported.returncode == 0, exported.stderr
    before = query(wh, METRICS)
    finished = {r for (r,) in query(wh, "SELECT run_id FROM runs WHERE state IN "
                                        "('finished', 'crashed', 'failed', 'killed', 'preempted')")}
    with_metrics = {r for (r,) in query(wh, "SELECT DISTINCT run_id FROM metrics")}
    packable = finished & with_metrics
    rows = sum(1 for r in before if r[2] in packable)
    assert len(packable) >= 2 and rows > 0

    done = run_cli(["compact", "--warehouse", str(wh), "--min-runs", "2"])
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"demo/{PROJECT}: {len(packable)} runs \({rows:,} metric rows\) packed into 1 file "
                        r"in \d+\.\d\ds\n", done.stdout), done.stdout
    assert re.fullmatch(r"packed \d+ runs into 1 file over 1 project in \d+\.\ds\n", done.stderr), done.stderr
    assert same_rows(query(wh, METRICS), before)  # NaN values too
    assert len(list((wh / "metrics_packs").rglob("*.parquet"))) == 1
    left = {p.parent.name.split("=", 1)[1] for p in (wh / "metrics").rglob("*.parquet")}
    assert left == with_metrics - packable

    again = run_cli(["compact", "--warehouse", str(wh), "--min-runs", "2"])
    assert again.returncode == 0, again.stderr
    assert re.fullmatch(rf"demo/{PROJECT}: nothing to pack in \d+\.\d\ds\n", again.stdout), again.stdout
    assert same_rows(query(wh, METRICS), before)  # NaN values too


def test_compact_refuses_what_it_cannot_do_in_one_line(emulator, tmp_path):
    missing = run_cli(["compact", "--warehouse", str(tmp_path / "nowhere")])
    assert missing.returncode == 8
    assert error_line(missing) == (f"run-pipeline: error: warehouse {tmp_path / 'nowhere'} (--warehouse) does not "
                                   "exist: nothing to compact")
    assert not (tmp_path / "nowhere").exists()

    wh = tmp_path / "wh"
    exported = run_cli(["export", "--entity", "demo", "--project", PROJECT, "--warehouse", str(wh), "--quiet",
                        "--workers", "1"], env=emulator_env(emulator))
    assert exported.returncode == 0, exported.stderr
    unknown = run_cli(["compact", "--warehouse", str(wh), "--project", f"{PROJECT},nope"])
    assert unknown.returncode == 4
    assert error_line(unknown) == (f"run-pipeline: error: warehouse {wh} holds no run of project 'nope' "
                                   f"(it holds: {PROJECT})")
    other = run_cli(["compact", "--warehouse", str(wh), "--entity", "someone"])
    assert other.returncode == 4
    assert error_line(other) == f"run-pipeline: error: warehouse {wh} holds no run of entity 'someone' (it holds: demo)"
    zero = run_cli(["compact", "--warehouse", str(wh), "--min-runs", "0"])
    assert zero.returncode == 2
    assert "--min-runs: must be at least 1, got 0" in error_line(zero)
    assert not (wh / "metrics_packs").exists()
