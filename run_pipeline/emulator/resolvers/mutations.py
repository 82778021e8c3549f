"""The mutation root: runs created and updated (`upsertBucket`), stopped and deleted; run
files announced and deleted; artifacts created and used."""

from __future__ import annotations

import base64

from graphql import GraphQLError

from ..records import RunRecord, iso, utcnow
from ..store import Store
from .artifacts import artifact_node
from .base import store_of, urls_of
from .runs import RunNode


class Mutations:
    def upsertBucket(self, info, input):
        store = store_of(info)
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
        store = store_of(info)
        rec = _run_by_storage_id(store, input["id"])
        store.delete_run(rec, bool(input.get("deleteArtifacts")))
        return {"clientMutationId": input.get("clientMutationId")}

    def createRunFiles(self, info, input):
        store = store_of(info)
        rec = store.get_run(input["entityName"], input["projectName"], input["runName"])
        if rec is None:
            raise GraphQLError(f"run {input['entityName']}/{input['projectName']}/{input['runName']} not found")
        files = []
        for name in input["files"]:
            try:
                rec.file_path(name)
            except ValueError as exc:
                raise GraphQLError(str(exc)) from exc
            files.append({"name": name, "uploadUrl": urls_of(info).upload_url(rec.entity, rec.project, rec.run_id, name)})
        return {"runID": rec.storage_id, "uploadHeaders": [], "files": files}

    def markRunFilesUploaded(self, info, input):
        return {"success": True}

    def deleteFiles(self, info, input):
        store = store_of(info)
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
        store = store_of(info)
        rec = _run_by_storage_id(store, input["id"])
        try:
            store.update_run(rec, state=input["state"])
        except ValueError as exc:
            raise GraphQLError(str(exc)) from exc
        return {"success": True}

    def stopRun(self, info, input):
        store = store_of(info)
        rec = _run_by_storage_id(store, input["id"])
        store.update_run(rec, stop_requested=True)
        return {"success": True}

    def useArtifact(self, info, input):
        store = store_of(info)
        rec = store.get_run(input["entityName"], input["projectName"], input["runName"])
        art = store.artifacts.get(input["artifactID"])
        if rec is None or art is None:
            raise GraphQLError("useArtifact: run or artifact not found")
        store.artifacts.use(rec, art)
        return {"artifact": artifact_node(info, art)}

    def createArtifact(self, info, input):
        store = store_of(info)
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


def _run_by_storage_id(store: Store, storage_id: str) -> RunRecord:
    rec = store.by_storage_id.get(storage_id)
    if rec is None:
        raise GraphQLError(f"run {storage_id!r} not found")
    return rec


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
