"""`Api`: the entry point (credentials, base URL, default entity) and lookups of runs,
projects and artifacts. Mirrors `wandb.Api()`."""

from __future__ import annotations

import logging
import netrc
import os
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from run_pipeline.client import queries
from run_pipeline.client.artifacts import Artifact, parse_artifact_path
from run_pipeline.client.attrs import Attrs, User
from run_pipeline.client.auth import strip_userinfo
from run_pipeline.client.errors import (
    WandbAuthError,
    WandbClientError,
    WandbNotFoundError,
    WandbQueryError,
)
from run_pipeline.client.paging import Paginator
from run_pipeline.client.retry import RetryPolicy
from run_pipeline.client.run import Run
from run_pipeline.client.runs import Runs
from run_pipeline.client.transport import DEFAULT_BASE_URL, Transport


def app_url_from_base(base_url: str) -> str:
    """The web app URL W&B derives from an API URL: `api.wandb.X` → `wandb.X`,
    `api.<host>` → `app.<host>`, anything else (local, on-prem) is the base URL itself."""
    url = base_url.rstrip("/")
    if "://api.wandb.test" in url:
        return url.replace("://api.", "://app.", 1)
    if "://api.wandb." in url:
        return url.replace("://api.", "://", 1)
    if "://api." in url:
        return url.replace("://api.", "://app.", 1)
    return url


