"""Builders for client-shaped inputs (run dicts, record batches) and DuckDB read-back."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from run_pipeline.warehouse import view_statements

JSON_META = {b"run_pipeline.json": b"1"}


class JsonColumn:
    """Values the client would send as a JSON-text column (dicts, lists, big ints, mixed)."""

    def __init__(self, values: Sequence[Any]):
        self.values = values

    def array(self) -> pa.Array:
        return pa.array([None if v is None else json.dumps(v) for v in self.values], pa.string())


def batch(steps: Sequence[int], columns: dict[str, Any] | None = None, *, step_column: str = "_step") -> pa.RecordBatch:
    """A client batch: `_step` int64 first, then one column per key (lists are typed by
    pyarrow's inference, pa.Array kept, JsonColumn marked as JSON)."""
    fields = [pa.field(step_column, pa.int64())]
    arrays = [pa.array(steps, pa.int64())]
    for name, values in (columns or {}).items():
        if isinstance(values, JsonColumn):
            arrays.append(values.array())
            fields.append(pa.field(name, pa.string(), metadata=JSON_META))
        else:
            array = values if isinstance(values, pa.Array) else pa.array(values)
            arrays.append(array)
            fields.append(pa.field(name, array.type))
    return pa.record_batch(arrays, schema=pa.schema(fields))


def system_batch(timestamps: Sequence[float], columns: dict[str, Any]) -> pa.RecordBatch:
    arrays = [pa.array(timestamps, pa.float64()), pa.array([t - timestamps[0] for t in timestamps], pa.float64())]
    names = ["_timestamp", "_runtime"]
    for name, values in columns.items():
        arrays.append(values if isinstance(values, pa.Array) else pa.array(values))
        names.append(name)
    return pa.record_batch(arrays, names=names)


def make_run(entity: str = "team", project: str = "proj", run_id: str = "run1", **overrides: Any) -> dict:
    run = {
        "entity": entity, "project": project, "run_id": run_id, "name": f"name-{run_id}",
        "state": "finished", "created_at": "2024-05-01T12:00:00+00:00",
        "heartbeat_at": "2024-05-01T13:00:00Z", "tags": ["baseline"], "notes": None,
        "group": "g", "job_type": "train", "username": "alice", "url": f"https://wandb.example/{run_id}",
        "config": {}, "summary": {}, "system_metrics": {}, "history_line_count": None, "last_step": None,
    }
    run.update(overrides)
    return run


class GrowingHistory:
    """A history source over a fixed list of batches: `fetch(min_step)` yields the rows with
    `_step >= min_step`, like the client's `iter_history_batches(min_step=...)`."""

    def __init__(self, batches: Iterable[pa.RecordBatch]):
        self.batches = list(batches)
        self.calls: list[int] = []

    def __call__(self, min_step: int):
        self.calls.append(min_step)
        for b in self.batches:
            steps = b.column(0).to_pylist()
            keep = [i for i, s in enumerate(steps) if s >= min_step]
            if keep:
                yield b.take(pa.array(keep))

    def rows(self) -> int:
        return sum(b.num_rows for b in self.batches)

    def last_step(self) -> int:
        return max(b.column(0).to_pylist()[-1] for b in self.batches)


def query(root, sql: str, params: dict | None = None, *, catalog: bool = False) -> list[tuple]:
    """Run SQL over the warehouse views: by default on an in-memory database holding the views
    of `view_statements` (fresh for every call), with `catalog=True` on `<root>/warehouse.duckdb`
    as `refresh_catalog` last wrote it."""
    if catalog:
        con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    else:
        con = duckdb.connect()
        for statement in view_statements(root):
            con.execute(statement)
    try:
        return con.execute(sql, params or {}).fetchall()
    finally:
        con.close()


def columns(root, table: str, *, catalog: bool = False) -> dict[str, str]:
    """Column name → DuckDB type of a view."""
    return {name: ctype for name, ctype, *_ in query(root, f"DESCRIBE {table}", catalog=catalog)}


def same(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def same_rows(a: Sequence[tuple], b: Sequence[tuple]) -> bool:
    return len(a) == len(b) and all(len(x) == len(y) and all(same(u, v) for u, v in zip(x, y)) for x, y in zip(a, b))


def visible_files(root) -> list[str]:
    """Every file a reader could see (staging excluded), relative to the root."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and "_staging" not in p.parts and p.name != "warehouse.duckdb"
                  and not p.name.startswith("warehouse.duckdb"))
