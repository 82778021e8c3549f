"""The Artifact object (with its sequence, aliases and type) built from an artifact record."""

from __future__ import annotations

from graphql import GraphQLResolveInfo

from .base import store_of


def artifact_node(info: GraphQLResolveInfo, art: dict) -> dict:
    from .projects import ProjectNode  # an artifact's project lists artifacts: a cycle

    store = store_of(info)
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
    store = store_of(info)
    entity, project = store.artifacts.project_of(art)
    latest = store.artifacts.lookup(entity, project, f"{art['collection']}:latest")
    return artifact_node(info, latest) if latest else None
