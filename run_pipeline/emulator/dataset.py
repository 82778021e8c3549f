"""The emulator's on-disk dataset format: run directories, run.json metadata and JSONL logs.

Layout (documented in README.md, "Dataset format"):
``<root>/<entity>/<project>/<run_id>/{run.json, history.jsonl, system.jsonl, files/...}``;
deleted runs wait in ``<root>/<entity>/<project>/.deleted/<run_id>/`` with a ``deleted.json``.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import re
import shutil
import tempfile
import threading
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

RUN_META = "run.json"
HISTORY_LOG = "history.jsonl"
SYSTEM_LOG = "system.jsonl"
FILES_DIR = "files"
ARTIFACTS_FILE = ".artifacts.json"
TRASH_DIR = ".deleted"  # hidden, so never taken for a run
DELETION_RECORD = "deleted.json"
RUN_STATES = ("running", "finished", "crashed", "failed", "killed", "preempting", "preempted", "pending")
TERMINAL_STATES = frozenset({"finished", "crashed", "failed", "killed", "preempted"})


class DatasetError(ValueError):
    """A dataset file is malformed; the message names the file and the problem."""


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("_")


def iter_run_dirs(root: Path) -> Iterator[tuple[str, str, str, Path]]:
    """Yield (entity, project, run_id, run_dir) for every run directory under root."""
    if not root.is_dir():
        return
    for ent in sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name)):
        for proj in sorted(p for p in ent.iterdir() if p.is_dir() and not is_hidden(p.name)):
            for run in sorted(p for p in proj.iterdir() if p.is_dir() and not is_hidden(p.name)):
                yield ent.name, proj.name, run.name, run


def iter_project_dirs(root: Path) -> Iterator[tuple[str, str, Path]]:
    if not root.is_dir():
        return
    for ent in sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name)):
        for proj in sorted(p for p in ent.iterdir() if p.is_dir() and not is_hidden(p.name)):
            yield ent.name, proj.name, proj


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to path so that a reader sees the old or the new file, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1, sort_keys=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def move_to_trash(run_dir: Path, deleted_at: str) -> Path:
    """Move a run directory whole into its project's trash (one rename: the run is either live
    or deleted, never half of each) and record when. An older deletion of the same id goes."""
    trash = run_dir.parent / TRASH_DIR / run_dir.name
    if trash.exists():
        older = trash.with_name(f".replaced-{run_dir.name}-{os.getpid()}")
        os.replace(trash, older)
        shutil.rmtree(older, ignore_errors=True)
    trash.parent.mkdir(exist_ok=True)
    os.replace(run_dir, trash)
    write_json_atomic(trash / DELETION_RECORD, {"deleted_at": deleted_at})
    return trash


def take_from_trash(project_dir: Path, run_id: str) -> Path:
    """Move a deleted run back to its place; KeyError when the trash does not hold it."""
    trash = project_dir / TRASH_DIR / run_id
    if not trash.is_dir():
        raise KeyError(run_id)
    run_dir = project_dir / run_id
    os.replace(trash, run_dir)
    (run_dir / DELETION_RECORD).unlink(missing_ok=True)
    return run_dir


def iter_trash(project_dir: Path) -> Iterator[tuple[str, str | None]]:
    """Yield (run_id, deleted_at as written, or None if unreadable) for the project's trash."""
    trash = project_dir / TRASH_DIR
    for run_dir in sorted(trash.iterdir()) if trash.is_dir() else ():
        if run_dir.is_dir() and not is_hidden(run_dir.name):
            try:
                when = json.loads((run_dir / DELETION_RECORD).read_text(encoding="utf-8")).get("deleted_at")
            except (OSError, ValueError, AttributeError):
                when = None
            yield run_dir.name, when if isinstance(when, str) else None


def read_run_meta(run_dir: Path) -> dict:
    path = run_dir / RUN_META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing run.json") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    state = meta.get("state")
    if state not in RUN_STATES:
        raise DatasetError(f"{path}: 'state' must be one of {', '.join(RUN_STATES)}, got {state!r}")
    return meta


# orjson reads integers beyond 64 bits as (rounded) floats: lines with 19 digits in a row
# may hold one and go to the exact stdlib parser.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def parse_row(line: bytes | str) -> dict:
    """Parse one JSONL row exactly; NaN/Infinity tokens are allowed (orjson first, for speed)."""
    raw = line.encode("utf-8") if isinstance(line, str) else line
    if _LONG_DIGITS.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(line)


def dumps_row(row: dict) -> str:
    """One JSONL line; non-finite floats are written as NaN/Infinity tokens like W&B rows."""
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def value_type(v: Any) -> str:
    """The W&B historyKeys type name of a logged value."""
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        t = v.get("_type")
        return t if isinstance(t, str) else "map"
    return "unknown"


@dataclass
class KeyStats:
    counts: dict[str, int] = field(default_factory=dict)
    monotonic: bool = True
    previous: Any = None
    # Arrow-level kinds seen ("int", "float", "bool", "str", "other"): decides Parquet export.
    kinds: set = field(default_factory=set)

    def add(self, v: Any) -> None:
        t = value_type(v)
        self.counts[t] = self.counts.get(t, 0) + 1
        if t == "number" and isinstance(self.previous, (int, float)) and not isinstance(self.previous, bool):
            if not (v >= self.previous):
                self.monotonic = False
        self.previous = v
        if isinstance(v, bool):
            self.kinds.add("bool")
        elif isinstance(v, int):
            self.kinds.add("int" if -(2**63) <= v < 2**63 else "other")
        elif isinstance(v, float):
            self.kinds.add("float")
        elif isinstance(v, str):
            self.kinds.add("str")
        elif v is not None:
            self.kinds.add("other")


