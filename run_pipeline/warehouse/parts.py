"""Streaming a run's series (history or system metrics) into Parquet part files with bounded
memory, plus the long-form `metrics` part written beside each history part.

Typing is decided per part file: rows are buffered up to one row group (`ROW_GROUP_ROWS` rows
or `ROW_GROUP_BYTES`), and until the part's first row group is written a new key or a wider
type just widens the part's schema. After that the schema is fixed, and a batch bringing a new
key or a type the part cannot hold starts a new part. Once the whole series has been seen, any
part whose types read back differently from the run-level type (see
`schema.view_equivalent`) is rewritten, so every key reads back with one type per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from run_pipeline.shared_values import WIDE_COLUMNS, held_bytes, share_sparse

from .errors import WarehouseDataError
from .layout import HISTORY, METRICS, SYSTEM_METRICS
from .long_form import METRICS_WRITE_OPTIONS, long_form
from .parquet import ROW_GROUP_BYTES, ROW_GROUP_ROWS, LazyParquetWriter, Stage
from .schema import (
    CANONICAL_JSON_KEY,
    NULL,
    RUNTIME,
    STEP,
    TIMESTAMP,
    ColumnNamer,
    arrow_field,
    arrow_type,
    as_type,
    classify,
    convert,
    join_types,
)

#: A part is closed once it holds this many rows (parts stay a manageable size to rewrite).
PART_MAX_ROWS = 4 * 1024 * 1024


@dataclass(frozen=True)
class SeriesSpec:
    """What distinguishes the history series from the system-metrics series."""

    table: str
    fixed: tuple[tuple[str, pa.DataType], ...]
    ordered: bool
    metrics: bool

    @property
    def reserved(self) -> tuple[str, ...]:
        return ("entity", "project", "run_id", *(name for name, _ in self.fixed))


HISTORY_SPEC = SeriesSpec(HISTORY, ((STEP, pa.int64()),), ordered=True, metrics=True)
SYSTEM_SPEC = SeriesSpec(SYSTEM_METRICS, ((TIMESTAMP, pa.float64()), (RUNTIME, pa.float64())),
                         ordered=False, metrics=False)


@dataclass
class PartInfo:
    """One committed (or staged) part: its file name, rows, step range and column types."""

    name: str
    rows: int
    first: int | None
    last: int | None
    columns: dict[str, str]
    metrics_rows: int = 0
    bytes: int = 0
    #: The metrics pack holding this part's long form (`packs.py`); None: its own `metrics` file.
    pack: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = {"name": self.name, "rows": self.rows, "first": self.first, "last": self.last,
             "columns": [[k, t] for k, t in self.columns.items()], "metrics_rows": self.metrics_rows,
             "bytes": self.bytes}
        if self.pack is not None:
            d["pack"] = self.pack
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PartInfo:
        return cls(d["name"], int(d["rows"]), d.get("first"), d.get("last"),
                   {k: t for k, t in d["columns"]}, int(d.get("metrics_rows", 0)), int(d.get("bytes", 0)),
                   d.get("pack"))

    @property
    def metrics_file(self) -> bool:
        """Whether the part's long form is a file of its own under `metrics/`."""
        return bool(self.metrics_rows) and self.pack is None


def part_name(generation: int, seq: int) -> str:
    return f"part-{generation:06d}-{seq:05d}.parquet"


def parse_part_name(name: str) -> tuple[int, int]:
    """(generation, sequence) of a part file name; (0, 0) for names this package did not write."""
    try:
        _, generation, seq = name.removesuffix(".parquet").split("-")
        return int(generation), int(seq)
    except ValueError:
        return 0, 0


@dataclass
class _Pending:
    fixed: list[pa.Array]
    cols: dict[str, tuple[str, pa.Array]]
    rows: int


