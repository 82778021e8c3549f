"""`Runs`: a lazy, sized, paging sequence over a project's runs (full fragment per node)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from run_pipeline.client import queries
from run_pipeline.client.paging import Paginator
from run_pipeline.client.run import Run

if TYPE_CHECKING:
    from run_pipeline.client.api import Api


class Runs(Paginator[Run]):
    """Runs of one project matching `filters` (MongoDB-style, evaluated by the server), in
    `order` (`+created_at`, `-summary_metrics.loss`, `+config.lr.value`, ...).

    Each page is one request that already carries config, summary, system metrics and history
    keys for every run: reading them never sends a query per run. `len()` is `runCount`.
    """

    def __init__(self, client: Api, entity: str, project: str,
                 filters: dict[str, Any] | None = None, order: str | None = "+created_at",
                 per_page: int = 50):
        super().__init__(per_page)
        self._api = client
        self.entity = entity
        self.project = project
        self.filters = dict(filters or {})
        self.order = order
        self.read_only: bool | None = None
        self.project_internal_id: str | None = None

    def _fetch(self, cursor: str | None):
        data = self._api.transport.graphql(queries.RUNS, {
            "project": self.project, "entity": self.entity, "cursor": cursor,
            "perPage": self.per_page, "order": self.order,
            "filters": json.dumps(self.filters),
        })
        project = data.get("project")
        if project is None:
            raise self._api.missing(f"project {self.entity}/{self.project} not found")
        self.read_only = project.get("readOnly")
        self.project_internal_id = project.get("internalId")
        conn = project.get("runs") or {}
        edges = conn.get("edges") or []
        objects = [
            Run(self._api, self.entity, self.project, e["node"]["name"], e["node"])
            for e in edges if e.get("node")
        ]
        page = conn.get("pageInfo") or {}
        next_cursor = (edges[-1].get("cursor") if edges else None) or page.get("endCursor")
        return objects, next_cursor, bool(page.get("hasNextPage")), project.get("runCount")

    def __repr__(self) -> str:
        return f"<Runs {self.entity}/{self.project}>"
