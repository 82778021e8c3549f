"""Ctrl-C during `run-pipeline export`, as a terminal sends it (SIGINT to the whole process
group): the runs in flight are abandoned with nothing of them visible, the catalog stays
valid, one line says how to resume, exit 130; running the command again completes it."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading

import duckdb
import pytest

from .helpers import CLI, clean_env, disk_counts, emulator_env, run_cli


def _foreground_signals() -> None:
    """A command run from a terminal starts with Ctrl-C's SIGINT at its default action; one
    started in the background by a shell without job control (a CI script's `cmd &`) inherits
    it ignored, and would never see the Ctrl-C this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def visible(wh):
    """{run_id: history rows} for every run the views show, and the staged files left behind."""
    con = duckdb.connect(str(wh / "warehouse.duckdb"), read_only=True)
    try:
        runs = {r for (r,) in con.execute("SELECT run_id FROM runs WHERE project = 'rl-agents'").fetchall()}
        rows = dict(con.execute("SELECT run_id, count(*) FROM history WHERE project = 'rl-agents' "
                                "GROUP BY 1").fetchall())
    finally:
        con.close()
    staged = [p for p in (wh / "_staging").rglob("*") if p.is_file() and "locks" not in p.parts]
    return {r: rows.get(r, 0) for r in runs}, staged


@pytest.mark.parametrize("workers", ["1", "4", "2"], ids=["main-thread", "threads", "processes"])
def test_ctrl_c_abandons_runs_in_flight_and_a_rerun_resumes(emulator, tmp_path, workers):
    # 12 runs: one worker exports in the main thread, 4 in threads, 2 in worker processes.
    env = emulator_env(emulator)
    wh = tmp_path / "wh"
    # A catalog exists before the interrupted export: it must stay valid.
    first = run_cli(["export", "--entity", "demo", "--project", "llm-finetune", "--warehouse", str(wh), "--quiet"],
                    env=env)
    assert first.returncode == 0, first.stderr
    # Every history download and page now takes a second, so runs are in flight when Ctrl-C comes.
    emulator.set_faults(rates={"slow": 1.0}, paths=["/storage/"], slow_seconds=1.0)
    proc = subprocess.Popen(CLI + ["export", "--entity", "demo", "--project", "rl-agents", "--warehouse", str(wh),
                                   "--workers", workers], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env(env), start_new_session=True, preexec_fn=_foreground_signals)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)
    reader.start()
    seen = []
    while not any(line.startswith("[1/12]") for line in seen):
        seen.append(lines.get(timeout=120))
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    assert proc.wait(timeout=120) == 130
    emulator.clear_faults()
    reader.join(timeout=30)
    stderr = "".join(seen + list(lines.queue))
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    last = stderr.splitlines()[-1]
    assert last.startswith("run-pipeline: error: interrupted: ") and last.endswith(
        "runs exported, the runs in flight abandoned (nothing of them is visible); run the same command again "
        "to resume"), last
    counts = disk_counts(emulator.dataset_dir, "rl-agents")
    shown, staged = visible(wh)
    assert 1 <= len(shown) < 12
    assert shown == {r: counts[r] for r in shown}  # every visible run is whole
    assert staged == []
    again = run_cli(["export", "--entity", "demo", "--project", "rl-agents", "--warehouse", str(wh), "--quiet"],
                    env=env)
    assert again.returncode == 0, again.stderr
    assert visible(wh) == (counts, [])
