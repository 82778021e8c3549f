"""The query root's own fields: the viewer, the server's features and versions, and projects
(W&B's `model`/`models` are the same)."""

from __future__ import annotations

from ..profiles import empty_connection
from .base import page, store_of, user_node
from .projects import ProjectNode

FEATURES = (
    "MARK_RUN_FILES_UPLOADED",
    "TOTAL_COUNT_IN_FILE_CONNECTION",
    "USE_ARTIFACT_WITH_ENTITY_AND_PROJECT_INFORMATION",
    "LARGE_FILENAMES",
)


class Queries:
    def viewer(self, info):
        store = store_of(info)
        user = user_node({"username": store.default_entity, "name": store.default_entity,
                          "email": f"{store.default_entity}@localhost"})
        user["teams"] = {"edges": [{"node": {"id": e, "name": e}} for e in store.entities()]}
        return user

    def serverInfo(self, info):
        return {"features": [{"name": n, "isEnabled": True} for n in FEATURES],
                "cliVersionInfo": {"max_cli_version": "0.99.0"},
                "latestLocalVersionInfo": {"outOfDate": False, "latestVersionString": "0.31.0",
                                           "versionOnThisInstanceString": "0.31.0"}}

    def project(self, info, name=None, entityName=None):
        store = store_of(info)
        rec = store.get_project(entityName or store.default_entity, name or "")
        return ProjectNode(rec) if rec else None

    model = project

    def models(self, info, entityName=None, after=None, first=None):
        store = store_of(info)
        empty, after = store.profiles.page_request(after)
        projects = [ProjectNode(p) for p in store.list_projects(entityName or store.default_entity)]
        return empty_connection(empty, len(projects)) if empty else page(projects, after, first)
