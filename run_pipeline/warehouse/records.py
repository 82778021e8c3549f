"""Run metadata (a plain dict from the client) as rows: the one-row `runs` table and the
flattened `run_config` / `run_summary` key-value tables."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from .layout import RunKey
from .schema import KEY_VALUE_SCHEMA, RUNS_SCHEMA, json_text, plain_text

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


def _text(value: Any) -> str | None:
    return None if value is None else plain_text(str(value))


def _document(value: Any) -> str:
    """A config, summary or system-metrics document as JSON text: absent is `{}`; anything
    else, an object or not, is kept as it is."""
    return json_text({} if value is None else value)


def runs_table(run: Mapping[str, Any], exported_at: datetime) -> pa.Table:
    """The run's row of the `runs` table (entity/project/run_id come from the directories)."""
    tags = run.get("tags")
    row = {
        "name": _text(run.get("name")), "state": _text(run.get("state")),
        "created_at": utc(run.get("created_at")), "heartbeat_at": utc(run.get("heartbeat_at")),
        "tags": [_text(t) for t in tags] if tags is not None else None,
        "notes": _text(run.get("notes")), "run_group": _text(run.get("group", run.get("run_group"))),
        "job_type": _text(run.get("job_type")), "username": _text(run.get("username")),
        "url": _text(run.get("url")),
        "config": _document(run.get("config")), "summary": _document(run.get("summary")),
        "system_metrics": _document(run.get("system_metrics")),
        "history_line_count": _int(run.get("history_line_count"), 0),
        "last_step": _int(run.get("last_step"), -1),
        "exported_at": utc(exported_at),
    }
    return pa.Table.from_pylist([row], schema=RUNS_SCHEMA)


def flatten(value: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) pairs of a nested dict, depth first in key order. Lists, media
    objects and empty dicts are leaves; a key that already contains "." is kept as is, so
    `{"a.b": 1}` and `{"a": {"b": 1}}` both give "a.b" (both rows are kept). Iterative, so
    any depth of nesting is flattened."""
    stack = [(prefix, iter(value.items()))]
    while stack:
        base, items = stack[-1]
        for k, v in items:
            key = f"{base}{k}"
            if isinstance(v, Mapping) and v and MEDIA_TYPE_KEY not in v:
                stack.append((key + ".", iter(v.items())))
                break
            yield key, v
        else:
            stack.pop()


def _as_double(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        return float(v)
    except OverflowError:  # an int beyond DOUBLE's range: only the JSON value holds it
        return None


def key_value_table(value: Any) -> pa.Table:
    """`run_config` / `run_summary` rows: key, value (JSON text), value_double, value_text.

    A document that is not an object (a list, a string, a number: a server may send one) is
    one row whose key is NULL. Keys and `value_text` are plain text (a lone surrogate becomes
    U+FFFD); `value` keeps the original (see `schema.json_text`)."""
    keys, values, doubles, texts = [], [], [], []
    pairs = flatten(value) if isinstance(value, Mapping) else [] if value is None else [(None, value)]
    for k, v in pairs:
        keys.append(None if k is None else plain_text(k))
        values.append(json_text(v))
        doubles.append(_as_double(v))
        texts.append(plain_text(v) if isinstance(v, str) else None)
    return pa.Table.from_arrays([pa.array(keys, pa.string()), pa.array(values, pa.string()),
                                 pa.array(doubles, pa.float64()), pa.array(texts, pa.string())],
                                schema=KEY_VALUE_SCHEMA)
