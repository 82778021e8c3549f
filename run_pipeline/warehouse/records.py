"""Run metadata as rows: `RunRecord`, the typed record the client side hands the warehouse, and
from it the one-row `runs` table and the flattened `run_config` / `run_summary` key-value tables."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from .layout import RunKey
from .schema import KEY_VALUE_SCHEMA, RUNS_SCHEMA, json_text, plain_text

#: Summary values that are dicts with this key are W&B media objects (images, tables,
#: histograms): leaves, not nested config to flatten.
MEDIA_TYPE_KEY = "_type"


@dataclass(frozen=True)
class RunRecord:
    """One run's metadata as the warehouse stores it. Times are datetimes (UTC) or ISO text;
    `config`, `summary` and `system_metrics` are the documents as the server gave them (an
    object, or anything else, kept as it is); `history_line_count` and `last_step` are what the
    server says the history holds (None: unknown)."""

    entity: str
    project: str
    run_id: str
    name: str | None = None
    state: str | None = None
    created_at: datetime | str | None = None
    heartbeat_at: datetime | str | None = None
    tags: tuple[str, ...] | list[str] | None = None
    notes: str | None = None
    group: str | None = None
    job_type: str | None = None
    username: str | None = None
    url: str | None = None
    config: Any = None
    summary: Any = None
    system_metrics: Any = None
    history_line_count: int | None = None
    last_step: int | None = None

    @property
    def key(self) -> RunKey:
        return RunKey(str(self.entity), str(self.project), str(self.run_id))

    @classmethod
    def of(cls, run: RunRecord | Mapping[str, Any]) -> RunRecord:
        """A record, or one built from a mapping of the same names (`run_group` for `group`)."""
        if isinstance(run, RunRecord):
            return run
        missing = [k for k in ("entity", "project", "run_id") if k not in run]
        if missing:
            raise KeyError(f"run metadata needs entity, project and run_id (missing {', '.join(missing)})")
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in run.items() if k in names}
        if "group" not in values and "run_group" in run:
            values["group"] = run["run_group"]
        return cls(**values)


def run_key(run: RunRecord | Mapping[str, Any]) -> RunKey:
    return RunRecord.of(run).key


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


def runs_table(run: RunRecord, exported_at: datetime) -> pa.Table:
    """The run's row of the `runs` table (entity/project/run_id come from the directories)."""
    tags = run.tags
    row = {
        "name": _text(run.name), "state": _text(run.state),
        "created_at": utc(run.created_at), "heartbeat_at": utc(run.heartbeat_at),
        "tags": [_text(t) for t in tags] if tags is not None else None,
        "notes": _text(run.notes), "run_group": _text(run.group),
        "job_type": _text(run.job_type), "username": _text(run.username),
        "url": _text(run.url),
        "config": _document(run.config), "summary": _document(run.summary),
        "system_metrics": _document(run.system_metrics),
        "history_line_count": _int(run.history_line_count, 0),
        "last_step": _int(run.last_step, -1),
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
