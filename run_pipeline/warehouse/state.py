"""What is exported: one manifest per run and series, and the commit protocol that keeps the
manifest, the part files and what the views see in step.

State lives in `<table>/entity=E/project=P/run_id=R/_manifest.json` (`table` is `history` or
`system_metrics`; the history manifest also covers the run's `metrics` parts, and names the
pack holding a part's long form once compaction moved it, see `packs.py`). It records the
committed parts in step order (name, rows, step range, column types), the run-level column
names and types, the total rows and the last exported step. The views never read it (their glob
is `*.parquet`); it is what the next export trusts.

Commit protocol. Part files are immutable and never reused: their names carry a generation
number and a sequence number. To go from the committed list `old` to a new list `new`, the
files of `old` after the longest common prefix are deleted newest first, the new files are
placed oldest first (each placement is one atomic rename or upload), and the manifest is
written last, atomically. A reader therefore always sees each run as a step-ordered prefix of
either the old or the new export: never a duplicated row, never a partial file. An incremental
export is the case where `old` is a prefix of `new`: nothing is deleted, only new parts appear.
If a crash interrupts a commit, the directory listing no longer matches the manifest; the next
export notices and does a full replace.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow.fs as pafs

from . import packs
from .errors import WarehouseError
from .layout import (
    METRICS,
    PARQUET_SUFFIX,
    RunKey,
    WarehouseRoot,
    decode_partition_value,
)
from .parquet import Stage, delete_file, list_files, write_bytes_file
from .parts import PartInfo, SeriesSpec, parse_part_name

MANIFEST = "_manifest.json"
#: Bump when the on-disk format changes: older manifests then force a full replace.
FORMAT = 1


@dataclass
class RunState:
    """The committed export of one series of one run."""

    table: str
    generation: int
    parts: list[PartInfo]
    #: (metric key, physical column name, run-level type), in order of first appearance.
    columns: list[tuple[str, str, str]] = field(default_factory=list)
    rows: int = 0
    last_step: int = -1
    exported_at: str = ""
    format: int = FORMAT
    #: Rows whose `_step` equals the previous row's (W&B allows repeats); None in manifests
    #: written before it was recorded.
    repeated_steps: int | None = None

    @property
    def types(self) -> dict[str, str]:
        return {physical: ltype for _, physical, ltype in self.columns}

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.parts)

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "table": self.table, "generation": self.generation,
                "rows": self.rows, "last_step": self.last_step, "exported_at": self.exported_at,
                "repeated_steps": self.repeated_steps,
                "columns": [list(c) for c in self.columns], "parts": [p.to_json() for p in self.parts]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunState:
        return cls(table=d["table"], generation=int(d["generation"]),
                   parts=[PartInfo.from_json(p) for p in d["parts"]],
                   columns=[(k, p, t) for k, p, t in d["columns"]], rows=int(d["rows"]),
                   last_step=int(d["last_step"]), exported_at=d.get("exported_at", ""),
                   format=int(d["format"]),
                   repeated_steps=None if d.get("repeated_steps") is None else int(d["repeated_steps"]))


def read_state(root: WarehouseRoot, table: str, run: RunKey) -> RunState | None:
    """The committed state of a run's series, or None if never exported (or from an older
    format, which the caller must treat as "rewrite")."""
    path = f"{root.run_dir(table, run)}/{MANIFEST}"
    try:
        with root.fs.open_input_stream(path) as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    try:
        return RunState.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None


def last_exported_step(root: WarehouseRoot, run: RunKey, table: str = "history") -> int:
    """Last committed step of a run's history; -1 when nothing is exported."""
    state = read_state(root, table, run)
    return state.last_step if state is not None else -1


def iter_run_states(root: WarehouseRoot, table: str = "history") -> Iterator[tuple[RunKey, RunState]]:
    """Every run with a committed manifest in `table`, with its state (one listing of the
    table plus one small read per run)."""
    selector = pafs.FileSelector(root.path(table), recursive=True, allow_not_found=True)
    for info in root.fs.get_file_info(selector):
        if info.type != pafs.FileType.File or info.base_name != MANIFEST:
            continue
        components = info.path[len(root.path(table)) + 1:].split("/")[:-1]
        if len(components) != 3 or not all("=" in c for c in components):
            continue
        run = RunKey(*(decode_partition_value(c.split("=", 1)[1]) for c in components))
        state = read_state(root, table, run)
        if state is not None:
            yield run, state


@dataclass
class Listing:
    """The part files actually present for a run (what the views see)."""

    series: list[str]
    metrics: list[str]
    #: Names of the committed metrics packs the manifest refers to that still hold the run (a
    #: replace or deletion cut short after taking the run out of its pack leaves a manifest
    #: naming a pack without its rows, and a compaction cut short a manifest naming a pack not
    #: yet promoted or grown: not consistent, so the next export replaces the run).
    packs: frozenset[str] = frozenset()

    def generation(self) -> int:
        return max((parse_part_name(n)[0] for n in [*self.series, *self.metrics]), default=0)


