"""A run's history as one Parquet file sorted by `_step`, for runs of any shape, in the column
types W&B's history exports hold.

Those types are the ones the W&B SDK's own reader of `parquetHistory` files turns back into
values (wandb-core's `parquet-rust-wrapper`, `serialize.rs`: int/uint/float, string, binary,
bool, list, struct and map; anything else reads as null), and W&B's history store writes a key
of several kinds as a struct whose fields are all named `_type_<kind>` (the union the W&B
query engine's Parquet history reader collapses). So:

- numbers: int64 when every value is an integer that fits, uint64 for integers in
  [2**63, 2**64), float64 otherwise (NaN/±Infinity kept as IEEE values); bools; strings;
- dicts (media objects such as `{"_type": "image-file", "sha256": …}`, histograms, tables,
  nested dicts): a struct of the union of their keys, each typed by the same rules; a dict
  without a key reads that field as null;
- lists: a list of the union of their elements;
- a key (or nested value) of several kinds: struct `{_type_number, _type_string,
  _type_boolean, _type_map, _type_list}` with the fields it needs, one set per row.

A history Parquet cannot spell everything JSON can: a dict key absent and a key logged as null
read alike, integers and floats mixed inside one nested leaf read as floats, and a run holding
an empty dict in every row of a key, or an integer beyond 64 bits, has no export at all (it is
served live, as before).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from .dataset import DatasetError, RowLog, parse_row

STEP = "_step"
#: Rows converted per Parquet row group (bounds the emulator's memory on long runs).
CHUNK_ROWS = 50_000
_UNION_NAMES = {"number": "_type_number", "str": "_type_string", "bool": "_type_boolean",
                "map": "_type_map", "list": "_type_list"}
_INT64 = (-(2**63), 2**63 - 1)


class _Node:
    """The kinds of value seen at one place in the history (a key, a dict field, list items)."""

    __slots__ = ("int_range", "float", "bool", "str", "list", "map")

    def __init__(self) -> None:
        self.int_range: tuple[int, int] | None = None
        self.float = self.bool = self.str = False
        self.list: _Node | None = None
        self.map: dict[str, _Node] | None = None

    def add(self, v: Any) -> None:
        t = type(v)
        if t is float:
            self.float = True
        elif t is int:
            r = self.int_range
            self.int_range = (v, v) if r is None else (min(r[0], v), max(r[1], v))
        elif t is str:
            self.str = True
        elif t is bool:
            self.bool = True
        elif t is dict:
            if self.map is None:
                self.map = {}
            fields = self.map
            if any(k not in fields for k in v):
                self.map = fields = _merge_order(fields, list(v))
            for k, x in v.items():
                if x is not None:
                    fields[k].add(x)
        elif t is list:
            if self.list is None:
                self.list = _Node()
            for x in v:
                if x is not None:
                    self.list.add(x)
        elif v is not None:
            raise DatasetError(f"unexpected history value of type {t.__name__}")

    def kinds(self) -> list[str]:
        out = []
        if self.int_range is not None or self.float:
            out.append("number")
        for kind in ("str", "bool", "map", "list"):
            if getattr(self, kind) not in (None, False):
                out.append(kind)
        return out

    def arrow_type(self, kind: str | None = None) -> pa.DataType | None:
        """The Parquet type of this place (None: no exact Parquet form)."""
        kinds = self.kinds()
        if kind is None:
            if not kinds:
                return pa.null()
            if len(kinds) > 1:
                members = [(_UNION_NAMES[k], self.arrow_type(k)) for k in kinds]
                if any(t is None for _, t in members):
                    return None
                return pa.struct(members)
            kind = kinds[0]
        if kind == "number":
            if self.float:
                return pa.float64()
            lo, hi = self.int_range
            if _INT64[0] <= lo and hi <= _INT64[1]:
                return pa.int64()
            return pa.uint64() if lo >= 0 and hi < 2**64 else None
        if kind in ("str", "bool"):
            return pa.string() if kind == "str" else pa.bool_()
        if kind == "list":
            item = self.list.arrow_type()
            return None if item is None else pa.list_(item)
        fields = [(name, node.arrow_type()) for name, node in self.map.items()]
        if not fields or any(t is None for _, t in fields):
            return None
        return pa.struct(fields)

    def is_union(self) -> bool:
        return len(self.kinds()) > 1

    def needs_wrapping(self) -> bool:
        """Whether values below here must be rewritten (a union somewhere) before pa.array."""
        if self.is_union():
            return True
        if self.map is not None and any(n.needs_wrapping() for n in self.map.values()):
            return True
        return self.list is not None and self.list.needs_wrapping()

    def wrap(self, v: Any) -> Any:
        """`v` in the layout of `arrow_type()`: union members as `{"_type_<kind>": value}`."""
        if v is None:
            return None
        if self.is_union():
            kind = _kind(v)
            return {_UNION_NAMES[kind]: self._wrap_as(kind, v)}
        return self._wrap_as(_kind(v), v)

    def _wrap_as(self, kind: str, v: Any) -> Any:
        if kind == "map" and self.map is not None:
            return {k: self.map[k].wrap(x) for k, x in v.items()}
        if kind == "list" and self.list is not None:
            return [self.list.wrap(x) for x in v]
        return v


def _kind(v: Any) -> str:
    t = type(v)
    if t is bool:
        return "bool"
    if t is int or t is float:
        return "number"
    return {str: "str", dict: "map", list: "list"}[t]


def _merge_order(fields: dict[str, _Node], keys: list[str]) -> dict[str, _Node]:
    """Field order that keeps both the known order and this dict's: a new key goes right
    after the key before it in the dict (so a dict with an extra key rebuilds in its order)."""
    order = list(fields)
    previous = None
    for k in keys:
        if k not in fields:
            at = order.index(previous) + 1 if previous is not None else 0
            order.insert(at, k)
        previous = k
    return {k: fields.get(k) or _Node() for k in order}


def _rows_in_step_order(log: RowLog, chunk: int) -> Iterator[list[dict]]:
    order, _ = log.order()
    for i in range(0, len(order), chunk):
        yield [parse_row(line) for line in log.read_lines(order[i:i + chunk])]


def _plain_schema(log: RowLog) -> pa.Schema | None:
    """Every key a plain scalar of one kind (the common case): the schema from the log's index."""
    fields = []
    for key, ks in log.keys.items():
        kinds = ks.kinds
        if kinds <= {"int"}:
            t = pa.int64() if kinds else pa.float64()
        elif kinds <= {"int", "float"}:
            t = pa.float64()
        elif kinds == {"bool"}:
            t = pa.bool_()
        elif kinds == {"str"}:
            t = pa.string()
        else:
            return None
        fields.append(pa.field(key, pa.int64() if key == STEP else t))
    return pa.schema(fields)


