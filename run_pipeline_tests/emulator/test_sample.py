"""Tests for the sample dataset generator: determinism, format and the realism other tests rely on."""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from pathlib import Path

import pytest

from run_pipeline.emulator.sample import (
    PROJECT_NAMES,
    RESUMED_FIRST_STEP,
    STATES,
    SampleSummary,
    generate,
    generate_run,
)

ISO = "%Y-%m-%dT%H:%M:%SZ"
SYSTEM_KEYS = {"system.cpu", "system.memory", "system.disk", "system.gpu.0.gpu", "system.gpu.0.memory"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[SampleSummary, list[Path]]:
    root = tmp_path_factory.mktemp("sample")
    summary = generate(root)
    return summary, sorted(root.glob("*/*/*/run.json"))


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(run_dir: Path, name: str = "history.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


def _strict(text: str) -> object:
    def reject(token: str) -> None:
        raise ValueError(f"non-finite token {token}")

    return json.loads(text, parse_constant=reject)


def test_same_seed_is_byte_identical(tmp_path: Path) -> None:
    generate(tmp_path / "a", projects=2, runs=4, steps=80, seed=7)
    generate(tmp_path / "b", projects=2, runs=4, steps=80, seed=7)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a and a == b


def test_different_seeds_differ(tmp_path: Path) -> None:
    generate(tmp_path / "a", projects=1, runs=3, steps=50, seed=1)
    generate(tmp_path / "b", projects=1, runs=3, steps=50, seed=2)
    assert _tree(tmp_path / "a") != _tree(tmp_path / "b")


def test_regenerating_replaces_runs(tmp_path: Path) -> None:
    generate(tmp_path, projects=1, runs=2, steps=30)
    first = _tree(tmp_path)
    generate(tmp_path, projects=1, runs=2, steps=30)
    assert _tree(tmp_path) == first
    assert not list(tmp_path.rglob("*.partial"))


def test_default_dataset_size_and_layout(dataset: tuple[SampleSummary, list[Path]]) -> None:
    summary, metas = dataset
    assert summary.entity == "demo"
    assert summary.projects == list(PROJECT_NAMES)
    assert summary.runs == len(metas) == 36
    rows = sum(len((m.parent / "history.jsonl").read_text().splitlines()) for m in metas)
    assert rows == summary.history_rows
    assert 1_000 < rows < 50_000
    for meta in metas:
        assert meta.parts[-4:-2] == ("demo", meta.parts[-3])
        assert re.fullmatch(r"[a-z0-9]{8}", meta.parent.name)


def test_every_state_present_mostly_finished(dataset: tuple[SampleSummary, list[Path]]) -> None:
    states = [json.loads(m.read_text())["state"] for m in dataset[1]]
    assert set(states) == set(STATES)
    assert states.count("finished") > len(states) / 2


def test_history_lines_parse_with_increasing_steps(dataset: tuple[SampleSummary, list[Path]]) -> None:
    resumed = 0
    for meta in dataset[1]:
        rows = _rows(meta.parent)
        assert rows
        steps = [row["_step"] for row in rows]
        assert all(type(s) is int for s in steps)
        assert all(a < b for a, b in zip(steps, steps[1:]))
        assert all(a["_runtime"] < b["_runtime"] for a, b in zip(rows, rows[1:]))
        assert all(isinstance(r["_timestamp"], float) and "train/loss" in r for r in rows)
        if steps[0] == RESUMED_FIRST_STEP:
            resumed += 1
            # Gaps wider than a 1000-step page: readers must not stop at an empty page.
            assert max(b - a for a, b in zip(steps, steps[1:])) > 1000
        else:
            assert steps == list(range(len(rows)))
    assert resumed == 1


def test_value_kinds_present(dataset: tuple[SampleSummary, list[Path]]) -> None:
    seen: set[str] = set()
    for meta in dataset[1]:
        for row in _rows(meta.parent):
            for key, value in row.items():
                if isinstance(value, float) and math.isnan(value):
                    seen.add("nan")
                elif value in (math.inf, -math.inf) and isinstance(value, float):
                    seen.add("inf" if value > 0 else "-inf")
                elif key == "phase" and isinstance(value, str):
                    seen.add("string")
                elif key == "is_best" and isinstance(value, bool):
                    seen.add("bool")
                elif key == "epoch" and type(value) is int:
                    seen.add("int")
                elif key.startswith("eval/"):
                    seen.add("eval")
                elif isinstance(value, dict) and value.get("_type") == "image-file":
                    seen.add("media")
                    image = meta.parent / "files" / value["path"]
                    assert image.read_bytes().startswith(b"\x89PNG")
                    assert hashlib.sha256(image.read_bytes()).hexdigest() == value["sha256"]
    assert seen == {"nan", "inf", "-inf", "string", "bool", "int", "eval", "media"}


def test_run_json_fields(dataset: tuple[SampleSummary, list[Path]]) -> None:
    optional = set()
    for meta_path in dataset[1]:
        meta = _strict(meta_path.read_text())
        assert meta["state"] in STATES
        created = datetime.strptime(meta["created_at"], ISO)
        heartbeat = datetime.strptime(meta["heartbeat_at"], ISO)
        assert created <= heartbeat
        assert set(meta["user"]) == {"name", "username"}
        assert meta["read_only"] is False
        assert isinstance(meta["config"]["optimizer"], dict) and "lr" in meta["config"]
        assert set(meta["tags"]) <= {"baseline", "sweep", "ablation", "prod"}
        assert set(meta["system_metrics"]) == SYSTEM_KEYS
        rows = _rows(meta_path.parent)
        summary = meta["summary"]
        assert summary["_step"] == rows[-1]["_step"]
        assert summary["_runtime"] == rows[-1]["_runtime"]
        assert summary["train/loss"] == rows[-1]["train/loss"]
        optional |= {"notes", "group", "job_type", "description"} & set(meta)
    assert optional == {"notes", "group", "job_type", "description"}


def test_system_events(dataset: tuple[SampleSummary, list[Path]]) -> None:
    for meta_path in dataset[1]:
        events = _rows(meta_path.parent, "system.jsonl")
        assert 10 <= len(events) <= 300
        assert all(SYSTEM_KEYS | {"_timestamp", "_runtime"} == set(e) for e in events)
        last = {k: v for k, v in events[-1].items() if k.startswith("system.")}
        assert json.loads(meta_path.read_text())["system_metrics"] == last


def test_extra_projects_and_no_system_events(tmp_path: Path) -> None:
    summary = generate(tmp_path, projects=5, runs=1, steps=20, system_events=0)
    assert summary.projects[3:] == ["project-4", "project-5"]
    assert not list(tmp_path.rglob("system.jsonl"))
    assert all("system_metrics" not in json.loads(p.read_text()) for p in tmp_path.rglob("run.json"))


def test_generate_run_options(tmp_path: Path) -> None:
    run_dir = tmp_path / "e" / "p" / "abcd1234"
    info = generate_run(run_dir, state="killed", steps=30, metrics=2, first_step=100,
                        gap_every=10, gap_size=50, sparse_eval=False, system_events=3)
    steps = [row["_step"] for row in _rows(run_dir)]
    assert steps[:3] == [100, 101, 102] and steps[10] == 160 and steps[-1] == info.last_step == 229
    assert all(set(row) == {"_step", "_runtime", "_timestamp", "epoch", "train/loss", "train/acc"}
               for row in _rows(run_dir))
    assert len(_rows(run_dir, "system.jsonl")) == 3
    meta = json.loads((run_dir / "run.json").read_text())
    assert (meta["state"], info.run_id, info.history_rows) == ("killed", "abcd1234", 30)


@pytest.mark.parametrize("name", ["ABCD1234", "abc", "abcd-123"])
def test_generate_run_rejects_bad_run_ids(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        generate_run(tmp_path / name, steps=5)
