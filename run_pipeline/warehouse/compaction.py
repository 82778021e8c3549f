"""Compaction: the long-form `metrics` of finished runs moves from one file per run into a
few packs per project (`packs.py`), so a query across runs reads a few files instead of one
per run. The `metrics` view reads both; its rows are the same before and after.

Which runs: those whose W&B state, as last exported, is final (`settings.TERMINAL_STATES`),
whose manifest matches their files, and whose long form still has files of its own (one
listing of the project's `metrics/` finds them, so packed runs cost nothing); a run an
export holds at that moment is left for the next compaction, and so is a run with more than
`LARGE_RUN_ROWS` rows (its own file is large already). Runs go, in run-id order, first into
the project's smallest pack with room, then into new packs, each of at most `PACK_ROWS` rows;
nothing is written while fewer than `min_runs` runs qualify. Growing a pack writes it again
with its runs and the new ones, under the same name: promoting that file replaces the old one
in one step, and its old runs' manifests already name it.
A run that gains steps later (a resumed run) keeps its packed rows; its new parts have files
of their own until a later compaction packs them too.

One pack, under the project's packs lock and the locks of its runs:
1. it is written, sorted by key, its rows counted against the manifests, and kept pending;
2. each run's manifest names the pack for those parts, then the run's own `metrics` files go
   (a reader sees the run's long form absent for that moment: an empty prefix, never a
   duplicated row);
3. the pack is promoted.
A crash leaves the pack pending; the next compaction finishes it first (`recover`): runs whose
manifest names it lose their leftover files, runs whose manifest does not (never reached, or
replaced since) leave the pack, and it is promoted. Until then an export of such a run finds
its pack uncommitted and replaces the run whole.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from run_pipeline.settings import COMPACT_MIN_RUNS, TERMINAL_STATES

from . import packs
from .errors import WarehouseDataError, WarehouseError, WarehouseLockError
from .exported import exported_state
from .layout import (
    HISTORY,
    METRICS,
    PARQUET_SUFFIX,
    RunKey,
    WarehouseRoot,
    decode_partition_value,
)
from .lock import packs_lock, run_lock
from .parquet import Stage, delete_file, list_files
from .parts import HISTORY_SPEC
from .state import RunState, is_consistent, list_parts, read_state, write_state

#: Most rows in one pack: removing a run from a pack (its replace or deletion) writes the pack
#: again, so this bounds that cost.
PACK_ROWS = 8 * 1024 * 1024
#: A run with more long-form rows than this keeps its own files.
LARGE_RUN_ROWS = PACK_ROWS // 4
#: Fewest runs worth writing a pack for.
MIN_RUNS = COMPACT_MIN_RUNS


@dataclass(frozen=True)
class CompactResult:
    """What compacting one project did."""

    entity: str
    project: str
    runs: int  # runs whose long form went into a pack now
    rows: int
    packs: tuple[str, ...]
    busy: int  # runs left alone because an export held them
    recovered: int  # pending packs of an interrupted compaction, finished
    seconds: float

    def describe(self) -> str:
        if not self.runs:
            what = "nothing to pack"
        else:
            what = (f"{self.runs:,} runs ({self.rows:,} metric rows) packed into {len(self.packs)} "
                    f"file{'s' if len(self.packs) != 1 else ''}")
        extra = []
        if self.busy:
            extra.append(f"{self.busy} runs busy, left for next time")
        if self.recovered:
            extra.append(f"{self.recovered} interrupted pack{'s' if self.recovered != 1 else ''} finished")
        return (f"{self.entity}/{self.project}: {what}" + (f" ({'; '.join(extra)})" if extra else "")
                + f" in {self.seconds:.2f}s")


@dataclass
class _Candidate:
    run: RunKey
    state: RunState
    rows: int
    lock: ExitStack


def compact_project(root: WarehouseRoot, entity: str, project: str,
                    states: Mapping[str, str | None] | None = None, *,
                    min_runs: int = MIN_RUNS, max_rows: int = PACK_ROWS) -> CompactResult:
    """Pack the long form of the project's finished runs. `states` (run id → W&B state as
    last exported): None reads it from the `runs` row of each run that has files to pack."""
    started = time.monotonic()
    try:
        return _compact_project(root, entity, project, states, min_runs, max_rows, started)
    except OSError as exc:  # a full disk, a permission: every step before it was committed whole
        raise WarehouseError(f"{entity}/{project}: compaction stopped, nothing was lost: {exc}") from exc


def _compact_project(root: WarehouseRoot, entity: str, project: str, states: Mapping[str, str | None] | None,
                     min_runs: int, max_rows: int, started: float) -> CompactResult:
    with packs_lock(root, entity, project):
        recovered = recover(root, entity, project)
        loose = _loose_run_ids(root, entity, project)
        if states is None:
            states = {run_id: exported_state(root, RunKey(entity, project, run_id)) for run_id in loose}
        chosen, busy = _candidates(root, entity, project, loose, states, max_rows)
        try:
            written: list[str] = []
            rows = 0
            if len(chosen) >= max(min_runs, 1):
                base = _base_pack(root, entity, project, max_rows)
                rest = list(chosen)
                if base is not None:  # the smallest pack with room grows first
                    name, held = base
                    group, room = [], max_rows - held
                    while rest and rest[0].rows <= room:
                        room -= rest[0].rows
                        group.append(rest.pop(0))
                    if group:
                        written.append(_pack(root, entity, project, group, name))
                        rows += sum(c.rows for c in group)
                for group in _groups(rest, max_rows):
                    written.append(_pack(root, entity, project, group))
                    rows += sum(c.rows for c in group)
            packed = len(chosen) if written else 0
        finally:
            for c in chosen:
                c.lock.close()
    return CompactResult(entity, project, packed, rows, tuple(written), busy, recovered,
                         round(time.monotonic() - started, 3))


def _candidates(root: WarehouseRoot, entity: str, project: str, loose: set[str],
                states: Mapping[str, str | None], max_rows: int) -> tuple[list[_Candidate], int]:
    chosen, busy = [], 0
    large = min(LARGE_RUN_ROWS, max_rows)
    # Only runs with files of their own under `metrics/` (one listing): packed runs cost nothing.
    for run_id in sorted(r for r in loose if states.get(r) in TERMINAL_STATES):
        run = RunKey(entity, project, run_id)
        lock = ExitStack()
        try:
            lock.enter_context(run_lock(root, run, timeout=0))
        except WarehouseLockError:
            busy += 1
            continue
        state = read_state(root, HISTORY, run)
        own = [p for p in state.parts if p.metrics_file] if state is not None else []
        rows = sum(p.metrics_rows for p in own)
        if not own or rows > large or not is_consistent(state, list_parts(root, HISTORY_SPEC, run, state)):
            lock.close()
            continue
        chosen.append(_Candidate(run, state, rows, lock))
    return chosen, busy


def _loose_run_ids(root: WarehouseRoot, entity: str, project: str) -> set[str]:
    """Ids of the project's runs that have a Parquet file of their own under `metrics/`."""
    base = root.project_dir(METRICS, entity, project)
    out = set()
    for info in root.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File or not info.base_name.endswith(PARQUET_SUFFIX):
            continue
        components = info.path[len(base) + 1:].split("/")
        if len(components) == 2 and components[0].startswith("run_id="):
            out.add(decode_partition_value(components[0].split("=", 1)[1]))
    return out


