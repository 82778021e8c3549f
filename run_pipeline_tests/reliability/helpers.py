"""What the reliability tests share: the CLI as a user runs it, the emulator's control endpoint,
the sample dataset's runs as files on disk, and an export through the client API."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from run_pipeline.client import Api, RetryPolicy
from run_pipeline.discovery import discover_runs
from run_pipeline.export import Exporter
from run_pipeline.warehouse import Warehouse

ENTITY = "demo"
PROJECTS = ("image-classification", "llm-finetune", "rl-agents")


def cli_command() -> list[str]:
    """The installed `run-pipeline` script of this interpreter's environment."""
    script = Path(sys.executable).parent / "run-pipeline"
    return [str(script)] if script.exists() else [sys.executable, "-m", "run_pipeline.cli"]


def run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 300,
            command: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run the CLI (or `command`, e.g. a wrapper that turns logging on) with a clean W&B
    environment plus `env`; stdout and stderr captured as text."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RUN_PIPELINE_"))}
    full_env.update({"HOME": "/nonexistent"}, **(env or {}))
    return subprocess.run((command or cli_command()) + args, capture_output=True, text=True, env=full_env,
                          timeout=timeout)


def control(base_url: str, api_key: str, action: str, body: dict) -> dict:
    """POST /_control/<action> on the emulator, as an operator would."""
    r = requests.post(f"{base_url}/_control/{action}", json=body, auth=("api", api_key), timeout=10)
    r.raise_for_status()
    return r.json()


def dataset_run_ids(dataset_dir: Path, project: str) -> list[str]:
    """Run ids of a project, read from the dataset on disk (not through the faulty server)."""
    root = Path(dataset_dir) / ENTITY / project
    return sorted(p.name for p in root.iterdir() if (p / "run.json").is_file())


def dataset_history_rows(dataset_dir: Path, projects, run_ids=None) -> int:
    total = 0
    for project in projects:
        for run_id in run_ids or dataset_run_ids(dataset_dir, project):
            path = Path(dataset_dir) / ENTITY / project / run_id / "history.jsonl"
            if path.exists():
                total += sum(1 for line in path.read_text().splitlines() if line.strip())
    return total


def export_with_api(base_url: str, api_key: str, root: Path, projects, *, retry: RetryPolicy,
                    run_ids=None, workers: int = 4) -> list[str]:
    """Discover the runs of `projects` (only `run_ids`, if given) and export each through
    `Exporter`, `workers` runs at once (as the CLI does), then refresh the catalog. Returns the
    run paths discovered; raises the first run's failure."""
    with Api(api_key=api_key, base_url=base_url, environ={}, timeout=(5.0, 30.0), retry=retry) as api:
        found = [f for p in projects for f in discover_runs(api, ENTITY, p, run_ids=run_ids)]
        exporter = Exporter(api, Warehouse(root))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(exporter.export_run, f.run) for f in found]:
                future.result()
        exporter.warehouse.refresh_catalog()
    return sorted(f.key.path for f in found)