@dataclass
class _PartBuilder:
    spec: SeriesSpec
    stage: Stage
    name: str
    keys: dict[str, str]
    types: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    first: int | None = None
    last: int | None = None

    def __post_init__(self) -> None:
        self._pending: list[_Pending] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._writer = LazyParquetWriter(self.stage.new_file(self.spec.table, self.name))
        self._metrics = (LazyParquetWriter(self.stage.new_file(METRICS, self.name), **METRICS_WRITE_OPTIONS)
                         if self.spec.metrics else None)

    def accepts(self, cols: dict[str, tuple[str, pa.Array]], rows: int) -> bool:
        if self.rows + self._pending_rows + rows > PART_MAX_ROWS and self.rows + self._pending_rows > 0:
            return False
        if not self._writer.opened:
            return True
        for name, (ltype, _) in cols.items():
            current = self.types.get(name)
            if current is None or join_types(current, ltype) != current:
                return False
        return True

    def add(self, fixed: list[pa.Array], cols: dict[str, tuple[str, pa.Array]], rows: int,
            first: int | None, last: int | None) -> None:
        for name, (ltype, _) in cols.items():
            self.types[name] = join_types(self.types.get(name, NULL), ltype)
        self._pending.append(_Pending(fixed, cols, rows))
        self._pending_rows += rows
        self._pending_bytes += held_bytes([*fixed, *(a for _, a in cols.values())])
        if first is not None:
            self.first = first if self.first is None else self.first
            self.last = last
        if self._pending_rows >= ROW_GROUP_ROWS or self._pending_bytes >= ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        if self._writer.opened:
            schema = self._writer.schema  # the part's types are fixed once its first row group is written
        else:
            # Columns in the run's order of first appearance, so every part of a run lists
            # its columns in the same relative order (and the view's column order follows it).
            rank = {name: i for i, name in enumerate(self.keys)}
            self.types = dict(sorted(self.types.items(), key=lambda item: rank.get(item[0], len(rank))))
            fields = [pa.field(n, t, nullable=True) for n, t in self.spec.fixed]
            fields += [arrow_field(n, t, self.keys.get(n)) for n, t in self.types.items()]
            schema = pa.schema(fields)
        arrays = [_concat([p.fixed[i] for p in self._pending]) for i in range(len(self.spec.fixed))]
        nulls: dict[tuple[int, str], pa.Array] = {}  # one for all the keys a batch lacks
        for name, target in self.types.items():
            chunks = []
            for p in self._pending:
                if name in p.cols:
                    source, array = p.cols[name]
                    chunks.append(convert(array, source, target))
                else:
                    absent = nulls.get((p.rows, target))
                    if absent is None:
                        absent = nulls[p.rows, target] = pa.nulls(p.rows, arrow_type(target))
                    chunks.append(absent)
            # Chunked, not concatenated: a copy would give every key of a wide batch its own
            # buffer of values (see `shared_values`).
            arrays.append(chunks[0] if len(chunks) == 1 else pa.chunked_array(chunks))
        table = pa.Table.from_arrays(arrays, schema=schema)
        self._pending.clear()
        self._pending_rows = self._pending_bytes = 0
        self._writer.write(table)
        self.rows += len(table)
        if self._metrics is not None:
            # The arrays themselves: taking 2,000 columns back out of the table costs more
            # than the long form itself.
            columns = dict(zip(schema.names, arrays))
            for long in long_form(columns[STEP], columns, self.types, self.keys):
                self._metrics.write(long)
            del columns
        del table, arrays
        # Hand the freed buffers back to the OS: the allocator would keep them, and peak memory
        # would then grow with everything a run ever buffered rather than with one row group.
        pa.default_memory_pool().release_unused()

    def close(self) -> PartInfo | None:
        self.flush()
        size = self._writer.close()
        metrics_size = self._metrics.close() if self._metrics is not None else 0
        if not self.rows:
            return None
        return PartInfo(self.name, self.rows, self.first, self.last, dict(self.types),
                        self._metrics.rows if self._metrics is not None else 0, size + metrics_size)

    def abort(self) -> None:
        self._writer.abort()
        if self._metrics is not None:
            self._metrics.abort()


def _concat(chunks: list[pa.Array]) -> pa.Array:
    """One array of the chunks (no copy of a lone one: a wide run's row group is often one page)."""
    return chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)


