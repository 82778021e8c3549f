"""Export one run's series (history or system metrics): decide full or incremental, stream the
batches into staged parts, align their types with the run, and commit; report what was written,
with the repeated steps and the last rows seen on the way (no second read of the files)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .layout import METRICS, RunKey, WarehouseRoot
from .parquet import Stage
from .parts import (
    PartInfo,
    PartStream,
    SeriesSpec,
    parse_part_name,
    part_name,
    rewrite_part,
)
from .schema import NULL, STEP, ColumnNamer, join_types, view_equivalent
from .state import RunState, commit, is_consistent, list_parts, read_state

#: A history source: `fetch(min_step)` returning batches of the steps >= min_step in ascending
#: order, or the batches themselves (then an incremental export skips the steps it has).
HistorySource = Callable[[int], Iterable[pa.RecordBatch]] | Iterable[pa.RecordBatch]
SystemSource = Callable[[], Iterable[pa.RecordBatch]] | Iterable[pa.RecordBatch]

FULL, INCREMENTAL, UNCHANGED = "full", "incremental", "unchanged"
#: Rows of a series its result carries as `last_rows`.
LAST_ROWS = 5


@dataclass(frozen=True)
class SeriesResult:
    """What one series export did and what is committed afterwards."""

    mode: str
    rows_written: int
    rows_total: int
    last_step: int
    columns: int
    parts: int
    bytes: int
    path: str
    #: Committed rows whose `_step` equals the previous row's (W&B allows repeats; they are kept).
    repeated_steps: int = 0
    #: The last rows this export wrote (at most `LAST_ROWS`, columns named by logged key); None
    #: when it wrote none (an unchanged history).
    last_rows: pa.Table | None = field(default=None, compare=False, repr=False)


class _Seen:
    """What a series export saw of the rows it wrote: how many repeat the step before them
    (steps arrive in ascending order, so a repeat always follows its twin) and the last rows."""

    def __init__(self, ordered: bool, after_step: int | None = None):
        self.ordered = ordered
        self.repeated_steps = 0
        self._last_step = after_step
        self._tail: list[pa.RecordBatch] = []

    def add_steps(self, steps: pa.Array | pa.ChunkedArray) -> None:
        n = len(steps)
        if not (self.ordered and n):
            return
        if n > 1:
            self.repeated_steps += pc.sum(pc.equal(steps[1:], steps[:-1])).as_py() or 0
        if self._last_step is not None and steps[0].as_py() == self._last_step:
            self.repeated_steps += 1
        self._last_step = steps[n - 1].as_py()

    def add(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        if self.ordered:
            self.add_steps(batch.column(batch.schema.get_field_index(STEP)))
        # Zero-copy slices: at most the last few batches stay referenced.
        self._tail.append(batch.slice(max(0, batch.num_rows - LAST_ROWS)))
        while sum(b.num_rows for b in self._tail[1:]) >= LAST_ROWS:
            self._tail.pop(0)

    def last_rows(self) -> pa.Table | None:
        if not self._tail:
            return None
        tables = [pa.Table.from_batches([b]) for b in self._tail]
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            table = tables[-1]  # a key typed differently across the last batches: the last batch alone
        return table.slice(max(0, table.num_rows - LAST_ROWS))


def export_series(root: WarehouseRoot, spec: SeriesSpec, run: RunKey, source, stage: Stage, *,
                  incremental: bool = False, source_last_step: int | None = None,
                  source_rows: int | None = None) -> SeriesResult:
    """Export a series, its files staged in `stage` (the caller's, which it cleans up); see
    `export.export_run` for the contract."""
    result = _export(root, spec, run, source, stage, incremental, source_last_step, source_rows)
    if result is None:
        # The incremental fetch came up short of the source's row count: rows were logged
        # at or below the last exported step (a resumed or rewound run), which "steps after
        # the last one" cannot see. Fetch the run whole instead.
        result = _export(root, spec, run, source, stage, False, source_last_step, source_rows)
    return result


def _decide(state: RunState | None, consistent: bool, spec: SeriesSpec, incremental: bool,
            source_last_step: int | None, source_rows: int | None) -> str:
    if not (incremental and spec.ordered and consistent and state is not None):
        return FULL
    if source_last_step is not None and source_last_step < state.last_step:
        return FULL  # history shrank (rewound or deleted): replace
    if source_rows is not None and source_rows < state.rows:
        return FULL
    if source_last_step is not None and source_last_step == state.last_step and source_rows is not None:
        # Same last step: either nothing changed, or rows were added at an exported step,
        # which fetching "steps after the last one" cannot see.
        return UNCHANGED if source_rows == state.rows else FULL
    return INCREMENTAL


def _export(root: WarehouseRoot, spec: SeriesSpec, run: RunKey, source, stage: Stage,
            incremental: bool, source_last_step: int | None, source_rows: int | None) -> SeriesResult | None:
    """One attempt; None when an incremental fetch missed rows and a callable source can be
    asked again for everything."""
    state = read_state(root, spec.table, run)
    listing = list_parts(root, spec, run, state)
    consistent = is_consistent(state, listing)
    mode = _decide(state, consistent, spec, incremental, source_last_step, source_rows)
    path = root.location(root.run_dir(spec.table, run))
    if mode == UNCHANGED:
        return SeriesResult(UNCHANGED, 0, state.rows, state.last_step, len(state.columns),
                            len(state.parts), state.bytes, path, _committed_repeats(root, spec, run, state))

    previous = state if mode == INCREMENTAL else None
    if previous is not None:
        generation = previous.generation
        namer = ColumnNamer(spec.reserved, [(k, p) for k, p, _ in previous.columns])
        first_seq = 1 + max((parse_part_name(p.name)[1] for p in previous.parts), default=-1)
        min_step = previous.last_step + 1
    else:
        generation = max(state.generation if state else 0, listing.generation()) + 1
        namer = ColumnNamer(spec.reserved)
        first_seq, min_step = 0, 0
    stream = PartStream(spec, stage, namer, generation, first_seq,
                        after_step=previous.last_step if previous is not None else None)
    seen = _Seen(spec.ordered, previous.last_step if previous is not None else None)
    try:
        for batch in _batches(source, spec, min_step, previous is not None):
            stream.add_batch(batch)
            seen.add(batch)
        new_parts = stream.close()
    except BaseException:
        stream.abort()
        raise
    rows_written = sum(p.rows for p in new_parts)
    if (previous is not None and callable(source) and source_rows is not None
            and previous.rows + rows_written < source_rows):
        return None

    final = dict(previous.types) if previous is not None else {}
    for name, ltype in stream.types.items():
        final[name] = join_types(final.get(name, NULL), ltype)
    keys = dict(stream.keys)

    committed = list(previous.parts) if previous is not None else []
    if any(not view_equivalent(t, final[n]) for p in committed for n, t in p.columns.items()):
        # A committed column must change type (e.g. a key that was numeric now also holds
        # strings): rewrite the committed parts under a new generation, then append.
        generation = max(generation, listing.generation()) + 1
        committed = [_rewrite_committed(root, spec, run, p, final, stage, keys, generation, i)
                     for i, p in enumerate(committed)]
        for i, p in enumerate(new_parts):  # keep names sorting in step order
            new_name = part_name(generation, len(committed) + i)
            stage.rename(spec.table, p.name, new_name)
            if p.metrics_rows:
                stage.rename(METRICS, p.name, new_name)
            p.name = new_name
    new_parts = [_align(spec, p, final, stage, keys) for p in new_parts]

    parts = committed + new_parts
    columns = [(key, physical, final[physical]) for key, physical in namer.columns.items() if physical in final]
    rows = sum(p.rows for p in parts)
    last_step = max((p.last for p in parts if p.last is not None), default=-1)
    repeated = seen.repeated_steps + (_committed_repeats(root, spec, run, previous) if previous is not None else 0)
    new_state = RunState(spec.table, generation, parts, columns, rows, last_step, repeated_steps=repeated)
    commit(root, stage, spec, run, state if consistent else None, listing, new_state)
    return SeriesResult(mode, rows_written, rows, last_step, len(columns), len(parts), new_state.bytes, path,
                        repeated, seen.last_rows())


def _committed_repeats(root: WarehouseRoot, spec: SeriesSpec, run: RunKey, state: RunState) -> int:
    """Repeated steps of a committed series: from its manifest, or, for a manifest written before
    they were recorded, counted once from the committed parts' `_step` columns."""
    if state.repeated_steps is not None or not spec.ordered:
        return state.repeated_steps or 0
    seen = _Seen(ordered=True)
    for part in state.parts:
        with root.fs.open_input_file(f"{root.run_dir(spec.table, run)}/{part.name}") as f:
            seen.add_steps(pq.read_table(f, columns=[STEP]).column(STEP).combine_chunks())
    return seen.repeated_steps


def _align(spec: SeriesSpec, part: PartInfo, final: dict[str, str], stage: Stage,
           keys: dict[str, str]) -> PartInfo:
    """Rewrite a staged part whose column types read back unlike the run-level types."""
    if all(view_equivalent(t, final[n]) for n, t in part.columns.items()):
        return part
    source = pq.ParquetFile(stage.local_file(spec.table, part.name))
    generation, seq = parse_part_name(part.name)
    return rewrite_part(spec, source, part, final, stage, keys, generation, seq)


def _rewrite_committed(root: WarehouseRoot, spec: SeriesSpec, run: RunKey, part: PartInfo,
                       final: dict[str, str], stage: Stage, keys: dict[str, str],
                       generation: int, seq: int) -> PartInfo:
    path = f"{root.run_dir(spec.table, run)}/{part.name}"
    with root.fs.open_input_file(path) as f:
        return rewrite_part(spec, pq.ParquetFile(f), part, final, stage, keys, generation, seq)


def _batches(source, spec: SeriesSpec, min_step: int, skip_exported: bool) -> Iterator[pa.RecordBatch]:
    if source is None:
        return
    if callable(source):
        source = source(min_step) if spec.ordered else source()
    for item in source:
        batches = item.to_batches() if isinstance(item, pa.Table) else [item]
        for batch in batches:
            if skip_exported and min_step > 0 and batch.num_rows:
                steps = batch.column(batch.schema.get_field_index(STEP))
                if pc.min(steps).as_py() < min_step:
                    batch = batch.filter(pc.greater_equal(steps, min_step))
            yield batch