class RowLog:
    """An append-only JSONL log with an in-memory index of line offsets and steps.

    The file is the source of truth; the index lets pages be served by seeking, so the
    emulator's memory does not grow with the length of a run.
    """

    def __init__(self, path: Path, step_key: str | None = "_step"):
        self.path = path
        self.step_key = step_key
        self._lock = threading.RLock()
        self._indexed = False
        self.offsets = array("q")
        self.lengths = array("q")
        self.steps = array("q")
        self.keys: dict[str, KeyStats] = {}
        self._order: tuple[list[int], list[int]] | None = None

    def _ensure(self) -> None:
        if self._indexed:
            return
        with self._lock:
            if self._indexed:
                return
            # Start clean: a failed earlier pass may have indexed the lines before the bad one.
            self.offsets, self.lengths, self.steps = array("q"), array("q"), array("q")
            self.keys, self._order = {}, None
            if self.path.exists():
                with open(self.path, "rb") as fh:
                    pos = 0
                    for lineno, line in enumerate(fh, 1):
                        if line.strip():
                            self._index_line(line, pos, lineno)
                        pos += len(line)
            self._indexed = True

    def _index_line(self, line: bytes, pos: int, lineno: int) -> None:
        try:
            row = parse_row(line)
        except ValueError as exc:
            raise DatasetError(f"{self.path}:{lineno}: not a JSON object ({exc})") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"{self.path}:{lineno}: not a JSON object")
        if self.step_key:
            step = row.get(self.step_key)
            if isinstance(step, float) and step.is_integer():
                step = int(step)
            if not isinstance(step, int) or isinstance(step, bool):
                raise DatasetError(f"{self.path}:{lineno}: '{self.step_key}' must be an integer, got {step!r}")
        else:
            step = len(self.steps)
        self.offsets.append(pos)
        self.lengths.append(len(line))
        self.steps.append(step)
        self._order = None
        for k, v in row.items():
            ks = self.keys.get(k)
            if ks is None:
                ks = self.keys[k] = KeyStats()
            ks.add(v)

    def __len__(self) -> int:
        self._ensure()
        return len(self.steps)

    @property
    def last_step(self) -> int:
        self._ensure()
        return max(self.steps) if self.steps else -1

    def order(self) -> tuple[list[int], list[int]]:
        """(line indices sorted by step, their steps); repeated steps keep their logged order."""
        self._ensure()
        with self._lock:
            if self._order is None:
                steps = self.steps
                if all(steps[i] <= steps[i + 1] for i in range(len(steps) - 1)):
                    order = list(range(len(steps)))
                else:
                    order = sorted(range(len(steps)), key=steps.__getitem__)
                self._order = (order, [steps[i] for i in order])
            return self._order

    def window(self, min_step: int | None, max_step: int | None, inclusive_max: bool = False) -> list[int]:
        """Line indices with min_step <= step < max_step (<= when inclusive_max), in step order."""
        order, sorted_steps = self.order()
        lo = 0 if min_step is None else bisect.bisect_left(sorted_steps, min_step)
        if max_step is None:
            hi = len(order)
        elif inclusive_max:
            hi = bisect.bisect_right(sorted_steps, max_step)
        else:
            hi = bisect.bisect_left(sorted_steps, max_step)
        return order[lo:hi]

    def read_lines(self, indices: Iterable[int]) -> list[str]:
        """The raw JSON text of the given lines (contiguous runs are read in one go)."""
        self._ensure()
        out: list[str] = []
        indices = list(indices)
        if not indices:
            return out
        with open(self.path, "rb") as fh:
            i = 0
            while i < len(indices):
                j = i
                while j + 1 < len(indices) and indices[j + 1] == indices[j] + 1:
                    j += 1
                start = self.offsets[indices[i]]
                end = self.offsets[indices[j]] + self.lengths[indices[j]]
                fh.seek(start)
                chunk = fh.read(end - start).decode("utf-8")
                out.extend(ln for ln in chunk.split("\n") if ln.strip())
                i = j + 1
        return [ln.rstrip("\r") for ln in out]

    def read_rows(self, indices: Iterable[int]) -> list[dict]:
        return [parse_row(ln) for ln in self.read_lines(indices)]

    def append(self, rows: list[dict]) -> None:
        """Append rows (each needs an integer step key) durably, then index them."""
        self._ensure()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as fh:
                pos = fh.tell()
                for n, row in enumerate(rows, 1):
                    line = (dumps_row(row) + "\n").encode("utf-8")
                    fh.write(line)
                    self._index_line(line, pos, len(self.steps) + 1)
                    pos += len(line)
                fh.flush()
                os.fsync(fh.fileno())

    def history_keys(self) -> dict:
        self._ensure()
        keys = {}
        for k, ks in self.keys.items():
            keys[k] = {
                "typeCounts": [{"type": t, "count": c} for t, c in ks.counts.items()],
                "monotonic": ks.monotonic,
                "previousValue": json_safe(ks.previous),
            }
        return {"keys": keys, "lastStep": self.last_step}


def json_safe(v: Any) -> Any:
    """Replace non-finite floats by "NaN"/"Infinity"/"-Infinity" so strict JSON can carry them."""
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return v
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v
