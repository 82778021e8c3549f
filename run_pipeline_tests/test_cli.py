"""`run-pipeline demo | export | query`: what a user types, what they get, and the exit codes
scripts rely on."""

import json
import os
import re
from pathlib import Path
import socket
import subprocess
import sys

import duckdb
import pytest

CLI = [sys.executable, "-m", "run_pipeline.cli"]


def run_cli(args, env=None, timeout=300):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RUN_PIPELINE_"))}
    full_env.update(env or {})
    return subprocess.run(CLI + args, capture_output=True, text=True, env=full_env, timeout=timeout)


def disk_counts(dataset, project):
    out = {}
    for run_dir in sorted((dataset / "demo" / project).iterdir()):
        if run_dir.is_dir():
            hist = run_dir / "history.jsonl"
            out[run_dir.name] = sum(1 for line in hist.read_text().splitlines() if line.strip()) if hist.exists() else 0
    return out


def test_demo_exports_everything_and_reruns_harmlessly(tmp_path):
    wh = tmp_path / "wh"
    first = run_cli(["demo", "--warehouse", str(wh), "--quiet"])
    assert first.returncode == 0, first.stderr
    assert "exported 36 runs (9,688 new history rows)" in first.stdout
    assert "runs by state: finished 25, running 5, failed 3, crashed 2, killed 1" in first.stdout
    assert "Best run of every project" in first.stdout
    second = run_cli(["demo", "--warehouse", str(wh), "--quiet"])
    assert second.returncode == 0, second.stderr
    assert "exported 36 runs (0 new history rows)" in second.stdout
    con = duckdb.connect(str(wh / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM history").fetchone()[0] == 9688
    assert con.execute("SELECT count(DISTINCT run_id) FROM runs").fetchone()[0] == 36
    # The README's example SQL runs and agrees with the tested, parameterised versions.
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("### Example queries"):readme.index("## Scaling out")]
    best, curve, mean10, onekey = re.findall(r"```sql\n(.*?)```", section, re.S)
    from run_pipeline.warehouse import EXAMPLES

    def example(name, **params):
        return con.execute(EXAMPLES[name][1], params).fetchall()

    assert sorted(con.execute(best).fetchall()) == sorted(example("best_run_per_project", metric="eval/acc", maximize=True))
    assert con.execute(curve).fetchall() == example("metric_curve", entity="demo", project="llm-finetune",
                                                   run_id="98kbembp", metric="train/loss")
    assert [r[:4] for r in con.execute(mean10).fetchall()] == [r[:4] for r in example("mean_over_last_10_percent", metric="train/loss")]
    assert [r[:5] for r in con.execute(onekey).fetchall()] == [r[:5] for r in example("config_differs_in_one_key")]


def _env(emulator):
    return {"WANDB_BASE_URL": emulator.base_url, "WANDB_API_KEY": emulator.api_key, "HOME": "/nonexistent"}


def test_export_filters_progress_and_query(emulator, tmp_path):
    wh = tmp_path / "wh"
    counts = disk_counts(emulator.dataset_dir, "llm-finetune")
    some = sorted(counts)[:3]
    r = run_cli(["export", "--entity", "demo", "--project", "llm-finetune", "--warehouse", str(wh),
                 "--runs", ",".join(some), "--workers", "2"], env=_env(emulator))
    assert r.returncode == 0, r.stderr
    # Not a terminal: plain progress lines, one per run.
    assert r.stderr.count("[") >= 3 and "3 runs to export" in r.stderr
    q = run_cli(["query", "--warehouse", str(wh), "--format", "json",
                 "SELECT run_id, count(*) AS n FROM history GROUP BY run_id ORDER BY run_id"])
    assert q.returncode == 0, q.stderr
    assert {row["run_id"]: row["n"] for row in json.loads(q.stdout)} == {k: counts[k] for k in some if counts[k]}
    csv = run_cli(["query", "--warehouse", str(wh), "--format", "csv", "SELECT count(*) AS runs FROM runs"])
    assert csv.stdout.splitlines() == ["runs", "3"]
    table = run_cli(["query", "--warehouse", str(wh), "SELECT count(*) AS runs FROM runs"])
    assert table.stdout.splitlines()[0].strip() == "runs" and "(1 row)" in table.stdout
    bad = run_cli(["query", "--warehouse", str(wh), "SELECT nope"])
    assert bad.returncode == 7 and "query failed" in bad.stderr


def test_export_state_filter_and_incremental(emulator, tmp_path):
    wh = tmp_path / "wh"
    env = _env(emulator)
    r = run_cli(["export", "--entity", "demo", "--project", "rl-agents", "--warehouse", str(wh), "--state", "running",
                 "--quiet"], env=env)
    assert r.returncode == 0 and r.stderr == ""
    con = duckdb.connect(str(wh / "warehouse.duckdb"), read_only=True)
    states = {s for (s,) in con.execute("SELECT DISTINCT state FROM runs").fetchall()}
    con.close()
    assert states == {"running"}
    run_id = next(rid for rid, m in ((p.name, json.loads((p / "run.json").read_text()))
                                     for p in (emulator.dataset_dir / "demo" / "rl-agents").iterdir()) if m["state"] == "running")
    last = emulator.store.get_run("demo", "rl-agents", run_id).history.last_step
    emulator.store.append_history("demo", "rl-agents", run_id, [{"_step": last + 1, "train/loss": 0.01}])
    again = run_cli(["export", "--entity", "demo", "--project", "rl-agents", "--warehouse", str(wh),
                     "--runs", run_id], env=env)
    assert again.returncode == 0 and "1 new history rows" in again.stderr


def test_export_exit_codes(emulator, tmp_path):
    wh = str(tmp_path / "wh")
    bad_key = run_cli(["export", "--entity", "demo", "--project", "rl-agents", "--warehouse", wh],
                      env={"WANDB_BASE_URL": emulator.base_url, "WANDB_API_KEY": "z" * 40})
    assert bad_key.returncode == 3 and "authentication failed" in bad_key.stderr
    assert "z" * 40 not in bad_key.stderr + bad_key.stdout
    unknown = run_cli(["export", "--entity", "demo", "--project", "nope", "--warehouse", wh], env=_env(emulator))
    assert unknown.returncode == 4 and "project demo/nope not found" in unknown.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    unreachable = run_cli(["export", "--entity", "demo", "--project", "rl-agents", "--warehouse", wh, "--timeout", "2",
                           "--retry-budget", "3"],
                          env={"WANDB_BASE_URL": dead, "WANDB_API_KEY": "a" * 40}, timeout=180)
    assert unreachable.returncode == 5 and "unreachable" in unreachable.stderr
    no_project = run_cli(["export", "--entity", "demo", "--warehouse", wh], env=_env(emulator))
    assert no_project.returncode == 2 and "--project" in no_project.stderr
    missing = run_cli(["query", "--warehouse", str(tmp_path / "none"), "SELECT 1"])
    assert missing.returncode == 4 and "no warehouse catalog" in missing.stderr


def test_export_partial_failure_names_runs_and_resumes(emulator, tmp_path):
    wh = str(tmp_path / "wh")
    env = _env(emulator)
    # One run's history file vanishes after the server indexed it: the server lists the run but
    # fails its history queries, so that run alone fails.
    run_dir = next(p for p in sorted((emulator.dataset_dir / "demo" / "rl-agents").iterdir()) if p.is_dir())
    run = emulator.store.get_run("demo", "rl-agents", run_dir.name)
    assert len(run.history) > 0
    saved = run.history.path.read_bytes()
    run.history.path.unlink()
    r = run_cli(["export", "--entity", "demo", "--project", "rl-agents", "--warehouse", wh, "--quiet"], env=env)
    assert r.returncode == 6, r.stderr
    assert f"1 of 12 runs failed" in r.stderr and f"demo/rl-agents/{run_dir.name}" in r.stderr
    assert "re-running resumes" in r.stderr
    con = duckdb.connect(f"{wh}/warehouse.duckdb", read_only=True)
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 11
    con.close()
    run.history.path.write_bytes(saved)
    again = run_cli(["export", "--entity", "demo", "--project", "rl-agents", "--warehouse", wh, "--quiet"], env=env)
    assert again.returncode == 0, again.stderr
    con = duckdb.connect(f"{wh}/warehouse.duckdb", read_only=True)
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 12
    assert dict(con.execute("SELECT run_id, count(*) FROM history GROUP BY 1").fetchall()) == {
        k: v for k, v in disk_counts(emulator.dataset_dir, "rl-agents").items() if v}


@pytest.mark.parametrize("cmd", ["demo", "export", "query", "emulator", "sample-data"])
def test_help(cmd):
    r = run_cli([cmd, "--help"])
    assert r.returncode == 0 and "usage: run-pipeline" in r.stdout
