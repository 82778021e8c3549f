"""Finding runs to export through the client: listings filtered on the server, and what a
refresh must fetch compared with what the warehouse holds. Plain Python: no Dagster import."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from run_pipeline.client import Api, Run
from run_pipeline.settings import LIST_PAGE_SIZE
from run_pipeline.warehouse import RunKey, Warehouse


@dataclass(frozen=True)
class FoundRun:
    """A run a listing found: its identity, state and heartbeat as listed, and the client Run
    built from the listing's fields (exporting it needs no request to load it)."""

    key: RunKey
    state: str
    heartbeat_at: str  # the server's DateTime text, comparable as a string
    run: Run


def iter_runs(api: Api, entity: str, project: str, *, states=None, since: str | None = None,
              after: str | None = None, run_ids=None) -> Iterator[FoundRun]:
    """Runs of a project in heartbeat order, filtered on the server, lazily paged: `states`,
    heartbeat at or after `since` or strictly after `after` (ISO, UTC), `run_ids`."""
    clauses: list[dict[str, Any]] = []
    if states:
        clauses.append({"state": {"$in": list(states)}})
    if since:
        clauses.append({"heartbeatAt": {"$gte": since}})
    if after:
        clauses.append({"heartbeatAt": {"$gt": after}})
    if run_ids:
        clauses.append({"name": {"$in": list(run_ids)}})
    filters = {"$and": clauses} if clauses else None
    for run in api.runs(f"{entity}/{project}", filters=filters, order="+heartbeat_at", per_page=LIST_PAGE_SIZE):
        yield FoundRun(RunKey(entity, project, run.id), run.state, run.heartbeat_at or "", run)


def discover_runs(api: Api, entity: str, project: str, *, states=None, since: str | None = None,
                  after: str | None = None, run_ids=None, limit: int | None = None) -> list[FoundRun]:
    """`iter_runs` as a list of at most `limit` runs."""
    runs = iter_runs(api, entity, project, states=states, since=since, after=after, run_ids=run_ids)
    return list(runs if limit is None else islice(runs, max(0, limit)))


def marked_deleted(warehouse: Warehouse, entity: str, project: str) -> set[str]:
    """Ids of a project's runs the warehouse holds marked deleted."""
    return {key.run_id for key, _ in warehouse.deleted_runs() if key.entity == entity and key.project == project}


def vanished_runs(warehouse: Warehouse, entity: str, project: str, listed: list[FoundRun],
                  marked: set[str] | None = None, exported: set[str] | None = None) -> list[RunKey]:
    """Exported runs of a project (`exported`, listed when not given) that a complete listing
    (`listed`) no longer holds and that are not marked deleted yet (`marked`, read when not
    given): exporting them checks with the server and marks them."""
    if marked is None:
        marked = marked_deleted(warehouse, entity, project)
    if exported is None:
        exported = warehouse.exported_run_ids(entity, project)
    gone = exported - {f.key.run_id for f in listed} - marked
    return [RunKey(entity, project, run_id) for run_id in sorted(gone)]


def changed_runs(api: Api, warehouse: Warehouse, entity: str, project: str) -> list[FoundRun | RunKey]:
    """What a nightly refresh must fetch, however long since the last one ran: runs whose state
    or heartbeat differ from their last export, runs never exported, runs marked deleted that
    the server lists again (restored), and, as `RunKey`s, exported runs that the complete
    listing no longer holds (their export finds them gone and marks them deleted)."""
    listed = discover_runs(api, entity, project)
    marked = marked_deleted(warehouse, entity, project)
    # One pass over the project's exported rows, not one read per listed run.
    exported = warehouse.exported_states(entity, project)
    out: list[FoundRun | RunKey] = [
        found for found in listed
        if found.key.run_id in marked or exported.get(found.key.run_id) != (found.state, found.heartbeat_at[:19])]
    return out + vanished_runs(warehouse, entity, project, listed, marked, set(exported))
