"""Deterministic generator of W&B-like run datasets in the emulator's on-disk format
(``<root>/<entity>/<project>/<run_id>/{run.json,history.jsonl,system.jsonl,files/}``)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# A fixed origin keeps output independent of the wall clock.
BASE_TIME = datetime(2026, 11, 1, tzinfo=UTC)
STATES = ("running", "finished", "crashed", "failed", "killed")
PROJECT_NAMES = ("image-classification", "llm-finetune", "rl-agents")
TAGS = ("baseline", "sweep", "ablation", "prod")
USERS = (
    {"name": "Ada Lovelace", "username": "ada"},
    {"name": "Alan Turing", "username": "alan"},
    {"name": "Grace Hopper", "username": "grace"},
)
NAMED_METRICS = ("train/loss", "train/acc", "train/lr", "train/grad_norm")
# First step of the resumed run in the default dataset: far from 0 and followed by gaps wider
# than a 1000-step history page, so a reader must not stop at the first empty page.
RESUMED_FIRST_STEP = 61010
RUN_ID_RE = re.compile(r"[a-z0-9]{8}")

_STATE_WEIGHTS = {"finished": 70, "running": 10, "crashed": 7, "failed": 7, "killed": 6}
_ADJECTIVES = ("crimson", "quiet", "lucky", "frosty", "golden", "misty", "brisk", "silent")
_NOUNS = ("river", "forest", "comet", "meadow", "falcon", "harbor", "lantern", "glacier")
_NOTES = ("Try a longer warmup.", "Baseline for the Q4 report.", "Lower lr after divergence.")
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
# Compact separators: history files are the bulk of the bytes written.
_encode_row = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True)
class SampleSummary:
    root: Path
    entity: str
    projects: list[str]
    runs: int
    history_rows: int


@dataclass(frozen=True)
class GeneratedRun:
    run_dir: Path
    run_id: str
    state: str
    history_rows: int
    first_step: int
    last_step: int
    runtime: float


def generate(
    root: str | os.PathLike[str],
    *,
    entity: str = "demo",
    projects: int = 3,
    runs: int = 12,
    steps: int = 500,
    metrics: int = 8,
    seed: int = 0,
    system_events: int | None = None,
) -> SampleSummary:
    """Write ``projects`` projects of ``runs`` runs each; regenerating replaces those runs.

    ``steps`` is the longest run; others are shorter. ``system_events`` of None sizes
    system.jsonl from each run's runtime, 0 leaves it out.
    """
    if projects < 1 or runs < 1 or steps < 1 or metrics < 1:
        raise ValueError("projects, runs, steps and metrics must be at least 1")
    rng = random.Random(f"sample:{seed}")
    names = [PROJECT_NAMES[i] if i < len(PROJECT_NAMES) else f"project-{i + 1}" for i in range(projects)]
    states = _assign_states(rng, projects * runs)
    min_steps = min(steps, 20)
    total_rows = 0
    for p, project in enumerate(names):
        seen: set[str] = set()
        seconds_per_step = rng.uniform(0.5, 4.0)
        for r in range(runs):
            k = p * runs + r
            run_rng = random.Random(f"sample:{seed}:{project}:{r}")
            run_id = new_run_id(run_rng, seen)
            # Run 0 carries every feature so a tiny dataset still exercises them all.
            showcase = k == 0
            resumed = k == 1
            n = steps if showcase else run_rng.randint(min_steps, steps)
            created = BASE_TIME + timedelta(seconds=run_rng.randrange(28 * 86400))
            meta: dict[str, Any] = {
                "display_name": f"{run_rng.choice(_ADJECTIVES)}-{run_rng.choice(_NOUNS)}-{k + 1}",
                "tags": sorted(run_rng.sample(TAGS, run_rng.randint(0, 3))),
                "user": dict(run_rng.choice(USERS)),
            }
            if showcase or run_rng.random() < 0.3:
                meta["notes"] = run_rng.choice(_NOTES)
            if showcase or run_rng.random() < 0.5:
                meta["group"] = f"{project}-{run_rng.choice(('baseline', 'sweep-1', 'sweep-2'))}"
                meta["job_type"] = run_rng.choice(("train", "train", "eval"))
            if run_rng.random() < 0.2:
                meta["description"] = f"{meta['display_name']} on {project}"
            info = generate_run(
                Path(root) / entity / project / run_id,
                state=states[k],
                steps=n,
                metrics=metrics,
                seed=run_rng.randrange(2**32),
                first_step=RESUMED_FIRST_STEP if resumed else 0,
                gap_every=max(1, n // 4) if resumed else 0,
                non_finite=showcase or run_rng.random() < 0.25,
                extras=showcase or run_rng.random() < 0.5,
                media=showcase or run_rng.random() < 0.2,
                files=showcase or run_rng.random() < 0.4,
                system_events=system_events,
                created_at=created,
                seconds_per_step=seconds_per_step * run_rng.uniform(0.8, 1.25),
                metadata=meta,
            )
            total_rows += info.history_rows
    return SampleSummary(Path(root), entity, names, projects * runs, total_rows)


def generate_run(
    run_dir: str | os.PathLike[str],
    *,
    state: str = "finished",
    steps: int = 500,
    metrics: int = 8,
    seed: int = 0,
    first_step: int = 0,
    gap_every: int = 0,
    gap_size: int = 2500,
    sparse_eval: bool = True,
    non_finite: bool = False,
    extras: bool = False,
    media: bool = False,
    files: bool = False,
    system_events: int | None = None,
    created_at: datetime = BASE_TIME,
    seconds_per_step: float = 1.0,
    metadata: Mapping[str, Any] | None = None,
) -> GeneratedRun:
    """Write one run of ``steps`` history rows, streaming them; the run id is ``run_dir``'s name.

    Steps start at ``first_step`` and jump by ``gap_size`` after every ``gap_every`` rows
    (0: no gaps). ``metadata`` adds to or overrides run.json keys. The run appears atomically
    and replaces any run already at ``run_dir``.
    """
    run_dir = Path(run_dir)
    if not RUN_ID_RE.fullmatch(run_dir.name):
        raise ValueError(f"run directory name must be 8 lowercase alphanumerics: {run_dir.name!r}")
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}: {state!r}")
    if steps < 1 or metrics < 1:
        raise ValueError("steps and metrics must be at least 1")
    if created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    rng = random.Random(f"run:{seed}")
    tmp = run_dir.parent / f".{run_dir.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "files").mkdir(parents=True)
    start = created_at.timestamp()

    config = _config(rng)
    history = _write_history(
        tmp, rng, steps=steps, metrics=metrics, first_step=first_step, gap_every=gap_every,
        gap_size=gap_size, sparse_eval=sparse_eval, non_finite=non_finite, extras=extras,
        media=media, start=start, seconds_per_step=seconds_per_step, peak_lr=config["lr"],
        epochs=config["epochs"],
    )
    summary, runtime, log_lines = history
    system_metrics = _write_system(tmp, rng, runtime, start, system_events)
    if files:
        _write_files(tmp / "files", config, log_lines, state, created_at)

    meta: dict[str, Any] = {
        "display_name": run_dir.name,
        "state": state,
        "created_at": _iso(created_at),
        "heartbeat_at": _iso(created_at + timedelta(seconds=runtime)),
        "config": config,
        "summary": summary,
        "tags": [],
        "user": dict(USERS[0]),
        "commit": "%040x" % rng.getrandbits(160),
        "read_only": False,
    }
    if system_metrics:
        meta["system_metrics"] = system_metrics
    meta.update(metadata or {})
    # Non-finite values are kept out of summaries, so run.json stays strict JSON.
    (tmp / "run.json").write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n")

    if run_dir.exists():
        shutil.rmtree(run_dir)
    tmp.rename(run_dir)
    return GeneratedRun(run_dir, run_dir.name, state, steps, first_step, summary["_step"], runtime)


def _write_history(tmp: Path, rng: random.Random, *, steps: int, metrics: int, first_step: int,
                   gap_every: int, gap_size: int, sparse_eval: bool, non_finite: bool,
                   extras: bool, media: bool, start: float, seconds_per_step: float,
                   peak_lr: float, epochs: int) -> tuple[dict[str, Any], float, list[str]]:
    """Stream rows to history.jsonl; return the summary, the runtime and a few log lines."""
    rnd, exp, cos = rng.random, math.exp, math.cos
    loss0, loss_floor = rng.uniform(1.5, 3.0), rng.uniform(0.05, 0.4)
    acc_max, grad0 = rng.uniform(0.75, 0.98), rng.uniform(2.0, 8.0)
    speed = rng.uniform(3.0, 6.0)
    warmup = max(1, steps // 20)
    per_epoch = -(-steps // epochs)
    eval_every = max(1, steps // 10) if sparse_eval else 0
    extra = [(f"train/metric_{j}", rng.uniform(-1, 2), rng.uniform(0.5, 5), rng.uniform(0.05, 0.3))
             for j in range(len(NAMED_METRICS), metrics)]
    names = NAMED_METRICS[:metrics]
    # Overflows land strictly inside the run so the last value of every key is finite.
    bad = sorted(rng.sample(range(1, steps - 1), min(3, steps - 2))) if non_finite and steps > 2 else []
    shots = {steps // 4, steps // 2, (3 * steps) // 4} if media else set()
    log_at = max(1, steps // 8)
    summary: dict[str, Any] = {}
    log_lines: list[str] = []
    best_acc = -1.0
    runtime = 0.0
    step = first_step
    with open(tmp / "history.jsonl", "w", encoding="utf-8", buffering=1 << 20) as out:
        for i in range(steps):
            if i:
                step += 1 + (gap_size if gap_every and i % gap_every == 0 else 0)
            t = i / steps
            decay = exp(-speed * t)
            runtime += seconds_per_step * (0.9 + 0.2 * rnd())
            rt = round(runtime, 3)
            row: dict[str, Any] = {"_step": step, "_runtime": rt, "_timestamp": round(start + rt, 3),
                                   "epoch": i // per_epoch}
            loss = loss0 * decay + loss_floor + 0.05 * (rnd() - 0.5)
            acc = min(1.0, max(0.0, acc_max * (1 - decay) + 0.03 * (rnd() - 0.5)))
            lr = peak_lr * (i + 1) / warmup if i < warmup else peak_lr * 0.5 * (1 + cos(math.pi * t))
            values = (round(loss, 5), round(acc, 5), round(lr, 8), round(grad0 * decay + 0.5 * rnd(), 5))
            for name, value in zip(names, values):
                row[name] = value
            for name, a, b, amp in extra:
                row[name] = round(a * decay + b + amp * (rnd() - 0.5), 5)
            if bad and i in bad:
                # A grad-norm overflow, the NaN loss it causes, and one underflowed log metric.
                if metrics > 3:
                    row["train/grad_norm"] = math.inf
                if i == bad[0]:
                    row["train/loss"] = math.nan
                elif i == bad[-1] and metrics > 4:
                    row["train/metric_4"] = -math.inf
            if extras:
                row["phase"] = "warmup" if i < warmup else "train"
            if eval_every and (i + 1) % eval_every == 0:
                eval_acc = round(min(1.0, max(0.0, acc - 0.02 - 0.03 * rnd())), 5)
                row["eval/loss"] = round(loss + 0.05 + 0.1 * rnd(), 5)
                row["eval/acc"] = eval_acc
                if extras:
                    row["is_best"] = eval_acc > best_acc
                best_acc = max(best_acc, eval_acc)
            if i in shots:
                row["examples"] = _write_image(tmp / "files", rng, step)
            out.write(_encode_row(row))
            out.write("\n")
            summary.update(row)
            if i % log_at == 0:
                log_lines.append(f"epoch {row['epoch']} step {step} loss {values[0]:.4f}")
    if best_acc >= 0:
        summary["best/eval_acc"] = best_acc
    summary["_wandb"] = {"runtime": int(runtime)}
    return summary, summary["_runtime"], log_lines


def _write_system(tmp: Path, rng: random.Random, runtime: float, start: float,
                  events: int | None) -> dict[str, float]:
    """Write system.jsonl (none when ``events`` is 0) and return the latest stats."""
    if events is None:
        events = min(300, max(10, int(runtime / 15)))
    if events <= 0:
        return {}
    stats = {"system.cpu": rng.uniform(5, 40), "system.memory": rng.uniform(20, 60),
             "system.disk": rng.uniform(10, 70), "system.gpu.0.gpu": rng.uniform(60, 95),
             "system.gpu.0.memory": rng.uniform(30, 80)}
    interval = runtime / events
    latest: dict[str, float] = {}
    with open(tmp / "system.jsonl", "w", encoding="utf-8") as out:
        for j in range(events):
            rt = round((j + 1) * interval, 3)
            for key, value in stats.items():
                # Disk only fills up; the others wander around their level.
                step = rng.uniform(0, 0.2) if key == "system.disk" else rng.uniform(-3, 3)
                stats[key] = min(100.0, max(0.0, value + step))
            latest = {key: round(value, 1) for key, value in stats.items()}
            out.write(_encode_row({"_timestamp": round(start + rt, 3), "_runtime": rt, **latest}))
            out.write("\n")
    return latest


def _write_files(files: Path, config: dict[str, Any], log_lines: list[str], state: str,
                 created_at: datetime) -> None:
    # wandb writes config.yaml as {key: {desc, value}}; JSON flow values are valid YAML.
    lines = ["wandb_version: 1", ""]
    for key, value in config.items():
        lines += [f"{key}:", "  desc: null", f"  value: {json.dumps(value)}"]
    (files / "config.yaml").write_text("\n".join(lines) + "\n")
    ending = {
        "finished": "Training finished.",
        "running": "",
        "crashed": "Traceback (most recent call last):\nRuntimeError: CUDA error: an illegal memory access",
        "failed": "Traceback (most recent call last):\nValueError: loss is NaN",
        "killed": "Received SIGTERM, shutting down.",
    }[state]
    (files / "output.log").write_text("\n".join([*log_lines, ending]).rstrip("\n") + "\n")
    host = {"os": "Linux-6.1.0-x86_64-with-glibc2.36", "python": "3.11.9", "program": "train.py",
            "host": "gpu-node-1", "gpu": "NVIDIA A100-SXM4-40GB", "gpu_count": 1,
            "startedAt": _iso(created_at)}
    (files / "wandb-metadata.json").write_text(json.dumps(host, indent=2) + "\n")


def _write_image(files: Path, rng: random.Random, step: int) -> dict[str, Any]:
    """Write a 32x32 grey PNG under files/media/images and return its wandb media reference."""
    size = 32
    raw = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(size)) for _ in range(size))
    # A stored (uncompressed) deflate block: zlib builds differ in compressed bytes, this does not.
    idat = b"\x78\x01\x01" + struct.pack("<HH", len(raw), len(raw) ^ 0xFFFF) + raw
    idat += struct.pack(">I", zlib.adler32(raw))
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    sha = hashlib.sha256(png).hexdigest()
    path = f"media/images/examples_{step}_{sha[:20]}.png"
    (files / path).parent.mkdir(parents=True, exist_ok=True)
    (files / path).write_bytes(png)
    return {"_type": "image-file", "path": path, "width": size, "height": size,
            "format": "png", "sha256": sha, "size": len(png)}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _config(rng: random.Random) -> dict[str, Any]:
    return {
        "lr": rng.choice((0.0001, 0.0003, 0.001, 0.003)),
        "batch_size": rng.choice((32, 64, 128, 256)),
        "epochs": rng.randint(3, 10),
        "optimizer": {"name": rng.choice(("adam", "adamw", "sgd")), "betas": [0.9, 0.999],
                      "weight_decay": rng.choice((0.0, 0.01, 0.1))},
        "model": {"layers": rng.choice((6, 12, 24)), "dropout": rng.choice((0.0, 0.1, 0.2)),
                  "hidden": rng.choice((256, 512, 768))},
        "seed": rng.randrange(100),
    }


def _assign_states(rng: random.Random, total: int) -> list[str]:
    """Mostly finished, with every other state at least once when there is room."""
    states = rng.choices(list(_STATE_WEIGHTS), weights=list(_STATE_WEIGHTS.values()), k=total)
    states[0] = "finished"
    for state in STATES:
        spare = [i for i, s in enumerate(states) if s == "finished" and i > 0]
        if state not in states and spare:
            states[rng.choice(spare)] = state
    return states


def new_run_id(rng: random.Random, seen: set[str]) -> str:
    """An 8-character run id not in `seen` (added to it)."""
    while True:
        run_id = "".join(rng.choice(_ALNUM) for _ in range(8))
        if run_id not in seen:
            seen.add(run_id)
            return run_id


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