def _infer(log: RowLog) -> tuple[pa.Schema, dict[str, _Node]] | None:
    nodes: dict[str, _Node] = {}
    for rows in _rows_in_step_order(log, CHUNK_ROWS):
        for row in rows:
            for k, v in row.items():
                node = nodes.get(k)
                if node is None:
                    node = nodes[k] = _Node()
                if v is not None:
                    node.add(v)
    fields = []
    for key, node in nodes.items():
        t = pa.int64() if key == STEP else node.arrow_type()
        if t is None:
            return None
        fields.append(pa.field(key, t))
    return pa.schema(fields), nodes


#: Inferred layouts of runs that are not plain scalars, by (history file, rows, bytes).
_schemas: dict[tuple[str, int, int], tuple[pa.Schema, dict[str, _Node]] | None] = {}
SCHEMAS_KEPT = 256


def history_schema(log: RowLog) -> pa.Schema | None:
    """The Parquet schema of the run's history, or None when it has no exact Parquet form."""
    found = _layout(log)
    return None if found is None else found[0]


def _layout(log: RowLog) -> tuple[pa.Schema, dict[str, _Node] | None] | None:
    plain = _plain_schema(log)
    if plain is not None:
        return plain, None
    key = (str(log.path), len(log), log.path.stat().st_size)
    if key not in _schemas:
        while len(_schemas) >= SCHEMAS_KEPT:
            del _schemas[next(iter(_schemas))]
        _schemas[key] = _infer(log)
    return _schemas[key]


def export_history(log: RowLog, cache_dir: Path, storage_id: str) -> Path:
    """Write (or find cached) the Parquet export of `log`; raises ValueError when the history
    has no Parquet form (see `history_schema`)."""
    layout = _layout(log)
    if layout is None:
        raise ValueError(f"{log.path}: history has no exact Parquet form")
    schema, nodes = layout
    n = len(log)
    digest = hashlib.sha256(f"{storage_id}:{n}:{log.path.stat().st_size}".encode()).hexdigest()[:24]
    out = Path(cache_dir) / f"{digest}.parquet"
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp")
    if nodes is None:
        table = pajson.read_json(
            log.path, read_options=pajson.ReadOptions(block_size=1 << 24),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"),
        ).select(schema.names)
        if table.num_rows != n:
            raise DatasetError(f"{log.path}: Parquet export read {table.num_rows} rows, expected {n}")
        order, _ = log.order()
        if order != list(range(n)):
            table = table.take(pa.array(order))
        pq.write_table(table, tmp, compression="zstd")
    else:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for rows in _rows_in_step_order(log, CHUNK_ROWS):
                arrays = []
                for field in schema:
                    node = nodes[field.name]
                    values = [row.get(field.name) for row in rows]
                    if field.name == STEP:
                        values = [int(v) for v in values]
                    elif node.needs_wrapping():
                        values = [node.wrap(v) for v in values]
                    arrays.append(pa.array(values, field.type))
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
    os.replace(tmp, out)
    return out
