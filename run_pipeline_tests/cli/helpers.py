"""Drive `run-pipeline` as a user does: the installed command in a subprocess, a clean
environment (no W&B or run_pipeline variables, no ~/.netrc), and a working directory of the
test's own, so no `.env` but the test's is read."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("run-pipeline")
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "run_pipeline.cli"]


def clean_env(extra: dict | None = None, home: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RUN_PIPELINE_", "AWS_"))}
    env["HOME"] = str(home) if home else "/nonexistent"
    env["COLUMNS"] = "100"
    env.update(extra or {})
    return env


def run_cli(args, env=None, cwd=None, timeout=300, stdin=None) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=clean_env(env), cwd=cwd,
                          timeout=timeout, input=stdin)


def emulator_env(emulator) -> dict:
    return {"WANDB_BASE_URL": emulator.base_url, "WANDB_API_KEY": emulator.api_key}


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one line a failed command prints (no traceback, nothing else)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def disk_counts(dataset, project) -> dict[str, int]:
    """History rows of each run of a `demo` project, read from the emulator's dataset."""
    out = {}
    for run_dir in sorted((dataset / "demo" / project).iterdir()):
        if run_dir.is_dir():
            hist = run_dir / "history.jsonl"
            out[run_dir.name] = sum(1 for line in hist.read_text().splitlines() if line.strip()) if hist.exists() else 0
    return out
