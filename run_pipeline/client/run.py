"""`Run`: one W&B run with every attribute and method of W&B's public `Run` class, plus the
bulk-export readers (`iter_history_batches`, `iter_system_metrics_batches`)."""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import warnings
from collections.abc import Iterator
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
    parse_document,
    snake_to_camel,
)
from run_pipeline.client.batches import parse_rows
from run_pipeline.client.errors import (
    WandbClientError,
    WandbMalformedDataError,
)
from run_pipeline.client.files import File, Files, upload_run_file
from run_pipeline.client.history import HistoryReader, HistoryScan
from run_pipeline.client.summary import Summary
from run_pipeline.client.windows import downsample
from run_pipeline.settings import TERMINAL_STATES

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from run_pipeline.client.api import Api

_INTERNAL_CONFIG_KEYS = ("_wandb", "wandb_version")


class Run(Attrs):
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
        if "config" in attrs:
            raw = self._document(attrs, "config")
            if isinstance(raw, dict):
                user_config, rawconfig = {}, {}
                for key, value in raw.items():
                    target = rawconfig if key in _INTERNAL_CONFIG_KEYS else user_config
                    wrapped = isinstance(value, dict) and "value" in value
                    target[key] = value["value"] if wrapped else value
                rawconfig.update(user_config)
            else:  # not an object: kept as what it is, not replaced by {}
                user_config, rawconfig = raw, {}
            attrs["config"] = user_config
            attrs["rawconfig"] = rawconfig
        for key in ("summaryMetrics", "systemMetrics"):
            if key in attrs:
                value = self._document(attrs, key)
                if not isinstance(value, dict):
                    self._malformed[key] = f"{key} is a JSON {type(value).__name__}, not an object"
                    value = {}
                attrs[key] = value
        if "summaryMetrics" in attrs:
            self._summary = None
        self._attrs.update(attrs)

    def _document(self, attrs: dict[str, Any], key: str) -> Any:
        """A JSONString field parsed; one that is not JSON is recorded (reading the field then
        raises `WandbMalformedDataError`), so one bad run never stops a listing."""
        self._malformed.pop(key, None)
        try:
            return parse_document(attrs[key])
        except ValueError as exc:
            self._malformed[key] = f"{key} is not valid JSON ({exc})"
            return {}

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

    @property
    def lastHistoryStep(self) -> int:  # noqa: N802 - W&B's name
        """The last logged step, read fresh from the server (-1 when there is none)."""
        return self._history().last_step()

    def _history(self) -> HistoryReader:
        """The run's history reader (one per run: it keeps what the last plan learned)."""
        reader = self._history_reader
        if reader is None or reader.run_id != self.id:
            reader = self._history_reader = HistoryReader(
                self._transport, self.entity, self.project, self.id)
        return reader

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

    # -- history -------------------------------------------------------------------------------

    def history(self, samples: int = 500, keys: list[str] | None = None, x_axis: str = "_step",
                pandas: bool = True, stream: str = "default") -> pd.DataFrame | list[dict]:
        """Sampled history (at most `samples` rows): a pandas DataFrame when `pandas`, else a
        list of dicts. `stream="system"` gives system metrics. With `keys`, only rows that
        have all of them (W&B's `sampledHistory`).

        When the server lists the run's exported Parquet, the rows are read from it (and the
        live tail above it) and sampled here: a server that moved the run's steps to Parquet
        may no longer answer for them live."""
        if keys is not None and not isinstance(keys, list):
            raise ValueError("keys must be a list of strings")
        if keys and stream != "default":
            raise ValueError("stream must be 'default' when specifying keys")
        reader = self._history()
        plan = reader.plan() if stream == "default" else None
        if plan is not None and plan.parquet_urls:
            wanted = ([x_axis] + [k for k in keys if k != x_axis]) if keys else None
            rows = downsample(list(reader.scan_rows(wanted, 1000, None, None, plan=plan)), samples)
        elif keys:
            spec = json.dumps({"keys": [x_axis] + list(keys), "samples": samples})
            run = self._run_field(queries.RUN_SAMPLED_HISTORY, specs=[spec])
            rows = (run.get("sampledHistory") or [[]])[0] or []
        else:
            field = "history" if stream == "default" else "events"
            query = queries.RUN_FULL_HISTORY if field == "history" else queries.RUN_FULL_EVENTS
            rows = parse_rows(self._run_field(query, samples=samples).get(field) or [])
        if pandas:
            try:
                import pandas as pd  # the optional `pandas` extra, needed only here
            except ImportError:
                raise ImportError("Run.history() returns a pandas DataFrame: install pandas "
                                  "(pip install 'run_pipeline[pandas]'), or pass pandas=False for a list "
                                  "of dicts") from None
            return pd.DataFrame.from_records(rows)
        return rows

    def scan_history(self, keys: list[str] | None = None, page_size: int = 1000,
                     min_step: int | None = None, max_step: int | None = None) -> HistoryScan:
        """Every history row (a dict per step) in [min_step, max_step), paged by step windows.

        W&B's documented meaning: with `keys`, only rows that have **all** of those keys
        are returned (sparse metrics logged at other steps vanish), and each row holds just
        `_step` and those keys. Rows come from the run's exported Parquet when the server lists
        it, then from live pages above its last step. For a complete export use
        `iter_history_batches()`.
        """
        if keys is not None and not isinstance(keys, list):
            raise ValueError("keys must be a list of strings")
        return HistoryScan(self._history(), keys, page_size, min_step, max_step)

    def iter_history_batches(self, min_step: int | None = None, max_step: int | None = None,
                             page_size: int = 1000, *, parquet_batch_rows: int = 8_192,
                             use_parquet: bool = True,
                             tmp_dir: str | os.PathLike | None = None,
                             with_system_metrics: bool = False) -> Iterator[pa.RecordBatch]:
        """The run's full history as Arrow record batches, steps in [min_step, max_step).

        Reads W&B's exported Parquet (`parquetHistory`) when offered, then pages the live tail
        above the last exported step; otherwise pages `history(minStep, maxStep)`. Nothing is
        sampled or dropped; see `run_pipeline.client.history` for the column/type contract.
        `with_system_metrics`: the first request also fetches the system metrics, which the
        next `iter_system_metrics_batches()` then reads without a request of its own.
        """
        return self._history().iter_batches(
            min_step, max_step, page_size, parquet_batch_rows, tmp_dir, use_parquet, with_system_metrics)

    def iter_system_metrics_batches(self, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
        """Every system-metric row (`events`, not a sample) as record batches; the row count is
        checked against the server's `eventsLineCount`."""
        return self._history().iter_system_batches(batch_rows)

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
