"""GraphQL resolvers: node objects whose attributes and methods graphql-core's default resolver
calls (`obj.field(info, **args)`), over the Store. Missing objects resolve to null, as in W&B.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from graphql import GraphQLError, GraphQLResolveInfo

from . import filters as flt
from .dataset import parse_row
from .profiles import empty_connection
from .store import ProjectRecord, RunRecord, Store, iso, parse_time, utcnow

DEFAULT_SAMPLES = 500
FEATURES = (
    "MARK_RUN_FILES_UPLOADED",
    "TOTAL_COUNT_IN_FILE_CONNECTION",
    "USE_ARTIFACT_WITH_ENTITY_AND_PROJECT_INFORMATION",
    "LARGE_FILENAMES",
)


def _store(info: GraphQLResolveInfo) -> Store:
    return info.context["store"]


def _urls(info: GraphQLResolveInfo):
    return info.context["urls"]


def downsample(items: list, samples: int | None) -> list:
    """Evenly spaced items, keeping the first and the last."""
    n = len(items)
    if samples is None or samples >= n:
        return items
    if samples <= 0:
        return []
    if samples == 1:
        return [items[0]]
    return [items[round(i * (n - 1) / (samples - 1))] for i in range(samples)]


def _cursor(key: Any) -> str:
    return base64.b64encode(json.dumps(key, default=str).encode()).decode()


def _uncursor(cursor: str | None) -> Any:
    if not cursor:
        return None
    try:
        return json.loads(base64.b64decode(cursor))
    except ValueError as exc:
        raise GraphQLError(f"invalid cursor {cursor!r}") from exc


def _page(items: list, after: str | None, first: int | None, key=lambda i, x: i) -> dict:
    """A connection over a list ordered by position; cursors are positions."""
    start = 0
    if after:
        pos = _uncursor(after)
        if not isinstance(pos, int):
            raise GraphQLError(f"invalid cursor {after!r}")
        start = pos + 1
    end = len(items) if first is None else start + max(first, 0)
    window = items[start:end]
    edges = [{"node": x, "cursor": _cursor(start + i)} for i, x in enumerate(window)]
    return {
        "edges": edges,
        "pageInfo": {"startCursor": edges[0]["cursor"] if edges else None,
                     "endCursor": edges[-1]["cursor"] if edges else None,
                     "hasNextPage": end < len(items), "hasPreviousPage": start > 0},
        "totalCount": len(items),
    }


def _user(meta_user: Any, fallback: str | None = None) -> dict | None:
    if not meta_user and not fallback:
        return None
    u = meta_user or {}
    username = u.get("username") or fallback
    return {"id": base64.b64encode(f"User:{username}".encode()).decode(), "name": u.get("name") or username,
            "username": username, "email": u.get("email"), "admin": False, "flags": "{}",
            "entity": username, "deletedAt": None, "apiKeys": {"edges": []}, "teams": {"edges": []}}


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
            return len(_store(info).query_runs(self.rec.entity, self.rec.name, _check_filters(filters)))
        except flt.FilterError as exc:  # the caller's mistake, not a server failure to log
            raise GraphQLError(str(exc)) from exc

    def runs(self, info, filters=None, order=None, first=None, after=None):
        store = _store(info)
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
            ck = _uncursor(after)
            if not (isinstance(ck, list) and len(ck) == 2 and isinstance(ck[0], list) and len(ck[0]) == 3):
                raise GraphQLError(f"invalid cursor {after!r}")
            ckey = (tuple(_restore_time(v) for v in ck[0]), ck[1])
            while start < len(keyed) and flt.compare(keyed[start][0], ckey, desc) <= 0:
                start += 1
        first = 50 if first is None else max(first, 0)
        window = keyed[start:start + first]
        edges = [{"node": RunNode(r), "cursor": _cursor([list(_dump_time(v) for v in k[0]), k[1]])} for k, r in window]
        return {"edges": edges, "totalCount": len(keyed),
                "pageInfo": {"startCursor": edges[0]["cursor"] if edges else None,
                             "endCursor": edges[-1]["cursor"] if edges else None,
                             "hasNextPage": start + first < len(keyed), "hasPreviousPage": start > 0}}

    def run(self, info, name):
        rec = _store(info).get_run(self.rec.entity, self.rec.name, name)
        return RunNode(rec) if rec else None

    def bucket(self, info, name, desc=None):
        # Legacy (0.13) upload flow: the bucket is created on first use.
        store = _store(info)
        rec = store.get_run(self.rec.entity, self.rec.name, name) or store.create_run(self.rec.entity, self.rec.name, name)
        return RunNode(rec)

    def artifact(self, info, name):
        art = _store(info).artifacts.lookup(self.rec.entity, self.rec.name, name)
        return artifact_node(info, art) if art else None

    def artifactCollectionMembership(self, info, name):
        art = _store(info).artifacts.lookup(self.rec.entity, self.rec.name, name)
        if not art:
            return None
        node = artifact_node(info, art)
        return {"id": art["id"], "versionIndex": art["version_index"], "createdAt": art["created_at"],
                "aliases": node["aliases"], "artifactCollection": node["artifactSequence"], "artifact": node}


def _dump_time(v: Any) -> Any:
    from datetime import datetime

    return {"$t": v.isoformat()} if isinstance(v, datetime) else v


def _restore_time(v: Any) -> Any:
    return parse_time(v["$t"]) if isinstance(v, dict) and "$t" in v else v


def _run_by_storage_id(store: Store, storage_id: str) -> RunRecord:
    rec = store.by_storage_id.get(storage_id)
    if rec is None:
        raise GraphQLError(f"run {storage_id!r} not found")
    return rec


def _check_filters(filters: Any) -> Any:
    if filters is not None and not isinstance(filters, dict):
        raise GraphQLError(f"filters must be a JSON object, got {type(filters).__name__}")
    return filters


class RunNode:
    def __init__(self, rec: RunRecord):
        self.rec = rec
        m = rec.meta
        self.id = rec.storage_id
        self.name = rec.run_id
        self.displayName = m.get("display_name") or rec.run_id
        self.state = m.get("state")
        self.tags = list(m.get("tags") or [])
        self.notes = m.get("notes")
        self.description = m.get("description", m.get("notes"))
        self.group = m.get("group")
        self.jobType = m.get("job_type")
        self.sweepName = None
        self.commit = m.get("commit")
        self.host = m.get("host")
        self.readOnly = bool(m.get("read_only", False))
        self.createdAt = rec.created_at
        self.heartbeatAt = rec.heartbeat_at
        self.updatedAt = parse_time(m.get("updated_at")) or rec.heartbeat_at

    def projectId(self, info):
        return _store(info).ensure_project(self.rec.entity, self.rec.project).internal_id

    def project(self, info):
        return ProjectNode(_store(info).ensure_project(self.rec.entity, self.rec.project))

    def config(self, info):
        return {k: {"value": v, "desc": None} for k, v in self.rec.config.items()}

    def summaryMetrics(self, info):
        return self.rec.summary

    def systemMetrics(self, info):
        return self.rec.meta.get("system_metrics") or {}

    def historyLineCount(self, info):
        return len(self.rec.history)

    def eventsLineCount(self, info):
        return len(self.rec.events)

    def user(self, info):
        return _user(self.rec.meta.get("user"), self.rec.entity)

    def historyKeys(self, info, format=None):
        return self.rec.history.history_keys()

    def history(self, info, samples=None, minStep=None, maxStep=None):
        log = self.rec.history
        if minStep is None and maxStep is None:
            idx = downsample(log.window(None, None), DEFAULT_SAMPLES if samples is None else samples)
        else:
            store = _store(info)
            floor = store.profiles.live_floor(store, self.rec)  # exported steps are Parquet only
            if floor is not None:
                minStep = floor + 1 if minStep is None else max(minStep, floor + 1)
            idx = log.window(minStep, maxStep)
            if samples is not None:
                idx = idx[: max(samples, 0)]
        return log.read_lines(idx)

    def events(self, info, samples=None):
        log = self.rec.events
        return log.read_lines(downsample(log.window(None, None), DEFAULT_SAMPLES if samples is None else samples))

    def sampledHistory(self, info, specs):
        out = []
        for spec in specs:
            if not isinstance(spec, dict) or not isinstance(spec.get("keys"), list):
                raise GraphQLError("each sampledHistory spec must be a JSON object with a 'keys' list")
            keys = list(dict.fromkeys(spec["keys"]))
            inclusive = "exclusive-maxstep" not in _store(info).profiles
            idx = self.rec.history.window(spec.get("minStep"), spec.get("maxStep"), inclusive_max=inclusive)
            rows = []
            for line in self.rec.history.read_lines(idx):
                row = parse_row(line)
                if all(k in row for k in keys):
                    rows.append({k: row[k] for k in keys})
            out.append(downsample(rows, spec.get("samples", DEFAULT_SAMPLES)))
        return out

    def parquetHistory(self, info, liveKeys):
        store = _store(info)
        rec = self.rec
        if store.profiles.serves_snapshots:
            snap = store.profiles.snapshot(store, rec)
            urls = [_urls(info).parquet_url(snap.path.name, rec.run_id)] if snap else []
            floor = None if snap is None else snap.last_step + 1
            return {"parquetUrls": urls, "liveData": lambda info: self._live_data(liveKeys, floor)}
        if store.served_from_parquet(rec):
            path = store.parquet_export(rec)
            return {"parquetUrls": [_urls(info).parquet_url(path.name, rec.run_id)], "liveData": []}
        # Built only when the query selects liveData: exporters ask for parquetUrls alone.
        return {"parquetUrls": [], "liveData": lambda info: self._live_data(liveKeys)}

    def _live_data(self, live_keys: list[str], min_step: int | None = None) -> list[dict]:
        log = self.rec.history
        idx = log.window(min_step, None)
        if list(live_keys) == ["_step"]:
            return [{"_step": log.steps[i]} for i in idx]
        return [{k: r[k] for k in live_keys if k in r} for r in log.read_rows(idx)]

    def fileCount(self, info):
        return len(self.rec.list_files())

    def files(self, info, names=None, after=None, first=None, pattern=None):
        rec = self.rec
        if names:
            wanted = list(names)
        else:
            wanted = rec.list_files()
            if pattern:
                rx = re.compile("^" + "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern) + "$", re.S)
                wanted = [n for n in wanted if rx.match(n)]
        nodes = [FileNode(rec, n) for n in wanted]
        conn = _page(nodes, after, 50 if first is None else first)
        conn["uploadHeaders"] = []
        return conn

    def outputArtifacts(self, info, after=None, first=None):
        arts = _store(info).artifacts.logged_by(self.rec)
        return _page([artifact_node(info, a) for a in arts], after, first)

    def inputArtifacts(self, info, after=None, first=None):
        arts = _store(info).artifacts.used_by(self.rec)
        return _page([artifact_node(info, a) for a in arts], after, first)


class FileNode:
    def __init__(self, rec: RunRecord, name: str):
        self.rec, self.name = rec, name
        self.id = base64.b64encode(f"File:{rec.storage_id}:{name}".encode()).decode()
        self._info: dict | None = None

    def _stat(self) -> dict:
        if self._info is None:
            self._info = Store.file_info(self.rec, self.name)
        return self._info

    def url(self, info, upload=False):
        r = self.rec
        if upload:
            return _urls(info).upload_url(r.entity, r.project, r.run_id, self.name)
        return _urls(info).file_url(r.entity, r.project, r.run_id, self.name)

    def directUrl(self, info):
        r = self.rec
        return _urls(info).direct_url(r.entity, r.project, r.run_id, self.name)

    def sizeBytes(self, info):
        return self._stat()["size"]

    def mimetype(self, info):
        return self._stat()["mimetype"]

    def updatedAt(self, info):
        return self._stat()["updated_at"]

    def md5(self, info):
        return self._stat()["md5"]

    def digest(self, info):
        return self._stat()["md5"]


def artifact_node(info: GraphQLResolveInfo, art: dict) -> dict:
    store = _store(info)
    entity, project = store.artifacts.project_of(art)
    proj = ProjectNode(store.ensure_project(entity, project))
    seq = {"__typename": "ArtifactSequence", "id": art["sequence_id"], "name": art["collection"], "project": proj}
    seq["latestArtifact"] = lambda info: _latest(info, art)
    return {
        "__typename": "Artifact", "id": art["id"], "digest": art["digest"], "digestAlgorithm": "MANIFEST_MD5",
        "description": art["description"], "state": art["state"], "size": art["size"],
        "fileCount": art["file_count"], "createdAt": art["created_at"], "updatedAt": art["created_at"],
        "labels": None, "metadata": art["metadata"], "versionIndex": art["version_index"],
        "commitHash": art["digest"][:12], "historyStep": None, "ttlDurationSeconds": -1, "ttlIsInherited": True,
        "tags": [{"id": f"{art['id']}:{t}", "name": t} for t in art["tags"]],
        "aliases": [{"id": f"{art['id']}:{a}", "alias": a, "artifactCollectionName": art["collection"],
                     "artifactCollection": seq} for a in art["aliases"]],
        "artifactSequence": seq,
        "artifactType": {"id": f"{entity}:{project}:{art['type']}", "name": art["type"], "project": proj},
        "currentManifest": None,
    }


def _latest(info: GraphQLResolveInfo, art: dict) -> dict | None:
    store = _store(info)
    entity, project = store.artifacts.project_of(art)
    latest = store.artifacts.lookup(entity, project, f"{art['collection']}:latest")
    return artifact_node(info, latest) if latest else None


class Root:
    """Query and mutation root."""

    # -- queries -------------------------------------------------------------------------
    def viewer(self, info):
        store = _store(info)
        user = _user({"username": store.default_entity, "name": store.default_entity,
                      "email": f"{store.default_entity}@localhost"})
        user["teams"] = {"edges": [{"node": {"id": e, "name": e}} for e in store.entities()]}
        return user

    def serverInfo(self, info):
        return {"features": [{"name": n, "isEnabled": True} for n in FEATURES],
                "cliVersionInfo": {"max_cli_version": "0.99.0"},
                "latestLocalVersionInfo": {"outOfDate": False, "latestVersionString": "0.31.0",
                                           "versionOnThisInstanceString": "0.31.0"}}

    def project(self, info, name=None, entityName=None):
        store = _store(info)
        rec = store.get_project(entityName or store.default_entity, name or "")
        return ProjectNode(rec) if rec else None

    model = project

    def models(self, info, entityName=None, after=None, first=None):
        store = _store(info)
        empty, after = store.profiles.page_request(after)
        projects = [ProjectNode(p) for p in store.list_projects(entityName or store.default_entity)]
        return empty_connection(empty, len(projects)) if empty else _page(projects, after, first)

    # -- mutations -----------------------------------------------------------------------
    def upsertBucket(self, info, input):
        store = _store(info)
        with store.lock:
            inserted = False
            if input.get("id"):
                rec = _run_by_storage_id(store, input["id"])
            else:
                entity = input.get("entityName") or store.default_entity
                project = input.get("modelName") or "uncategorized"
                run_id = input.get("name")
                if not run_id:
                    raise GraphQLError("upsertBucket needs 'id' or 'name'")
                rec = store.get_run(entity, project, run_id)
                if rec is None:
                    try:
                        rec = store.create_run(entity, project, run_id, {"state": input.get("state") or "running"})
                    except ValueError as exc:
                        raise GraphQLError(str(exc)) from exc
                    inserted = True
            changes = _bucket_changes(input)
            if changes:
                try:
                    store.update_run(rec, **changes)
                except ValueError as exc:
                    raise GraphQLError(str(exc)) from exc
        return {"bucket": RunNode(rec), "inserted": inserted, "updateAvailable": False}

    def deleteRun(self, info, input):
        store = _store(info)
        rec = _run_by_storage_id(store, input["id"])
        store.delete_run(rec, bool(input.get("deleteArtifacts")))
        return {"clientMutationId": input.get("clientMutationId")}

    def createRunFiles(self, info, input):
        store = _store(info)
        rec = store.get_run(input["entityName"], input["projectName"], input["runName"])
        if rec is None:
            raise GraphQLError(f"run {input['entityName']}/{input['projectName']}/{input['runName']} not found")
        files = []
        for name in input["files"]:
            try:
                rec.file_path(name)
            except ValueError as exc:
                raise GraphQLError(str(exc)) from exc
            files.append({"name": name, "uploadUrl": _urls(info).upload_url(rec.entity, rec.project, rec.run_id, name)})
        return {"runID": rec.storage_id, "uploadHeaders": [], "files": files}

    def markRunFilesUploaded(self, info, input):
        return {"success": True}

    def deleteFiles(self, info, input):
        store = _store(info)
        for fid in input["files"]:
            try:
                _, sid, name = base64.b64decode(fid).decode().split(":", 2)
            except ValueError as exc:
                raise GraphQLError(f"invalid file id {fid!r}") from exc
            rec = store.by_storage_id.get(sid)
            if rec is not None and rec.file_path(name).is_file():
                rec.file_path(name).unlink()
        return {"success": True}

    def updateRunState(self, info, input):
        store = _store(info)
        rec = _run_by_storage_id(store, input["id"])
        try:
            store.update_run(rec, state=input["state"])
        except ValueError as exc:
            raise GraphQLError(str(exc)) from exc
        return {"success": True}

    def stopRun(self, info, input):
        store = _store(info)
        rec = _run_by_storage_id(store, input["id"])
        store.update_run(rec, stop_requested=True)
        return {"success": True}

    def useArtifact(self, info, input):
        store = _store(info)
        rec = store.get_run(input["entityName"], input["projectName"], input["runName"])
        art = store.artifacts.get(input["artifactID"])
        if rec is None or art is None:
            raise GraphQLError("useArtifact: run or artifact not found")
        store.artifacts.use(rec, art)
        return {"artifact": artifact_node(info, art)}

    def createArtifact(self, info, input):
        store = _store(info)
        colls = input.get("artifactCollectionNames") or []
        if not colls:
            raise GraphQLError("createArtifact needs artifactCollectionNames")
        run_id = input.get("runName")
        if run_id and store.get_run(input["entityName"], input["projectName"], run_id) is None:
            raise GraphQLError(f"run {input['entityName']}/{input['projectName']}/{run_id} not found")
        art = store.artifacts.create(
            input["entityName"], input["projectName"], type_name=input["artifactTypeName"], collection=colls[0],
            digest=input["digest"], run_id=run_id, description=input.get("description"),
            metadata=input.get("metadata"), aliases=[a["alias"] for a in input.get("aliases") or []],
            tags=[t["tagName"] for t in input.get("tags") or []], created_at=iso(utcnow()),
            dedupe=input.get("enableDigestDeduplication", True) is not False)
        return {"artifact": artifact_node(info, art)}


_BUCKET_FIELDS = {"displayName": "display_name", "description": "description", "notes": "notes", "tags": "tags",
                  "groupName": "group", "jobType": "job_type", "state": "state", "commit": "commit", "host": "host"}


def _bucket_changes(input: dict) -> dict:
    """run.json changes from an upsertBucket input: only the fields the caller sent."""
    changes = {meta: input[gql] for gql, meta in _BUCKET_FIELDS.items() if gql in input and input[gql] is not None}
    if "config" in input and input["config"] is not None:
        cfg = input["config"]
        if not isinstance(cfg, dict):
            raise GraphQLError("config must be a JSON object")
        changes["config"] = {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in cfg.items()}
    if "summaryMetrics" in input and input["summaryMetrics"] is not None:
        if not isinstance(input["summaryMetrics"], dict):
            raise GraphQLError("summaryMetrics must be a JSON object")
        changes["summary"] = input["summaryMetrics"]
    return changes
