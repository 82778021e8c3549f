"""Resources: thin wrappers that build the W&B client and the warehouse. (The embedded
emulator's binding, chosen at load time when no W&B URL is set, is in `embedded.py`.)"""

from __future__ import annotations

from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import Iterator

import dagster as dg
from pydantic import Field

from run_pipeline.client import Api
from run_pipeline.settings import DEFAULT_WAREHOUSE
from run_pipeline.warehouse import Warehouse


class WandbResource(dg.ConfigurableResource):
    """Where runs come from: a W&B server."""

    base_url: str | None = Field(default=None, description="W&B API URL, e.g. https://api.wandb.ai; unset: "
                                                           "$WANDB_BASE_URL, else W&B SaaS")
    # repr=False: the resolved resource holds the key itself; its repr must not show it.
    api_key: str | None = Field(default=None, repr=False,
                                description="W&B API key (set it with dg.EnvVar); unset: ~/.netrc")
    entity: str | None = Field(default=None, description="entity to export; unset: the key's default entity")
    projects: list[str] = Field(default_factory=list,
                                description="projects to export, names or globs (`exp-*`); empty: every project")
    entities: list[str] = Field(default_factory=list,
                                description="further entities to export (with `entity`), each with `projects`")
    timeout: float = Field(default=30.0, description="seconds per HTTP request")

    @contextmanager
    def get_api(self) -> Iterator[Api]:
        with Api(api_key=self.api_key, base_url=self.base_url, timeout=self.timeout) as api:
            yield api

    def target(self, api: Api) -> tuple[str, list[str]]:
        """(entity, projects) to export, for the first entity."""
        entity = self.entity or api.default_entity
        return entity, self._projects(api, entity)

    def targets(self, api: Api) -> list[tuple[str, str]]:
        """Every (entity, project) to export: each configured entity (the key's default when
        none is), with the projects named or matched by a glob; all of them when none is given."""
        entities = list(dict.fromkeys([e for e in [self.entity, *self.entities] if e])) or [api.default_entity]
        return [(entity, project) for entity in entities for project in self._projects(api, entity)]

    def _projects(self, api: Api, entity: str) -> list[str]:
        names = [p for p in self.projects if not _is_glob(p)]
        globs = [p for p in self.projects if _is_glob(p)]
        if globs or not self.projects:
            listed = [p.name for p in api.projects(entity)]
            names += [n for n in listed if not self.projects or any(fnmatchcase(n, g) for g in globs)]
        return list(dict.fromkeys(names))


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


class WarehouseResource(dg.ConfigurableResource):
    """Where runs land: a local directory or an s3:// URI."""

    root: str = Field(default=DEFAULT_WAREHOUSE, description="warehouse root: a directory or s3://bucket/prefix")

    def get_warehouse(self) -> Warehouse:
        return Warehouse(self.root)  # a local root is made absolute there