def list_parts(root: WarehouseRoot, spec: SeriesSpec, run: RunKey, state: RunState | None = None) -> Listing:
    series = [n for n in list_files(root.fs, root.run_dir(spec.table, run)) if n.endswith(PARQUET_SUFFIX)]
    metrics = []
    if spec.metrics:
        metrics = [n for n in list_files(root.fs, root.run_dir(METRICS, run)) if n.endswith(PARQUET_SUFFIX)]
    packed = frozenset()
    named = {p.pack for p in state.parts if p.pack} if state is not None else set()
    if named:
        directory = packs.pack_dir(root, run.entity, run.project)
        packed = frozenset(name for name in named & set(packs.committed_packs(root, run.entity, run.project))
                           if _holds(root, f"{directory}/{name}", run.run_id))
    return Listing(series, metrics, packed)


def _holds(root: WarehouseRoot, path: str, run_id: str) -> bool:
    """Whether the pack at `path` lists the run (False if it went meanwhile)."""
    try:
        return run_id in packs.pack_runs(root, path)
    except FileNotFoundError:
        return False


def is_consistent(state: RunState | None, listing: Listing) -> bool:
    """Whether the files on disk are exactly the ones the manifest committed (and the packs it
    names are committed)."""
    if state is None:
        return not listing.series and not listing.metrics
    return (sorted(p.name for p in state.parts) == listing.series
            and sorted(p.name for p in state.parts if p.metrics_file) == listing.metrics
            and all(p.pack in listing.packs for p in state.parts if p.pack))


def commit(root: WarehouseRoot, stage: Stage, spec: SeriesSpec, run: RunKey,
           old: RunState | None, listing: Listing, new: RunState) -> None:
    """Replace the committed parts of `old` by those of `new` (see the module docstring)."""
    series_dir, metrics_dir = root.run_dir(spec.table, run), root.run_dir(METRICS, run)
    if is_consistent(old, listing):
        old_parts = old.parts if old is not None else []
        keep = 0
        while keep < min(len(old_parts), len(new.parts)) and old_parts[keep].name == new.parts[keep].name:
            keep += 1
        doomed = [(p.name, p.name if p.metrics_file else None) for p in old_parts[keep:]]
        # A pack holds all of a run's parts packed together, so a doomed packed part means
        # the run leaves those packs whole; parts kept never share a pack with a doomed one
        # (a replace renames every part: new generation).
        unpack = {p.pack for p in old_parts[keep:] if p.pack}
        if unpack & {p.pack for p in old_parts[:keep] if p.pack}:
            raise WarehouseError(f"run {run.path}: a commit would keep part of a metrics pack")
    else:  # debris of an interrupted commit: remove everything listed
        keep = 0
        doomed = [(None, n) for n in listing.metrics] + [(n, None) for n in listing.series]
        unpack = None  # whichever packs hold the run
    placing = new.parts[keep:]
    if spec.metrics and (unpack is None or unpack):
        packs.remove_run(root, run, unpack)
    if doomed:
        for p in placing:  # object stores: upload before deleting, so the gap stays short
            stage.upload(spec.table, p.name)
            if p.metrics_file:
                stage.upload(METRICS, p.name)
    for series_name, metrics_name in reversed(doomed):
        if metrics_name:
            delete_file(root.fs, f"{metrics_dir}/{metrics_name}")
        if series_name:
            delete_file(root.fs, f"{series_dir}/{series_name}")
    for p in placing:
        stage.place(spec.table, p.name, f"{series_dir}/{p.name}")
        if p.metrics_file:
            stage.place(METRICS, p.name, f"{metrics_dir}/{p.name}")
    new.exported_at = datetime.now(timezone.utc).isoformat()
    write_state(stage, spec.table, run, new)


def write_state(stage: Stage, table: str, run: RunKey, state: RunState) -> None:
    """Write a run's manifest, atomically (the last step of every change to its files)."""
    write_bytes_file(stage, table, MANIFEST, json.dumps(state.to_json()).encode("utf-8"))
    stage.place(table, MANIFEST, f"{stage.root.run_dir(table, run)}/{MANIFEST}")


def delete_series(root: WarehouseRoot, spec: SeriesSpec, run: RunKey) -> None:
    """Remove a run's series: its rows in metrics packs first, then its parts (newest first),
    the manifest last."""
    if spec.metrics:
        packs.remove_run(root, run)
    listing = list_parts(root, spec, run)
    for name in reversed(listing.metrics):
        delete_file(root.fs, f"{root.run_dir(METRICS, run)}/{name}")
    for name in reversed(listing.series):
        delete_file(root.fs, f"{root.run_dir(spec.table, run)}/{name}")
    delete_file(root.fs, f"{root.run_dir(spec.table, run)}/{MANIFEST}")