class PartStream:
    """Route a series' batches into rolling part builders; track the joined type per column."""

    def __init__(self, spec: SeriesSpec, stage: Stage, namer: ColumnNamer, generation: int,
                 first_seq: int = 0, after_step: int | None = None):
        self.spec = spec
        self.stage = stage
        self.namer = namer
        self.generation = generation
        self.types: dict[str, str] = {}
        self.keys: dict[str, str] = {physical: key for key, physical in namer.columns.items()}
        self._seq = first_seq
        self._builder: _PartBuilder | None = None
        self._parts: list[PartInfo] = []
        self._last_step = after_step

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Add one client batch (`_step` first, then one column per key)."""
        rows = batch.num_rows
        if not rows:
            return
        fixed, cols = self._split(batch)
        first = last = None
        if self.spec.ordered:
            first, last = self._check_order(fixed[0])
        self.add_columns(fixed, cols, rows, first, last)

    def _split(self, batch: pa.RecordBatch):
        fixed_names = {n for n, _ in self.spec.fixed}
        names = batch.schema.names
        fixed = []
        for name, atype in self.spec.fixed:
            if name in names:
                array = batch.column(names.index(name))
                if self.spec.ordered and array.null_count:
                    raise WarehouseDataError(f"column {name!r} has null values")
                try:
                    fixed.append(as_type(array, atype))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise WarehouseDataError(f"column {name!r} is not {atype}: {exc}") from exc
            elif self.spec.ordered:
                raise WarehouseDataError(f"batch has no {name!r} column (columns: {names[:5]}…)")
            else:
                fixed.append(pa.nulls(batch.num_rows, atype))
        cols: dict[str, tuple[str, pa.Array]] = {}
        seen: set[str] = set()
        canonical = (batch.schema.metadata or {}).get(CANONICAL_JSON_KEY) == b"1"
        for i, f in enumerate(batch.schema):
            if f.name in fixed_names:
                continue
            if f.name in seen:
                raise WarehouseDataError(f"batch has two columns named {f.name!r}")
            seen.add(f.name)
            physical = self.namer.physical(f.name)
            self.keys[physical] = f.name
            cols[physical] = classify(f, batch.column(i), canonical=canonical)
        if len(cols) >= WIDE_COLUMNS:  # a wide batch of any source: see `shared_values`
            shared = share_sparse([array for _, array in cols.values()])
            cols = {name: (ltype, array) for (name, (ltype, _)), array in zip(cols.items(), shared)}
        return fixed, cols

    def _check_order(self, steps: pa.Array) -> tuple[int, int]:
        n = len(steps)
        if n > 1 and pc.any(pc.less(steps.slice(1), steps.slice(0, n - 1))).as_py():
            raise WarehouseDataError("steps go backwards inside a batch")
        first, last = steps[0].as_py(), steps[n - 1].as_py()
        if self._last_step is not None and first < self._last_step:
            raise WarehouseDataError(f"batch starts at step {first}, before step {self._last_step} already seen")
        self._last_step = last
        return first, last

    def add_columns(self, fixed: list[pa.Array], cols: dict[str, tuple[str, pa.Array]], rows: int,
                    first: int | None = None, last: int | None = None) -> None:
        """Add rows whose columns are already typed and named physically."""
        if self._builder is None or not self._builder.accepts(cols, rows):
            self._roll()
        for name, (ltype, _) in cols.items():
            self.types[name] = join_types(self.types.get(name, NULL), ltype)
        self._builder.add(fixed, cols, rows, first, last)

    def preset(self, types: dict[str, str]) -> None:
        """Open the next part with these column types (used when rewriting a part)."""
        self._roll()
        self._builder.types.update(types)

    def _roll(self) -> None:
        if self._builder is not None:
            info = self._builder.close()
            if info is not None:
                self._parts.append(info)
        self._builder = _PartBuilder(self.spec, self.stage, part_name(self.generation, self._seq), self.keys)
        self._seq += 1

    def close(self) -> list[PartInfo]:
        if self._builder is not None:
            info = self._builder.close()
            if info is not None:
                self._parts.append(info)
            self._builder = None
        return self._parts

    def abort(self) -> None:
        if self._builder is not None:
            self._builder.abort()
            self._builder = None


def rewrite_part(spec: SeriesSpec, source: pq.ParquetFile, part: PartInfo, final: dict[str, str],
                 stage: Stage, keys: dict[str, str], generation: int, seq: int) -> PartInfo:
    """Copy one part into a new staged part whose columns carry the run-level types."""
    namer = ColumnNamer(spec.reserved, [(k, p) for p, k in keys.items()])
    stream = PartStream(spec, stage, namer, generation, seq)
    stream.preset({name: final[name] for name in part.columns})
    fixed_names = [n for n, _ in spec.fixed]
    try:
        for batch in source.iter_batches(batch_size=ROW_GROUP_ROWS):
            names = batch.schema.names
            fixed = [batch.column(names.index(n)) for n in fixed_names]
            cols = {n: (part.columns[n], batch.column(names.index(n))) for n in part.columns if n in names}
            stream._builder.add(fixed, cols, batch.num_rows, None, None)
        parts = stream.close()
    except BaseException:
        stream.abort()
        raise
    info = parts[0]
    info.first, info.last = part.first, part.last
    return info

