"""Server profiles: behaviours of the real W&B service that the default emulator does not show
(history served only as exported Parquet, late exports, exclusive `sampledHistory` maxStep,
empty listing pages, `viewer: null` for a bad key, lagging search filters, crashes that leave
the heartbeat alone), switched on by name, and the per-run state they need.

With no profile active the emulator behaves exactly as without this module.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from graphql import DocumentNode, ExecutionResult, GraphQLError, GraphQLSchema
from graphql.execution.collect_fields import collect_fields
from graphql.language import FragmentDefinitionNode, OperationType
from graphql.utilities import get_operation_ast

from .dataset import TERMINAL_STATES

if TYPE_CHECKING:
    from .records import RunRecord
    from .store import Store

# name -> the W&B behaviour it reproduces (README.md, "Server profiles", has the long form).
PROFILES: dict[str, str] = {
    "parquet-only": "a run's exported history is served only as Parquet; windowed history() answers only "
                    "steps above the export",
    "delayed-export": "a run that reached a terminal state is served live first, exported after "
                      "export_delay_seconds",
    "exclusive-maxstep": "sampledHistory's maxStep is exclusive (servers older than 0.65)",
    "empty-pages": "run and project listings interleave empty pages with hasNextPage: true",
    "viewer-null": "a bad API key gets HTTP 200 with every top-level field null instead of 401",
    "lagging-filters": "filtered run listings see each run as it was filter_lag_seconds ago",
    "crash-no-heartbeat": "state changes leave heartbeatAt where it was",
}
DEFAULT_OPTIONS: dict[str, float] = {"export_delay_seconds": 2.0, "filter_lag_seconds": 2.0}
# A run's timeline keeps at least this much past (or the filter lag, if longer), and at most
# this many changes (a run logging fast changes its heartbeat on every append).
TIMELINE_RETENTION_SECONDS = 600.0
TIMELINE_MAX_ENTRIES = 1000


def check_profiles(names: Iterable[str], options: dict[str, Any] | None = None) -> tuple[frozenset, dict]:
    """The validated (profiles, options); ValueError names the first unknown name or bad value."""
    if not isinstance(names, (list, tuple, set, frozenset)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"profiles must be a list of profile names, got {names!r}")
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        raise ValueError(f"unknown emulator profile {unknown[0]!r}; known profiles: {', '.join(PROFILES)}")
    merged = dict(DEFAULT_OPTIONS)
    for key, value in (options or {}).items():
        if key not in DEFAULT_OPTIONS:
            raise ValueError(f"unknown profile option {key!r}; known options: {', '.join(DEFAULT_OPTIONS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"profile option {key} must be a number of seconds >= 0, got {value!r}")
        merged[key] = float(value)
    return frozenset(names), merged


@dataclass(frozen=True)
class Snapshot:
    """One Parquet export of a run: its file, the last step it holds, and the terminal epoch
    (the moment the run last reached a terminal state) it was made for."""

    path: Path
    last_step: int
    rows: int
    epoch: float | None


class _Track:
    """What a profile remembers of one run."""

    __slots__ = ("timeline", "terminal_since", "snapshot")

    def __init__(self) -> None:
        self.timeline: deque[tuple[float, dict | None]] = deque()
        self.terminal_since: float | None = None
        self.snapshot: Snapshot | None = None


def exportable(store: "Store", run: "RunRecord") -> bool:
    """Whether the run's history can be exported to Parquet at all: it has rows and every key
    flattens to one plain column (see Store.parquet_schema). Runs that cannot are served live
    in every profile, as in the default."""
    return len(run.history) > 0 and store.parquet_schema(run) is not None


class ProfileState:
    """The active profiles and options, and each run's timeline, terminal epoch and snapshot.

    Times come from `clock` (monotonic seconds). Thread-safe: resolvers and the control API
    share it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.lock = threading.RLock()
        self.active: frozenset[str] = frozenset()
        self.options: dict[str, float] = dict(DEFAULT_OPTIONS)
        self._tracks: dict[str, _Track] = {}

    def configure(self, names: Iterable[str] = (), **options: Any) -> None:
        """Replace the active set (empty = the default server) and the options (unset = default)."""
        active, merged = check_profiles(names, options)
        with self.lock:
            self.active, self.options = active, merged

    def __contains__(self, name: str) -> bool:
        return name in self.active

    def describe(self) -> dict:
        return {"profiles": sorted(self.active), "options": dict(self.options)}

    # -- per-run history ------------------------------------------------------------------
    def _track(self, run: "RunRecord") -> _Track:
        track = self._tracks.get(run.storage_id)
        if track is None:
            track = self._tracks[run.storage_id] = _Track()
        return track

    def observe(self, run: "RunRecord", *, previous_state: str | None = None, loaded: bool = False,
                created: bool = False) -> None:
        """Record the run's metadata after a change. `loaded`: read from disk (it has always
        looked like this, and the emulator first sees its state now); `created`: it did not
        exist before now."""
        with self.lock:
            now = self.clock()
            track = self._track(run)
            state = run.meta.get("state")
            if loaded:
                track.timeline.clear()
                track.timeline.append((-math.inf, dict(run.meta)))
            else:
                if created:
                    track.timeline.append((-math.inf, None))
                track.timeline.append((now, dict(run.meta)))
            if state in TERMINAL_STATES and (loaded or created or previous_state != state):
                track.terminal_since = now
            elif state not in TERMINAL_STATES:
                track.terminal_since = None
            keep = max(TIMELINE_RETENTION_SECONDS, self.options["filter_lag_seconds"])
            while len(track.timeline) > 1 and (track.timeline[1][0] <= now - keep
                                               or len(track.timeline) > TIMELINE_MAX_ENTRIES):
                track.timeline.popleft()

    def forget(self, run: "RunRecord") -> None:
        with self.lock:
            self._tracks.pop(run.storage_id, None)

    def forget_all(self) -> None:
        with self.lock:
            self._tracks.clear()

    def meta_as_of(self, run: "RunRecord", seconds_ago: float) -> dict | None:
        """The run's metadata as it was `seconds_ago`, or None when it did not exist yet."""
        with self.lock:
            track = self._tracks.get(run.storage_id)
            if not track or not track.timeline:
                return run.meta
            when = self.clock() - seconds_ago
            meta = track.timeline[0][1]
            for t, m in track.timeline:
                if t > when:
                    break
                meta = m
            return meta

    # -- lagging-filters --------------------------------------------------------------------
    def filter_view(self, filters: Any) -> Callable[["RunRecord"], Any]:
        """How a filtered listing sees a run: as it is, or, under `lagging-filters` with a
        non-empty filter, as it was `filter_lag_seconds` ago (None: not indexed yet)."""
        if not filters or "lagging-filters" not in self.active:
            return lambda run: run
        lag = self.options["filter_lag_seconds"]

        def view(run: "RunRecord") -> Any:
            meta = self.meta_as_of(run, lag)
            if meta is None:
                return None
            if meta is run.meta:
                return run
            old = copy.copy(run)
            old.meta = meta
            return old

        return view

    # -- parquet-only / delayed-export --------------------------------------------------------
    @property
    def serves_snapshots(self) -> bool:
        return bool(self.active & {"parquet-only", "delayed-export"})

    def snapshot(self, store: "Store", run: "RunRecord") -> Snapshot | None:
        """The export a snapshot profile serves for the run now, made on demand.

        Auto Parquet mode exports a run once it is in a terminal state (under `delayed-export`
        only `export_delay_seconds` after it got there); Parquet mode `parquet` also exports a
        running run when first asked. Rows logged after an export are served live above its
        last step until the run reaches a terminal state again; then a new export covering
        every row replaces it. A run whose history cannot be exported (`exportable`) keeps
        its earlier export, if any, or is served live."""
        if not self.serves_snapshots or store.parquet_mode == "live":
            return None
        with store.lock, self.lock:
            track = self._track(run)
            snap = track.snapshot
            terminal = run.meta.get("state") in TERMINAL_STATES
            if terminal:
                due = snap is None or snap.epoch != track.terminal_since
                if due and "delayed-export" in self.active and track.terminal_since is not None:
                    due = self.clock() - track.terminal_since >= self.options["export_delay_seconds"]
            else:
                due = snap is None and store.parquet_mode == "parquet"
            if due and exportable(store, run):
                path = store.parquet_export(run)
                snap = track.snapshot = Snapshot(path, run.history.last_step, len(run.history),
                                                 track.terminal_since)
            return snap

    def live_floor(self, store: "Store", run: "RunRecord") -> int | None:
        """The last step of the run's current export under a snapshot profile: live reads
        serve only the steps above it. None: everything is live."""
        snap = self.snapshot(store, run)
        return None if snap is None else snap.last_step

    # -- empty-pages ------------------------------------------------------------------------
    def page_request(self, after: str | None) -> tuple[str | None, str | None]:
        """(cursor of an empty page to answer instead, or None; the real `after`).

        Under `empty-pages` every request without a resume cursor gets an empty page whose
        endCursor resumes at the same position, so every second request is empty and every
        row is still reached by following endCursor while hasNextPage is true."""
        if "empty-pages" not in self.active:
            return None, after
        resume = _unwrap(after)
        if resume is not _NOT_WRAPPED:
            return None, resume
        return _wrap(after), after


