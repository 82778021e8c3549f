"""Runs shaped like real projects rather than clean float metrics, in the emulator's on-disk
format: `messy` (one long run of every value shape W&B history holds) and `wide` (thousands of
distinct keys, a few dozen per row, as per-layer sweeps log).

`messy` carries, deterministically: media objects with sha256 hex digests (images), histograms,
tables, nested dicts, a list column, a key holding both `200` and `"n/a"`, an integer counter
beyond 2**60, NaN/±Infinity, bools, strings (some with long digit runs), unicode, quote, dot and
slash keys, sparse eval keys, a key that appears only late and one that appears five times.
Within a key, nested values keep one key order and one type per leaf, so every shape has an
exact Parquet form (see `parquet_export.py`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from .sample import BASE_TIME, RUN_ID_RE, USERS, _config, _iso

#: Keys of the messy run that are neither scalar nor dense (documented for tests and README).
MESSY_KEYS = (
    "train/loss", "train/acc", "epoch", "global_tokens", "grad_norm", "phase", "lr", "métrica/精度",
    'say "hi"', "val.loss", "a/b/c", "topk", "optimizer", "status_code", "is_best", "eval/loss",
    "eval/acc", "examples", "weights", "predictions", "late/metric", "rare/event", "checkpoint",
)
WIDE_LAYERS, WIDE_METRICS, WIDE_PER_ROW = 400, ("grad_norm", "weight_norm", "act_mean", "act_std", "lr_scale"), 50
_encode_row = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True)
class ShapedRun:
    run_dir: Path
    run_id: str
    history_rows: int
    keys: int
    last_step: int


def _hex(rng: random.Random) -> str:
    return hashlib.sha256(rng.getrandbits(256).to_bytes(32, "big")).hexdigest()


def _messy_row(i: int, steps: int, rng: random.Random, start: float) -> dict[str, Any]:
    t = i / steps
    runtime = round(i * 0.5 + rng.random() * 0.1, 3)
    loss = 2.5 * math.exp(-4 * t) + 0.1 + 0.02 * (rng.random() - 0.5)
    row: dict[str, Any] = {
        "_step": i, "_runtime": runtime, "_timestamp": round(start + runtime, 3),
        "train/loss": round(loss, 6), "train/acc": round(min(1.0, 1 - loss / 3), 6),
        "epoch": i * 10 // steps,
        # A token counter past 2**60: 19 digits, still an int64.
        "global_tokens": 2**60 + i * 4096 + rng.randrange(4096),
        "grad_norm": round(3 * math.exp(-2 * t) + rng.random(), 5),
        "phase": "warmup" if t < 0.05 else "train",
        "lr": round(3e-4 * 0.5 * (1 + math.cos(math.pi * t)), 10),
        "métrica/精度": round(rng.random(), 5),
    }
    if i % 4001 == 17:
        row["grad_norm"] = math.nan
    elif i % 7919 == 5:
        row["grad_norm"] = math.inf
    elif i % 9973 == 3:
        row["grad_norm"] = -math.inf
    if i % 2 == 0:
        row['say "hi"'] = round(rng.random(), 4)
    if i % 10 == 0:
        row["val.loss"] = round(loss + 0.05, 6)
    if i % 5 == 0:
        row["a/b/c"] = round(rng.random(), 4)
        row["topk"] = [rng.randrange(1000) for _ in range(3)]
    if i % 20 == 0:
        row["optimizer"] = {"name": "adamw", "lr": row["lr"], "betas": {"b1": 0.9, "b2": 0.999},
                            "steps": i}
    if i % 50 == 0:
        row["status_code"] = "n/a" if i % 500 == 0 else 200
    if i % 100 == 0:
        edges = sorted(round(rng.gauss(0, 1), 4) for _ in range(33))
        row["weights"] = {"_type": "histogram", "bins": [float(e) for e in edges],
                          "values": [rng.randrange(500) for _ in range(32)]}
    if i % 250 == 0:
        sha = _hex(rng)
        row["examples"] = {"_type": "image-file", "path": f"media/images/examples_{i}_{sha[:20]}.png",
                           "width": 32, "height": 32, "format": "png", "sha256": sha,
                           "size": 1000 + rng.randrange(100)}
    if (i + 1) % 1000 == 0:
        row["eval/loss"] = round(loss + 0.1, 6)
        row["eval/acc"] = round(min(1.0, 1 - loss / 3) - 0.02, 6)
        row["is_best"] = rng.random() < 0.3
        sha = _hex(rng)
        row["predictions"] = {"_type": "table-file", "path": f"media/table/predictions_{i}_{sha[:20]}.table.json",
                              "sha256": sha, "size": 4000 + rng.randrange(1000), "ncols": 3, "nrows": 10}
        row["checkpoint"] = f"ckpt-{20261101000000000000 + i}"
    if t >= 0.75 and i % 10 == 0:
        row["late/metric"] = round(rng.random(), 5)
    if i in {steps // 7, steps // 3, steps // 2, (2 * steps) // 3, steps - 2}:
        row["rare/event"] = f"restart #{i}"
    return row


def _wide_row(i: int, rng: random.Random, start: float, keys: list[str]) -> dict[str, Any]:
    runtime = round(i * 0.5, 3)
    row: dict[str, Any] = {"_step": i, "_runtime": runtime, "_timestamp": round(start + runtime, 3)}
    block = i % (len(keys) // WIDE_PER_ROW)
    for key in keys[block * WIDE_PER_ROW:(block + 1) * WIDE_PER_ROW]:
        row[key] = round(rng.random(), 5)
    return row


def wide_keys() -> list[str]:
    return [f"layers/{layer:03d}/{metric}" for layer in range(WIDE_LAYERS) for metric in WIDE_METRICS]


def generate_shaped_run(run_dir: str | Path, *, shape: str, steps: int, seed: int = 0,
                        state: str = "finished") -> ShapedRun:
    """Write one run of `steps` rows of the given shape (`messy` or `wide`); the run id is
    `run_dir`'s name. The run appears atomically and replaces any run already there."""
    run_dir = Path(run_dir)
    if shape not in ("messy", "wide"):
        raise ValueError(f"shape must be 'messy' or 'wide', got {shape!r}")
    if not RUN_ID_RE.fullmatch(run_dir.name):
        raise ValueError(f"run directory name must be 8 lowercase alphanumerics: {run_dir.name!r}")
    if steps < 10:
        raise ValueError("steps must be at least 10")
    rng = random.Random(f"{shape}:{seed}")
    tmp = run_dir.parent / f".{run_dir.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "files").mkdir(parents=True)
    created = BASE_TIME + timedelta(days=rng.randrange(28))
    start = created.timestamp()
    keys = wide_keys() if shape == "wide" else []
    seen: set[str] = set()
    summary: dict[str, Any] = {}
    with open(tmp / "history.jsonl", "w", encoding="utf-8", buffering=1 << 20) as out:
        for i in range(steps):
            row = _messy_row(i, steps, rng, start) if shape == "messy" else _wide_row(i, rng, start, keys)
            out.write(_encode_row(row))
            out.write("\n")
            seen.update(row)
            summary.update(row)
    runtime = summary["_runtime"]
    # Non-finite values stay out of the summary, so run.json is strict JSON.
    summary = {k: v for k, v in summary.items() if not (isinstance(v, float) and not math.isfinite(v))}
    summary["_wandb"] = {"runtime": int(runtime)}
    meta = {"display_name": f"{shape}-{steps}", "state": state, "created_at": _iso(created),
            "heartbeat_at": _iso(created + timedelta(seconds=runtime)), "config": _config(rng),
            "summary": summary, "tags": [shape], "user": dict(USERS[0]), "commit": "%040x" % rng.getrandbits(160),
            "read_only": False}
    (tmp / "run.json").write_text(json.dumps(meta, indent=2, allow_nan=False, ensure_ascii=False) + "\n",
                                  encoding="utf-8")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    tmp.rename(run_dir)
    return ShapedRun(run_dir, run_dir.name, steps, len(seen), steps - 1)