def _base_pack(root: WarehouseRoot, entity: str, project: str, max_rows: int) -> tuple[str, int] | None:
    """(name, rows) of the project's smallest committed pack with room left, if any."""
    directory = packs.pack_dir(root, entity, project)
    sizes = []
    for name in packs.committed_packs(root, entity, project):
        with root.fs.open_input_file(f"{directory}/{name}") as f:
            sizes.append((pq.read_metadata(f).num_rows, name))
    if not sizes or min(sizes)[0] >= max_rows:
        return None
    rows, name = min(sizes)
    return name, rows


def _groups(chosen: list[_Candidate], max_rows: int) -> list[list[_Candidate]]:
    if not chosen:
        return []
    groups: list[list[_Candidate]] = [[]]
    rows = 0
    for c in chosen:
        if groups[-1] and rows + c.rows > max_rows:
            groups.append([])
            rows = 0
        groups[-1].append(c)
        rows += c.rows
    return groups


def _pack(root: WarehouseRoot, entity: str, project: str, group: list[_Candidate], base: str | None = None) -> str:
    """Write the long form of `group` into a new pack, or into the committed pack `base` (a
    new file of the same name, holding its runs and these: promoting it replaces the old one
    in one step). Returns the pack's name."""
    name = base or packs.new_pack_name()
    final = f"{packs.pack_dir(root, entity, project)}/{name}"
    runs = {c.run.run_id for c in group}
    expected = sum(c.rows for c in group)
    with packs.Scratch(root, entity, project) as scratch, packs.duckdb_connection(scratch.dir) as con:
        sources = [scratch.local(f"{root.run_dir(METRICS, c.run)}/{p.name}")
                   for c in group for p in c.state.parts if p.metrics_file]
        held = []
        if base is not None:
            held = [scratch.local(final)]
            runs.update(packs.pack_runs(root, final))
            expected += pq.read_metadata(held[0]).num_rows
        out = scratch.new_file(name)
        rows = packs.write_pack(con, sources, out, sorted(runs), base=held, label=f"{entity}/{project}")
        if rows != expected:
            raise WarehouseDataError(
                f"metrics pack of {entity}/{project}: {rows:,} rows written where the runs' manifests "
                f"say {expected:,}; nothing was changed")
        scratch.make_pending(out, name)
    for c in group:
        loose = [p for p in c.state.parts if p.metrics_file]
        for p in loose:
            p.pack = name
        with Stage(root, HISTORY, c.run) as stage:
            write_state(stage, HISTORY, c.run, c.state)
        _drop_files(root, c.run, [p.name for p in loose])
    packs.promote(root, entity, project, name)
    return name


