"""A hostile dataset in the emulator's on-disk format: metric keys, values, step sequences and
names that break naive exporters (quotes, dots, slashes, unicode, huge keys and rows,
non-finite and oversized numbers, nested values, out-of-order and repeated steps, SQL and
path metacharacters in names, a 5 MB config). `run-pipeline sample-data --hostile DIR`.

Names that cannot be directory names (containing `/`, starting with `.` or `_`, NUL) are not
representable in the dataset format; their percent-encoded or dotted look-alikes are used
instead (`%2E%2E%2F%2E%2E`, `x..%2F..%2Fetc`), and `UNREPRESENTABLE` lists what a client may still ask for.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from .sample import BASE_TIME, USERS, _iso

ENTITY = "hostile"
#: An entity name with SQL metacharacters and unicode.
SQL_ENTITY = "évil'; DROP TABLE runs; --"

#: Metric keys meant to break column naming, SQL quoting and path handling.
HOSTILE_KEYS = (
    'say "hi"', "it's", "a.b.c", "train/loss/x", " lead", "trail ", "two  spaces", "tab\tkey",
    "new\nline", "back\\slash", "semi;colon--", "'; DROP TABLE history; --", "../up", "%2F",
    "損失", "émoji🚀", "zw\u200bsp", "", "k" * 1000, "Loss", "loss", "LOSS", "entity", "RUN_ID",
    "_STEP", "step", "key", "value", "*", "?", "[0]", "{x}", "select", "null",
)
#: Keys of the one 10,000-key row.
WIDE_KEYS = 10_000
#: The config of the big-config run is at least this many bytes of JSON.
BIG_CONFIG_BYTES = 5 * 1024 * 1024
#: Steps of the out-of-order run, in the order they are logged (the file order).
STEP_SEQUENCE = (61010, 61011, 61013, 61013, 61012, 72000, 61014, 150000, 150000, 61015)
#: "../.." percent-encoded: a warehouse that URL-decoded names into paths would climb out.
#: (A name starting with "." is not a project in the dataset format, so `..%2F..` cannot be one.)
TRAVERSAL_PROJECT = "%2E%2E%2F%2E%2E"
#: A run id too long for a warehouse directory name once percent-encoded (refused, by name).
TOO_LONG_RUN_ID = "'" * 200
#: Paths a client may ask for that no dataset can hold (they must come back "not found").
UNREPRESENTABLE = ("../x", "../../etc/passwd", "..", ".hidden", "_private")


@dataclass(frozen=True)
class HostileRun:
    entity: str
    project: str
    run_id: str
    state: str
    history_rows: int
    #: Why the run is in the corpus.
    feature: str
    #: None: must be exported faithfully; otherwise the reason it must be refused.
    refused: str | None = None


@dataclass(frozen=True)
class HostileSummary:
    root: Path
    runs: list[HostileRun] = field(default_factory=list)

    @property
    def history_rows(self) -> int:
        return sum(r.history_rows for r in self.runs)


def generate_hostile(root: str | os.PathLike[str], *, seed: int = 0, wide_keys: int = WIDE_KEYS,
                     big_config_bytes: int = BIG_CONFIG_BYTES) -> HostileSummary:
    """Write the hostile corpus under `root` (regenerating replaces those runs); deterministic."""
    root = Path(root)
    rng = random.Random(f"hostile:{seed}")
    runs: list[HostileRun] = []

    def add(entity: str, project: str, run_id: str, rows: list[dict], feature: str, *,
            state: str = "finished", refused: str | None = None, **meta: Any) -> None:
        _write_run(root / entity / project / run_id, rows, state=state, rng=rng, **meta)
        runs.append(HostileRun(entity, project, run_id, state, len(rows), feature, refused))

    e = ENTITY
    keyed = _keyed_rows(rng, 30)
    add(e, "keys", "keysparq", keyed, "hostile keys, finished: served as exported Parquet")
    add(e, "keys", "keyslive", keyed, "hostile keys, running: served as live history pages", state="running")
    add(e, "keys", "values01", _value_rows(), "NaN, ±Infinity, null, integers beyond int64, nested "
        "values, media objects, a key whose type changes", summary=_hostile_summary())
    add(e, "keys", "wide0001", _wide_rows(rng, wide_keys), f"{wide_keys:,} keys in one row")
    add(e, "keys", "steps001", _step_rows(rng), "starts at step 61,010, gaps, a repeated step, out of order")
    add(e, "keys", "empty001", [], "no history")
    add(e, "keys", "bigconf1", _plain_rows(rng, 3), "a config of at least 5 MB",
        config=_big_config(rng, big_config_bytes))
    add(e, TRAVERSAL_PROJECT, "x..%2F..%2Fetc", _plain_rows(rng, 4), "percent-encoded ../ in project and run names")
    add(e, TRAVERSAL_PROJECT, "a...b", _plain_rows(rng, 2), "dots in a run name")
    add(e, "a'b\"c;--", "'; DROP TABLE runs; --", _plain_rows(rng, 5), "SQL metacharacters in names")
    add(e, "a'b\"c;--", "Robert'); DROP TABLE history;--", _plain_rows(rng, 3), "SQL metacharacters in names")
    add(e, "проект 数据 🚀", "rün-ü-🚀", _plain_rows(rng, 4), "unicode names")
    add(e, "проект 数据 🚀", "caf\u00e9", _plain_rows(rng, 2), "unicode, composed (NFC)")
    add(e, "проект 数据 🚀", "cafe\u0301", _plain_rows(rng, 3), "unicode, decomposed (NFD): another run")
    add(e, "проект 数据 🚀", "rtl\u202eevil", _plain_rows(rng, 2), "a right-to-left override in a name")
    add(e, "runs", "abcd1234", _plain_rows(rng, 2), "a project named like a path segment of W&B URLs")
    add(e, "my project", "run with spaces ", _plain_rows(rng, 2), "spaces, one trailing, in names")
    add(e, "long", "a" * 240, _plain_rows(rng, 2), "a 240-character run id")
    add(e, "long", TOO_LONG_RUN_ID, _plain_rows(rng, 2), "a run id too long for a directory once encoded",
        refused="too long for a directory name once encoded")
    add(SQL_ENTITY, "x", "caps-CASE", _plain_rows(rng, 3), "an entity with SQL metacharacters; case")
    add(SQL_ENTITY, "x", "caps-case", _plain_rows(rng, 4), "a run id differing only in case")
    return HostileSummary(root, runs)


# ---------------------------------------------------------------------------------------------
# Writing


def _write_run(run_dir: Path, rows: list[dict], *, state: str, rng: random.Random,
               config: dict | None = None, summary: dict | None = None) -> None:
    """One run directory, written aside and renamed into place (replacing an older one)."""
    tmp = run_dir.parent / f".{rng.getrandbits(64):016x}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    created = BASE_TIME + timedelta(seconds=rng.randrange(86400))
    if rows:
        with open(tmp / "history.jsonl", "w", encoding="utf-8") as out:
            for row in rows:
                # ensure_ascii keeps keys with control characters on one line; NaN/Infinity
                # are written as tokens, as W&B rows carry them.
                out.write(json.dumps(row, separators=(",", ":")) + "\n")
    if summary is None:
        summary = {}
        for row in rows:
            summary.update({k: v for k, v in row.items() if not _non_finite(v)})
    meta = {
        "display_name": run_dir.name, "state": state, "created_at": _iso(created),
        "heartbeat_at": _iso(created + timedelta(seconds=10 + len(rows))),
        "config": config if config is not None else {"lr": 0.001, "name with 'quotes'": 'a "b" c'},
        "summary": summary, "tags": ["hostile", "'; --", "ü"], "user": dict(USERS[0]),
        "notes": "notes with 'quotes', \"double quotes\", ; -- and ünïcode",
    }
    (tmp / "run.json").write_text(json.dumps(meta, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    tmp.rename(run_dir)


def _non_finite(v: Any) -> bool:
    return isinstance(v, float) and not math.isfinite(v)


# ---------------------------------------------------------------------------------------------
# Rows


def _keyed_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"_step": i}
        for j, key in enumerate(HOSTILE_KEYS):
            if (i + j) % 7 == 3:
                continue  # sparse: every key misses some steps
            row[key] = round(rng.uniform(-10, 10), 6)
        rows.append(row)
    return rows


def _value_rows() -> list[dict]:
    media = [
        {"_type": "image-file", "path": "media/images/x_0_abc.png", "width": 32, "height": 32,
         "format": "png", "sha256": "ab" * 32, "size": 123},
        {"_type": "table-file", "path": "media/table/t.json", "ncols": 2, "nrows": 3,
         "sha256": "cd" * 32, "size": 45},
        {"_type": "histogram", "values": [1, 2, 3], "bins": [0.0, 0.5, 1.0, 1.5]},
    ]
    flips: list[Any] = [1, "one", 2.5, True, {"x": 1}, [1, "a"], None, -7, 2**70]
    bigs = [2**63, -(2**63) - 1, 2**64 + 1, 10**30, 123, -(10**40), 2**63 - 1, 0]
    rows = []
    for i in range(12):
        row: dict[str, Any] = {
            "_step": i,
            "nan_inf": [math.nan, math.inf, -math.inf, 0.5, -0.0, 5e-324, 1.7976931348623157e308][i % 7],
            "int64_edges": [-(2**63), 2**63 - 1, 0, -1, 1][i % 5],
            "bigint": bigs[i % len(bigs)],
            "nested": {"a": {"b": [1, 2, {"c": "d"}]}, "e": None, "f": i, "g": {"h": [[], {}]}},
            "list": [1, "two", 3.5, None, [4, [5]], {"six": 6}],
            "media": media[i % len(media)],
            "flip": flips[i % len(flips)],
            "unicode_text": "ünï\u200bcødé 🚀 \"quoted\" 'single' \\ back",
            "bool": i % 2 == 0,
        }
        if i % 3 == 0:
            row["with_nulls"] = None
        else:
            row["with_nulls"] = float(i)
        if i == 5:
            row["late_key"] = "appears once"
        rows.append(row)
    return rows


def _hostile_summary() -> dict:
    return {"": "empty key", "a.b": 1, "a": {"b": 2}, "big": 2**80, "media": {"_type": "image-file",
            "path": "media/images/s.png"}, "ünï": [1, {"x": None}], "'; DROP TABLE run_summary; --": True}


def _wide_rows(rng: random.Random, keys: int) -> list[dict]:
    wide = {"_step": 0, **{f"k{j:05d}": round(rng.uniform(0, 1), 6) for j in range(keys)}}
    return [wide, {"_step": 1, "k00000": 0.5, "k09999": 0.25, "other": 1.0}]


def _step_rows(rng: random.Random) -> list[dict]:
    return [{"_step": s, "loss": round(rng.uniform(0, 3), 5), "tag": f"line {i}"}
            for i, s in enumerate(STEP_SEQUENCE)]


def _plain_rows(rng: random.Random, n: int) -> list[dict]:
    return [{"_step": i, "loss": round(rng.uniform(0, 3), 5), "acc": round(rng.uniform(0, 1), 5)}
            for i in range(n)]


def _big_config(rng: random.Random, size: int) -> dict:
    nested: dict[str, Any] = {"leaf": "deep"}
    for depth in range(64):
        nested = {f"level{depth}": nested}
    config: dict[str, Any] = {
        "a.b": 1, "a": {"b": 2}, "": "empty key", "big": 2**80, "deep": nested,
        "wrapped": {"value": 1, "desc": "looks like W&B's own {value, desc} wrapping"},
        "ünï'; --": "unicode and SQL", "many": {f"k{i:05d}": i * 0.5 for i in range(40_000)},
    }
    taken = len(json.dumps(config))
    text = "".join(rng.choice("abcdefghij 'ü\"🚀") for _ in range(1000))
    config["blob"] = (text * (max(0, size - taken) // len(text.encode("utf-8")) + 1))
    return config
