"""Client-test fixtures: an `Api` bound to the session emulator, and the dataset it serves."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from run_pipeline.client import Api, RetryPolicy


@dataclass
class DatasetRun:
    entity: str
    project: str
    run_id: str
    dir: Path
    meta: dict[str, Any]

    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}/{self.run_id}"

    def history(self) -> list[dict]:
        """history.jsonl rows in step order (a stable sort keeps repeated steps in log order)."""
        return sorted(read_jsonl(self.dir / "history.jsonl"), key=lambda r: r["_step"])

    def system(self) -> list[dict]:
        return read_jsonl(self.dir / "system.jsonl")


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def dataset_runs(root: Path) -> list[DatasetRun]:
    out = []
    for run_json in sorted(root.glob("*/*/*/run.json")):
        run_dir = run_json.parent
        entity, project, run_id = run_dir.parts[-3:]
        if any(p.startswith((".", "_")) for p in (entity, project, run_id)):
            continue
        out.append(DatasetRun(entity, project, run_id, run_dir, json.loads(run_json.read_text())))
    return out


def norm(value: Any) -> Any:
    """Comparable form: NaN equals NaN, 1 equals 1.0 (Python ==), containers recursively."""
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items()}
    if isinstance(value, list):
        return [norm(v) for v in value]
    return value


@pytest.fixture
def api(emulator) -> Api:
    client = Api(api_key=emulator.api_key, base_url=emulator.base_url, environ={},
                 timeout=(5.0, 30.0), retry=RetryPolicy(budget=30.0, backoff_base=0.1))
    yield client
    client.close()


@pytest.fixture
def dataset(emulator) -> list[DatasetRun]:
    return dataset_runs(Path(emulator.dataset_dir))


@pytest.fixture
def showcase(dataset) -> DatasetRun:
    """The run with every feature (NaN/Infinity, media, files, extras): the longest history."""
    return max(dataset, key=lambda r: (r.dir / "history.jsonl").stat().st_size)


@pytest.fixture
def late_start(dataset) -> DatasetRun:
    """The resumed run whose history starts at step 61010."""
    for run in dataset:
        with open(run.dir / "history.jsonl") as fh:
            first = json.loads(fh.readline())
        if first["_step"] == 61010:
            return run
    raise AssertionError("sample dataset has no run starting at step 61010")


def wait_for_parquet(run, timeout: float = 15.0) -> None:
    """Until the server lists the run's exported Parquet (a server that exports finished runs
    after a delay, as W&B does, serves them live until then)."""
    import time

    deadline = time.monotonic() + timeout
    while not run._history().plan().parquet_urls:
        assert time.monotonic() < deadline, f"{run.path} was never served as Parquet"
        time.sleep(0.2)