def _drop_files(root: WarehouseRoot, run: RunKey, names: list[str]) -> None:
    """Delete a run's own `metrics` files now held by a pack (and their directory once empty)."""
    directory = root.run_dir(METRICS, run)
    for name in names:
        delete_file(root.fs, f"{directory}/{name}")
    if root.is_local and not list_files(root.fs, directory):
        try:
            os.rmdir(directory)
        except OSError:
            pass


def recover(root: WarehouseRoot, entity: str, project: str) -> int:
    """Finish the packs an interrupted compaction left pending (the caller holds the packs
    lock); a pack whose runs an export holds now is left for next time. Returns how many."""
    done = 0
    pending = packs.pending_dir(root, entity, project)
    for name in packs.pending_packs(root, entity, project):
        path = f"{pending}/{name}"
        with ExitStack() as locks:
            runs = [RunKey(entity, project, r) for r in packs.pack_runs(root, path)]
            try:
                for run in runs:
                    locks.enter_context(run_lock(root, run, timeout=0))
            except WarehouseLockError:
                continue
            stray = []
            for run in runs:
                state = read_state(root, HISTORY, run)
                mine = [p.name for p in state.parts if p.pack == name] if state is not None else []
                if mine:
                    _drop_files(root, run, mine)
                else:
                    stray.append(run.run_id)
            if stray:
                packs.remove_runs(root, entity, project, path, stray)
            if root.fs.get_file_info(path).type == pafs.FileType.File:
                packs.promote(root, entity, project, name)
            done += 1
    _clear_scratch(root, pending)
    return done


def _clear_scratch(root: WarehouseRoot, pending: str) -> None:
    """Remove what interrupted pack writes left beside the pending packs (never read)."""
    for info in root.fs.get_file_info(pafs.FileSelector(pending, allow_not_found=True)):
        if info.base_name.startswith(packs.PACK_PREFIX) and info.type == pafs.FileType.File:
            continue
        if info.type == pafs.FileType.Directory:
            if root.is_local:
                shutil.rmtree(info.path, ignore_errors=True)
            else:
                root.fs.delete_dir(info.path)
        else:
            delete_file(root.fs, info.path)