def api_key_from_netrc(base_url: str, path: str | os.PathLike | None = None) -> str | None:
    """The password `wandb login` stored in ~/.netrc for the API host, if any."""
    host = urllib.parse.urlsplit(base_url).hostname
    if not host:
        return None
    if path is None:
        path = os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        auth = netrc.netrc(os.fspath(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    if auth and auth[2]:
        _warn_if_readable_by_others(os.fspath(path))
        return auth[2]
    return None


_warned_netrc: set[str] = set()


def _warn_if_readable_by_others(path: str) -> None:
    """Warn once per file when the netrc holding the key is readable by group or others (as
    the W&B SDK's own tooling does); the key is still used."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & 0o077 and path not in _warned_netrc:
        _warned_netrc.add(path)
        logging.getLogger("run_pipeline.client").warning(
            "%s holds the W&B API key and is readable by other users (mode %o): run `chmod 600 %s`",
            path, mode & 0o777, path)


def parse_run_path(path: str, default_entity: Callable[[], str | None] | str | None,
                   default_project: str | None) -> tuple[str, str, str]:
    """Split a run path into (entity, project, run_id).

    Accepts `entity/project/run_id`, `entity/project/runs/run_id`, `entity/project:run_id`,
    `project/run_id`, `project:run_id` and `run_id`; the default entity is looked up only
    when the path lacks one.
    """
    original = path
    path = path.replace("/runs/", "/").strip("/ ")
    parts = path.split("/")
    entity = project = run_id = None
    if len(parts) == 3:
        entity, project, run_id = parts
    elif len(parts) == 2:
        if ":" in parts[1]:
            entity = parts[0]
            project, run_id = parts[1].split(":", 1)
        else:
            project, run_id = parts
    elif len(parts) == 1 and parts[0]:
        if ":" in parts[0]:
            project, run_id = parts[0].split(":", 1)
        else:
            run_id = parts[0]
    else:
        raise ValueError(f"invalid run path {original!r}")
    project = (project or default_project or "").strip()
    run_id = (run_id or "").strip()
    if entity is None:
        entity = default_entity() if callable(default_entity) else default_entity
    entity = (entity or "").strip()
    if not entity:
        raise ValueError(f"invalid run path {original!r} (missing entity)")
    if not project:
        raise ValueError(f"invalid run path {original!r} (missing project)")
    if not run_id:
        raise ValueError(f"invalid run path {original!r}")
    return entity, project, run_id


class Project(Attrs):
    """A W&B project (`name`, `entity`, `created_at`, `read_only`, ...)."""

    def __init__(self, client: Api, entity: str, name: str, attrs: dict[str, Any]):
        self._api = client
        self.entity = entity
        self.name = name
        self._attrs = dict(attrs)

    @property
    def path(self) -> list[str]:
        return [self.entity, self.name]

    @property
    def url(self) -> str:
        return f"{self._api.app_url}/{self.entity}/{self.name}"

    def runs(self, filters: dict[str, Any] | None = None, order: str = "+created_at",
             per_page: int = 50) -> Runs:
        return Runs(self._api, self.entity, self.name, filters, order, per_page)

    def __repr__(self) -> str:
        return f"<Project {self.entity}/{self.name}>"


class Projects(Paginator[Project]):
    """The projects of one entity."""

    def __init__(self, client: Api, entity: str, per_page: int = 200):
        super().__init__(per_page)
        self._api = client
        self.entity = entity

    def _fetch(self, cursor: str | None):
        data = self._api.transport.graphql(
            queries.PROJECTS, {"entity": self.entity, "cursor": cursor, "perPage": self.per_page})
        conn = data.get("models")
        if conn is None:
            raise self._api.missing(f"entity {self.entity} not found")
        edges = conn.get("edges") or []
        objects = [
            Project(self._api, e["node"].get("entityName") or self.entity, e["node"]["name"],
                    e["node"])
            for e in edges if e.get("node")
        ]
        page = conn.get("pageInfo") or {}
        cursor = edges[-1].get("cursor") if edges else page.get("endCursor")
        return objects, cursor, bool(page.get("hasNextPage")), None

    def __repr__(self) -> str:
        return f"<Projects {self.entity}>"


class Api:
    """Client for the W&B public API.

    The API key comes from `api_key`, else `WANDB_API_KEY`, else `~/.netrc` for the API host
    (what `wandb login` writes). The base URL comes from `base_url`, else `WANDB_BASE_URL`,
    else https://api.wandb.ai. `timeout` is per HTTP request; `retry` bounds attempts and the
    total time of one call.
    """

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *,
                 timeout: float | tuple[float, float] = (10.0, 60.0),
                 retry: RetryPolicy | None = None, entity: str | None = None,
                 project: str | None = None, app_url: str | None = None,
                 overrides: Mapping[str, Any] | None = None, pool_maxsize: int = 10,
                 environ: Mapping[str, str] | None = None,
                 netrc_path: str | os.PathLike | None = None):
        env = os.environ if environ is None else environ
        overrides = dict(overrides or {})
        # User info in a URL is never sent (the key is) and must never be shown or stored.
        base_url = strip_userinfo(base_url or overrides.get("base_url") or env.get("WANDB_BASE_URL")
                                  or DEFAULT_BASE_URL).rstrip("/")
        key = api_key or env.get("WANDB_API_KEY") or api_key_from_netrc(base_url, netrc_path)
        if not key:
            raise WandbAuthError(
                "no W&B API key: pass api_key=, set WANDB_API_KEY or run `wandb login`")
        self.base_url = base_url
        self.app_url = strip_userinfo(app_url or env.get("WANDB_APP_URL")
                                      or app_url_from_base(base_url)).rstrip("/")
        self._entity = entity or overrides.get("entity") or env.get("WANDB_ENTITY") or None
        self.default_project = (project or overrides.get("project")
                                or env.get("WANDB_PROJECT") or None)
        self._transport = Transport(base_url, key, timeout=timeout, retry=retry,
                                    pool_maxsize=pool_maxsize)
        # What rebuilds this client in another process (see `__reduce__`).
        self._settings = {"base_url": base_url, "timeout": timeout, "retry": retry,
                          "entity": self._entity, "project": self.default_project,
                          "app_url": self.app_url, "pool_maxsize": pool_maxsize}
        self._features: frozenset[str] | None = None
        self._viewer: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple:
        """Pickled as its settings, so an export process pool can give each worker a client of
        its own (a fresh connection pool). The pickle holds the API key: it is for handing a
        client to a child process, never for storage."""
        return _api_from_settings, (self._transport._auth.api_key, self._settings)

    def __repr__(self) -> str:
        return f"<Api {self.base_url}>"

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    @property
    def transport(self) -> Transport:
        """The HTTP transport every object of this client sends through."""
        return self._transport

    # -- identity -----------------------------------------------------------------------------

    def _viewer_attrs(self) -> dict[str, Any]:
        with self._lock:
            if self._viewer is None:
                data = self._transport.graphql(queries.VIEWER)
                viewer = data.get("viewer")
                if not viewer:
                    raise WandbAuthError(
                        "invalid API key: the server answered but knows no user for it")
                self._viewer = viewer
            return self._viewer

    def missing(self, message: str) -> WandbClientError:
        """The error for an object the server answered null for: not found, unless the server
        knows no viewer for the key (W&B can answer a bad key with HTTP 200 and nulls instead
        of 401), which makes it an authentication error."""
        try:
            self._viewer_attrs()
        except WandbAuthError as exc:
            return WandbAuthError(f"{exc} (while looking up: {message})")
        return WandbNotFoundError(message)

    @property
    def viewer(self) -> User:
        return User(self, self._viewer_attrs())

    @property
    def default_entity(self) -> str | None:
        if self._entity is None:
            self._entity = self._viewer_attrs().get("entity")
        return self._entity

    def server_features(self) -> frozenset[str]:
        """Names of the features the server reports as enabled (cached; empty if unknown)."""
        if self._features is None:
            try:
                data = self._transport.graphql(queries.SERVER_FEATURES)
            except WandbQueryError:
                data = {}
            features = ((data.get("serverInfo") or {}).get("features")) or []
            self._features = frozenset(f["name"] for f in features if f.get("isEnabled"))
        return self._features

    # -- lookups --------------------------------------------------------------------------------

    def run(self, path: str = "") -> Run:
        """One run by path; raises `WandbNotFoundError` naming the path if it does not exist."""
        entity, project, run_id = parse_run_path(
            path, lambda: self.default_entity, self.default_project)
        return Run(self, entity, project, run_id)

    def runs(self, path: str | None = None, filters: dict[str, Any] | None = None,
             order: str | None = "+created_at", per_page: int = 50) -> Runs:
        """A lazy sequence of a project's runs (`path` is `entity/project` or `project`)."""
        entity, project = self._project_path(path)
        return Runs(self, entity, project, filters=filters, order=order, per_page=per_page)

    def projects(self, entity: str | None = None, per_page: int = 200) -> Projects:
        return Projects(self, entity or self.default_entity, per_page)

    def project(self, name: str, entity: str | None = None) -> Project:
        if entity is None and "/" in name:
            entity, name = name.split("/", 1)
        entity = entity or self.default_entity
        data = self._transport.graphql(queries.PROJECT, {"project": name, "entity": entity})
        project = data.get("project")
        if project is None:
            raise self.missing(f"project {entity}/{name} not found")
        return Project(self, entity, name, project)

    def artifact(self, name: str, type: str | None = None) -> Artifact:
        """An artifact version by `entity/project/name:alias` (alias or `vN`; default latest)."""
        has_entity = len(name.strip("/").split("/")) >= 3
        entity, project, full_name = parse_artifact_path(
            name, self._entity if has_entity else self.default_entity, self.default_project)
        data = self._transport.graphql(queries.ARTIFACT_MEMBERSHIP_BY_NAME,
                                       {"entity": entity, "project": project, "name": full_name})
        membership = (data.get("project") or {}).get("artifactCollectionMembership")
        if not membership or not membership.get("artifact"):
            raise WandbNotFoundError(f"artifact {entity}/{project}/{full_name} not found")
        coll = (membership.get("artifactCollection") or {}).get("name")
        artifact = Artifact._from_attrs(self, membership["artifact"], entity, project, coll)
        if type is not None and artifact.type != type:
            raise ValueError(f"artifact {full_name} has type {artifact.type!r}, not {type!r}")
        return artifact

    def create_run(self, *, run_id: str | None = None, project: str | None = None,
                   entity: str | None = None, state: str = "running") -> Run:
        return Run.create(self, run_id=run_id, project=project, entity=entity, state=state)

    def _project_path(self, path: str | None) -> tuple[str, str]:
        if path is None:
            return self.default_entity, self.default_project or "uncategorized"
        parts = path.strip("/").split("/", 1)
        if len(parts) == 1:
            return self.default_entity, parts[0]
        return parts[0], parts[1]


def _api_from_settings(api_key: str, settings: dict[str, Any]) -> Api:
    return Api(api_key, **settings)
