"""`Run`: one W&B run with every attribute and method of W&B's public `Run` class: identity,
metadata, writes, files and artifacts here; the history methods and the bulk-export readers
(`iter_history_batches`, `iter_system_metrics_batches`) in `run_history.py`, the decoding of
the server's fields in `run_fields.py`."""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import warnings
from datetime import datetime
from typing import TYPE_CHECKING, Any

from run_pipeline.client import queries
from run_pipeline.client.artifacts import (
    Artifact,
    RunArtifacts,
    log_artifact,
    use_artifact,
)
from run_pipeline.client.attrs import (
    Attrs,
    User,
    generate_id,
    parse_datetime,
    snake_to_camel,
)
from run_pipeline.client.errors import (
    WandbClientError,
    WandbMalformedDataError,
)
from run_pipeline.client.files import File, Files, upload_run_file
from run_pipeline.client.history import HistoryReader
from run_pipeline.client.run_fields import decode_run_fields
from run_pipeline.client.run_history import RunHistory
from run_pipeline.client.summary import Summary
from run_pipeline.settings import TERMINAL_STATES

if TYPE_CHECKING:
    from run_pipeline.client.api import Api


class Run(RunHistory, Attrs):
    """A single W&B run.

    Attributes mirror W&B's `Run`: tags, url, id, name, state, config, created_at,
    system_metrics, summary, project, entity, user, path, notes, read_only, history_keys,
    json_config, lastHistoryStep, storage_id, username; any other response field is readable
    by its snake_case name (`run.job_type` reads `jobType`).
    """

    def __init__(self, client: Api, entity: str, project: str, run_id: str,
                 attrs: dict[str, Any] | None = None):
        self._api = client
        self._transport = client.transport
        self._entity = entity
        self.project = project
        self._attrs: dict[str, Any] = {}
        # The fields as the server sent them (`_attrs` holds them decoded): enough to rebuild
        # this Run elsewhere without asking again (see `export.export_runs`).
        self.server_attrs: dict[str, Any] = {}
        self._summary: Summary | None = None
        self._history_reader: HistoryReader | None = None
        self._malformed: dict[str, str] = {}  # field -> why it cannot be read
        self._set_attrs(dict(attrs or {}))
        self._attrs.setdefault("name", run_id)
        if not attrs:
            self.load(force=True)

    # -- loading ------------------------------------------------------------------------------

    def _set_attrs(self, attrs: dict[str, Any]) -> None:
        self.server_attrs.update(attrs)
        decoded, problems = decode_run_fields(attrs)
        for key, problem in problems.items():
            if problem is None:
                self._malformed.pop(key, None)
            else:  # reading the field raises WandbMalformedDataError
                self._malformed[key] = problem
        if "summaryMetrics" in decoded:
            self._summary = None
        self._attrs.update(decoded)

    def _ensure_full(self, key: str) -> None:
        if key not in self._attrs:
            self.load(force=True)
        if key in self._malformed:
            raise WandbMalformedDataError(f"run {self._path_str}: {self._malformed[key]}")

    def load(self, force: bool = False) -> dict[str, Any]:
        """Fetch the run (full fragment) when `force` or nothing is loaded yet.

        Raises `WandbNotFoundError` naming the path when the run does not exist."""
        if force or "id" not in self._attrs:
            self._set_attrs(dict(self._run_field(queries.RUN)))
        return self._attrs

    # -- identity ------------------------------------------------------------------------------

    @property
    def entity(self) -> str:
        return self._entity

    @property
    def username(self) -> str:
        """Deprecated alias of `entity` (as in W&B)."""
        warnings.warn("Run.username is deprecated; use Run.entity", DeprecationWarning,
                      stacklevel=2)
        return self._entity

    @property
    def id(self) -> str:
        return self._attrs["name"]

    @id.setter
    def id(self, value: str) -> None:
        self._attrs["name"] = value

    @property
    def storage_id(self) -> str:
        self._ensure_full("id")
        return self._attrs["id"]

    @property
    def name(self) -> str | None:
        return self._attrs.get("displayName")

    @name.setter
    def name(self, value: str | None) -> None:
        self._attrs["displayName"] = value

    display_name = name

    @property
    def state(self) -> str:
        return self._attrs.get("state", "not found")

    @property
    def path(self) -> list[str]:
        return [urllib.parse.quote(str(p), safe="") for p in (self.entity, self.project, self.id)]

    @property
    def _path_str(self) -> str:
        return f"{self.entity}/{self.project}/{self.id}"

    @property
    def url(self) -> str:
        parts = self.path
        return f"{self._api.app_url}/{parts[0]}/{parts[1]}/runs/{parts[2]}"

    # -- editable metadata (persisted by update()) ---------------------------------------------

    def _editable(key: str, default: Any = None):  # noqa: N805 - property factory
        def getter(self: Run) -> Any:
            if key not in self._attrs and isinstance(default, list):
                self._attrs[key] = []
            return self._attrs.get(key, default)

        def setter(self: Run, value: Any) -> None:
            self._attrs[key] = value

        return property(getter, setter)

    tags = _editable("tags", [])
    notes = _editable("notes")
    description = _editable("description")
    group = _editable("group")
    job_type = _editable("jobType")
    del _editable

    @property
    def read_only(self) -> bool | None:
        return self._attrs.get("readOnly")

    @property
    def created_at(self) -> str | None:
        """ISO string as W&B sends it (UTC without zone); see `created_at_utc`."""
        return self._attrs.get("createdAt")

    @property
    def created_at_utc(self) -> datetime | None:
        return parse_datetime(self._attrs.get("createdAt"))

    @property
    def heartbeat_at_utc(self) -> datetime | None:
        return parse_datetime(self._attrs.get("heartbeatAt"))

    @property
    def updated_at_utc(self) -> datetime | None:
        return parse_datetime(self._attrs.get("updatedAt"))

    @property
    def user(self) -> User | None:
        user = self._attrs.get("user")
        return User(self._api, user) if user else None

    @property
    def config(self) -> dict[str, Any]:
        self._ensure_full("config")
        return self._attrs["config"]

    @property
    def rawconfig(self) -> dict[str, Any]:
        self._ensure_full("config")
        self._ensure_full("rawconfig")
        return self._attrs["rawconfig"]

    @property
    def json_config(self) -> str:
        config: dict[str, Any] = {}
        if "_wandb" in self.rawconfig:
            config["_wandb"] = {"value": self.rawconfig["_wandb"], "desc": None}
        for key, value in self.config.items():
            config[key] = {"value": value, "desc": None}
        return json.dumps(config, default=str)

    @property
    def summary(self) -> Summary:
        if self._summary is None:
            self._ensure_full("summaryMetrics")
            self._summary = Summary(self, self._attrs["summaryMetrics"], self._transport)
        return self._summary

    @property
    def summary_metrics(self) -> dict[str, Any]:
        return self.summary.to_dict()

    @property
    def system_metrics(self) -> dict[str, Any]:
        self._ensure_full("systemMetrics")
        return self._attrs["systemMetrics"]

    @property
    def history_keys(self) -> dict[str, Any] | None:
        self._ensure_full("historyKeys")
        return self._attrs["historyKeys"]

    def snake_to_camel(self, string: str) -> str:
        return snake_to_camel(string)

    # -- writes --------------------------------------------------------------------------------

    @classmethod
    def create(cls, api: Api, run_id: str | None = None, project: str | None = None,
               entity: str | None = None, state: str = "running") -> Run:
        """Create a run (state "running" or "pending") and return it without another request."""
        run_id = run_id or generate_id()
        project = project or api.default_project or "uncategorized"
        entity = entity or api.default_entity
        data = api._transport.graphql(queries.CREATE_RUN, {
            "entity": entity, "project": project, "name": run_id, "state": state})
        bucket = (data.get("upsertBucket") or {}).get("bucket")
        if not bucket:
            raise WandbClientError(f"creating run {entity}/{project}/{run_id} returned no run")
        proj = bucket.get("project") or {}
        return cls(
            api, (proj.get("entity") or {}).get("name") or entity, proj.get("name") or project,
            bucket["name"],
            {"id": bucket["id"], "name": bucket["name"], "config": "{}", "systemMetrics": "{}",
             "summaryMetrics": "{}", "tags": [], "description": None, "notes": None,
             "state": state},
        )

    def update(self) -> None:
        """Persist tags, name, notes, description, group, job type, config and summary."""
        data = self._transport.graphql(queries.UPSERT_RUN, {
            "id": self.storage_id, "tags": list(self.tags or []),
            "description": self.description, "notes": self.notes,
            "display_name": self.name, "config": self.json_config,
            "groupName": self.group, "jobType": self.job_type,
        })
        summary = self.summary
        bucket = (data.get("upsertBucket") or {}).get("bucket")
        if bucket:
            bucket = {k: v for k, v in bucket.items() if k != "summaryMetrics"}
            self._set_attrs(bucket)
        summary.save()

    def save(self) -> None:
        """Same as `update()`."""
        self.update()

    def delete(self, delete_artifacts: bool = False) -> None:
        if delete_artifacts:
            self._transport.graphql(queries.DELETE_RUN_WITH_ARTIFACTS,
                                         {"id": self.storage_id, "deleteArtifacts": True})
        else:
            self._transport.graphql(queries.DELETE_RUN, {"id": self.storage_id})

    def update_state(self, state: str) -> bool:
        data = self._transport.graphql(queries.UPDATE_RUN_STATE,
                                            {"id": self.storage_id, "state": state})
        ok = bool((data.get("updateRunState") or {}).get("success"))
        if ok:
            self._attrs["state"] = state
        return ok

    def wait_until_finished(self, poll_seconds: float = 5.0, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self._run_field(queries.RUN_STATE)
            if run.get("state") in TERMINAL_STATES:
                self._attrs["state"] = run["state"]
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self._path_str} still {run.get('state')}")
            time.sleep(poll_seconds)

    # -- files ---------------------------------------------------------------------------------

    def files(self, names: list[str] | None = None, per_page: int = 50,
              pattern: str | None = None) -> Files:
        return Files(self._api, self, names or [], per_page=per_page, pattern=pattern)

    def file(self, name: str) -> File:
        return Files(self._api, self, [name])[0]

    def upload_file(self, path: str | os.PathLike, root: str | os.PathLike = ".") -> File:
        """Upload a local file; it is stored under its path relative to `root`."""
        return upload_run_file(self, path, root)

    def _run_field(self, query: str, **variables: Any) -> dict[str, Any]:
        """The run's fields selected by `query` (which takes project, entity and name): raises
        not found, or an authentication error for a key with no viewer, when the run is null."""
        data = self._transport.graphql(
            query, {"project": self.project, "entity": self.entity, "name": self.id, **variables})
        run = (data.get("project") or {}).get("run")
        if run is None:
            raise self._api.missing(f"run {self._path_str} not found")
        return run

    @property
    def client(self) -> Api:
        """The `Api` this run was read through (W&B's `Run.client`)."""
        return self._api

    # -- artifacts -----------------------------------------------------------------------------

    def logged_artifacts(self, per_page: int = 100) -> RunArtifacts:
        return RunArtifacts(self._api, self, mode="logged", per_page=per_page)

    def used_artifacts(self, per_page: int = 100) -> RunArtifacts:
        return RunArtifacts(self._api, self, mode="used", per_page=per_page)

    def use_artifact(self, artifact: Artifact, use_as: str | None = None) -> Artifact:
        """Declare an existing artifact (from `api.artifact(...)`) as an input of this run."""
        return use_artifact(self, artifact, use_as)

    def log_artifact(self, artifact: Artifact, aliases: list[str] | None = None,
                     tags: list[str] | None = None) -> Artifact:
        """Declare an artifact as an output of this run and return the stored version.

        An existing artifact must come from this run's project; a draft `Artifact(name, type)`
        is created (metadata only)."""
        return log_artifact(self, artifact, aliases, tags)

    def __repr__(self) -> str:
        return f"<Run {'/'.join(self.path)} ({self.state})>"
