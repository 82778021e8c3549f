"""The README's first command on a fresh machine: `pip install -e .` with no extras in a new
virtual environment, then `run-pipeline demo` in an empty directory. Slow (a full install);
`.ci/run` does the same before the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_plain_install_then_demo_in_a_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["-e", str(REPO)], check=True, timeout=1800)
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "freeze"],
                            capture_output=True, text=True, check=True).stdout.lower()
    # The test-only packages stay out of a plain install: the demo must not need them.
    assert "pandas==" not in listed and "wandb==" not in listed and "pytest==" not in listed
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RUN_PIPELINE_", "PYTHONPATH"))}
    demo = subprocess.run([str(venv / "bin" / "run-pipeline"), "demo"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr
    assert "Traceback" not in demo.stderr
    assert "36 new runs, 0 updated, 0 already up to date" in " ".join(demo.stdout.split())
    query = subprocess.run([str(venv / "bin" / "run-pipeline"), "query", "--example", "best_run_per_project",
                            "--format", "csv"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert query.returncode == 0, query.stderr
    assert len(query.stdout.splitlines()) == 4  # header and one best run for each of the 3 projects
