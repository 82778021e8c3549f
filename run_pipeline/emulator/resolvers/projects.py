"""The Project node: its fields, the filtered and ordered run listing with cursors that stay
valid while runs come and go, and lookups of one run or artifact in it."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from graphql import GraphQLError

from .. import filters as flt
from ..profiles import empty_connection
from ..records import ProjectRecord, parse_time
from .artifacts import artifact_node
from .base import cursor, store_of, uncursor
from .runs import RunNode


class ProjectNode:
    def __init__(self, rec: ProjectRecord):
        self.rec = rec
        self.id = rec.storage_id
        self.internalId = rec.internal_id
        self.name = rec.name
        self.entityName = rec.entity
        self.entity = {"id": base64.b64encode(f"Entity:{rec.entity}".encode()).decode(), "name": rec.entity}
        self.isBenchmark = False
        self.readOnly = False
        self.user = None

    def createdAt(self, info):
        return self.rec.created_at

    def runCount(self, info, filters=None):
        try:
            return len(store_of(info).query_runs(self.rec.entity, self.rec.name, _check_filters(filters)))
        except flt.FilterError as exc:  # the caller's mistake, not a server failure to log
            raise GraphQLError(str(exc)) from exc

    def runs(self, info, filters=None, order=None, first=None, after=None):
        store = store_of(info)
        empty, after = store.profiles.page_request(after)
        try:
            keyed = store.query_runs(self.rec.entity, self.rec.name, _check_filters(filters), order)
            path, desc = flt.parse_order(order)
        except flt.FilterError as exc:
            raise GraphQLError(str(exc)) from exc
        if empty:
            return empty_connection(empty, len(keyed))
        start = 0
        if after:
            ck = uncursor(after)
            if not (isinstance(ck, list) and len(ck) == 2 and isinstance(ck[0], list) and len(ck[0]) == 3):
                raise GraphQLError(f"invalid cursor {after!r}")
            ckey = (tuple(_restore_time(v) for v in ck[0]), ck[1])
            while start < len(keyed) and flt.compare(keyed[start][0], ckey, desc) <= 0:
                start += 1
        first = 50 if first is None else max(first, 0)
        window = keyed[start:start + first]
        edges = [{"node": RunNode(r), "cursor": cursor([list(_dump_time(v) for v in k[0]), k[1]])} for k, r in window]
        return {"edges": edges, "totalCount": len(keyed),
                "pageInfo": {"startCursor": edges[0]["cursor"] if edges else None,
                             "endCursor": edges[-1]["cursor"] if edges else None,
                             "hasNextPage": start + first < len(keyed), "hasPreviousPage": start > 0}}

    def run(self, info, name):
        rec = store_of(info).get_run(self.rec.entity, self.rec.name, name)
        return RunNode(rec) if rec else None

    def bucket(self, info, name, desc=None):
        # Legacy (0.13) upload flow: the bucket is created on first use.
        store = store_of(info)
        rec = store.get_run(self.rec.entity, self.rec.name, name) or store.create_run(self.rec.entity, self.rec.name, name)
        return RunNode(rec)

    def artifact(self, info, name):
        art = store_of(info).artifacts.lookup(self.rec.entity, self.rec.name, name)
        return artifact_node(info, art) if art else None

    def artifactCollectionMembership(self, info, name):
        art = store_of(info).artifacts.lookup(self.rec.entity, self.rec.name, name)
        if not art:
            return None
        node = artifact_node(info, art)
        return {"id": art["id"], "versionIndex": art["version_index"], "createdAt": art["created_at"],
                "aliases": node["aliases"], "artifactCollection": node["artifactSequence"], "artifact": node}


def _dump_time(v: Any) -> Any:
    return {"$t": v.isoformat()} if isinstance(v, datetime) else v


def _restore_time(v: Any) -> Any:
    return parse_time(v["$t"]) if isinstance(v, dict) and "$t" in v else v


def _check_filters(filters: Any) -> Any:
    if filters is not None and not isinstance(filters, dict):
        raise GraphQLError(f"filters must be a JSON object, got {type(filters).__name__}")
    return filters