_NOT_WRAPPED = object()


def _wrap(after: str | None) -> str:
    return base64.b64encode(json.dumps({"resume": after}).encode()).decode()


def _unwrap(after: str | None) -> Any:
    if not after:
        return _NOT_WRAPPED
    try:
        obj = json.loads(base64.b64decode(after))
    except ValueError:
        return _NOT_WRAPPED
    if isinstance(obj, dict) and set(obj) == {"resume"} and (obj["resume"] is None or isinstance(obj["resume"], str)):
        return obj["resume"]
    return _NOT_WRAPPED


def empty_connection(end_cursor: str, total: int) -> dict:
    """A page with no edges that says more follow."""
    return {"edges": [], "totalCount": total,
            "pageInfo": {"startCursor": None, "endCursor": end_cursor, "hasNextPage": True, "hasPreviousPage": False}}


# -- viewer-null ------------------------------------------------------------------------------
def null_result(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None,
                variables: dict) -> ExecutionResult:
    """What W&B answers a bad key with under `viewer-null`: every top-level field null
    (`{"viewer": null}` for a viewer query), resolving nothing."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        which = f"Unknown operation named '{operation_name}'." if operation_name else \
            "Must provide operation name if query contains multiple operations."
        return ExecutionResult(None, [GraphQLError(which)])
    root = schema.mutation_type if operation.operation == OperationType.MUTATION else schema.query_type
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    fields = collect_fields(schema, fragments, variables, root, operation.selection_set)
    return ExecutionResult({key: None for key in fields}, None)
