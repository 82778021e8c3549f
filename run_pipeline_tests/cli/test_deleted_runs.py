"""Runs deleted on the server (softly, as W&B does): an export keeps their rows and marks them
`deleted_at`; `run-pipeline prune` removes them, and their Dagster partitions on request."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import dagster as dg
import duckdb

from run_pipeline.defs.partitions import encode_partition_key
from run_pipeline.settings import RUNS_PARTITIONS
from run_pipeline.warehouse import RunKey

CLI = [sys.executable, "-m", "run_pipeline.cli"]
PROJECT = "rl-agents"


def run_cli(args, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RUN_PIPELINE_", "DAGSTER_"))}
    full_env.update(env or {})
    return subprocess.run(CLI + args, capture_output=True, text=True, env=full_env, timeout=300)


def export(emulator, wh):
    return run_cli(["export", "--entity", "demo", "--project", PROJECT, "--warehouse", str(wh), "--base-url",
                    emulator.base_url, "--quiet", "--workers", "1"], env={"WANDB_API_KEY": emulator.api_key})


def query(wh, sql):
    with duckdb.connect(str(wh / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_a_deleted_run_keeps_its_rows_marked_then_prune_removes_it(emulator, tmp_path):
    wh = tmp_path / "wh"
    assert export(emulator, wh).returncode == 0
    victim = sorted(r.run_id for r in emulator.store.project_runs("demo", PROJECT) if len(r.history))[0]
    rows = query(wh, f"SELECT count(*) FROM history WHERE run_id = '{victim}'")[0][0]
    assert rows > 0
    emulator.store.delete_run(emulator.store.require_run("demo", PROJECT, victim))

    again = export(emulator, wh)  # a complete listing without the run: it is checked, then marked
    assert again.returncode == 0, again.stderr
    marked = query(wh, "SELECT run_id, deleted_at FROM runs WHERE deleted_at IS NOT NULL")
    assert [r[0] for r in marked] == [victim]
    assert abs(marked[0][1] - datetime.now(timezone.utc).replace(tzinfo=None)) < timedelta(minutes=5)
    assert query(wh, f"SELECT count(*) FROM history WHERE run_id = '{victim}'")[0][0] == rows  # nothing lost
    assert query(wh, "SELECT count(*) FROM runs WHERE deleted_at IS NULL")[0][0] == \
        len(emulator.store.project_runs("demo", PROJECT))

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    keys = [encode_partition_key(RunKey("demo", PROJECT, run_id)) for run_id in (victim, "kept0001")]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(RUNS_PARTITIONS, keys)

    past = run_cli(["prune", "--deleted-before", "2000-01-01", "--warehouse", str(wh)])
    assert past.returncode == 0 and "removed 0 runs" in past.stderr
    dry = run_cli(["prune", "--deleted-before", "2999-01-01", "--warehouse", str(wh), "--dry-run"])
    assert dry.stdout.startswith(f"would remove demo/{PROJECT}/{victim}")
    assert query(wh, f"SELECT count(*) FROM history WHERE run_id = '{victim}'")[0][0] == rows
    done = run_cli(["prune", "--deleted-before", "2999-01-01", "--warehouse", str(wh), "--dagster-partitions"],
                   env={"DAGSTER_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"removed demo/{PROJECT}/{victim}\n"
    assert "removed 1 Dagster partitions" in done.stderr
    assert query(wh, f"SELECT count(*) FROM history WHERE run_id = '{victim}'")[0][0] == 0
    assert query(wh, "SELECT count(*) FROM runs WHERE deleted_at IS NOT NULL")[0][0] == 0
    assert not list((wh / "runs").rglob(f"run_id={victim}"))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions(RUNS_PARTITIONS) == [keys[1]]


def test_prune_refuses_a_time_it_cannot_read(tmp_path):
    bad = run_cli(["prune", "--deleted-before", "last week", "--warehouse", str(tmp_path)])
    assert bad.returncode == 2
    assert bad.stderr == ("run-pipeline: error: argument --deleted-before: 'last week' is not an ISO 8601 date or "
                          "time (e.g. 2026-11-01 or 2026-11-01T08:00:00Z) (see run-pipeline prune --help)\n")


def test_a_restored_run_loses_its_mark_and_exports_incrementally(emulator, tmp_path):
    wh = tmp_path / "wh"
    assert export(emulator, wh).returncode == 0
    victim = sorted(r.run_id for r in emulator.store.project_runs("demo", PROJECT) if len(r.history))[0]
    rows = query(wh, f"SELECT count(*) FROM history WHERE run_id = '{victim}'")[0][0]
    emulator.store.delete_run(emulator.store.require_run("demo", PROJECT, victim))
    assert export(emulator, wh).returncode == 0
    assert query(wh, f"SELECT deleted_at IS NOT NULL FROM runs WHERE run_id = '{victim}'") == [(True,)]
    # W&B restores it within its 7 days: same run, same history, nothing fetched twice.
    emulator.store.restore_run("demo", PROJECT, victim)
    done = export(emulator, wh)
    assert done.returncode == 0, done.stderr
    assert query(wh, "SELECT count(*) FROM runs WHERE deleted_at IS NOT NULL") == [(0,)]
    assert query(wh, f"SELECT count(*) FROM history WHERE run_id = '{victim}'") == [(rows,)]
    assert not list((wh / "run_deletions").rglob("*.parquet"))
