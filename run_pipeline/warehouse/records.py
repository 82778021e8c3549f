"""Run metadata (a plain dict from the client) as rows: the one-row `runs` table and the
flattened `run_config` / `run_summary` key-value tables."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from .layout import RunKey
from .schema import KEY_VALUE_SCHEMA, RUNS_SCHEMA, json_text

#: Summary values that are dicts with this key are W&B media objects (images, tables,
#: histograms): leaves, not nested config to flatten.
MEDIA_TYPE_KEY = "_type"


def run_key(run: Mapping[str, Any]) -> RunKey:
    try:
        return RunKey(str(run["entity"]), str(run["project"]), str(run["run_id"]))
    except KeyError as exc:
        raise KeyError(f"run metadata needs entity, project and run_id (missing {exc})") from exc


def utc(value: Any) -> datetime | None:
    """A timezone-aware datetime or ISO string as a naive UTC datetime (DuckDB TIMESTAMP)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, timezone.utc)
    elif isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _int(value: Any, default: int) -> int:
    return default if value is None else int(value)


def runs_table(run: Mapping[str, Any], exported_at: datetime) -> pa.Table:
    """The run's row of the `runs` table (entity/project/run_id come from the directories)."""
    tags = run.get("tags")
    row = {
        "name": run.get("name"), "state": run.get("state"),
        "created_at": utc(run.get("created_at")), "heartbeat_at": utc(run.get("heartbeat_at")),
        "tags": [str(t) for t in tags] if tags is not None else None,
        "notes": run.get("notes"), "run_group": run.get("group", run.get("run_group")),
        "job_type": run.get("job_type"), "username": run.get("username"), "url": run.get("url"),
        "config": json_text(run.get("config") or {}), "summary": json_text(run.get("summary") or {}),
        "system_metrics": json_text(run.get("system_metrics") or {}),
        "history_line_count": _int(run.get("history_line_count"), 0),
        "last_step": _int(run.get("last_step"), -1),
        "exported_at": utc(exported_at),
    }
    return pa.Table.from_pylist([row], schema=RUNS_SCHEMA)


def flatten(value: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) pairs of a nested dict. Lists, media objects and empty dicts are
    leaves; a key that already contains "." is kept as is, so `{"a.b": 1}` and
    `{"a": {"b": 1}}` both give "a.b" (both rows are kept)."""
    for k, v in value.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v and MEDIA_TYPE_KEY not in v:
            yield from flatten(v, key + ".")
        else:
            yield key, v


def _as_double(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        return float(v)
    except OverflowError:  # an int beyond DOUBLE's range: only the JSON value holds it
        return None


def key_value_table(value: Mapping[str, Any] | None) -> pa.Table:
    """`run_config` / `run_summary` rows: key, value (JSON text), value_double, value_text."""
    keys, values, doubles, texts = [], [], [], []
    for k, v in flatten(value or {}):
        keys.append(k)
        values.append(json_text(v))
        doubles.append(_as_double(v))
        texts.append(v if isinstance(v, str) else None)
    return pa.Table.from_arrays([pa.array(keys, pa.string()), pa.array(values, pa.string()),
                                 pa.array(doubles, pa.float64()), pa.array(texts, pa.string())],
                                schema=KEY_VALUE_SCHEMA)
