"""A minimal `Artifact` (metadata only, no file contents) and the run's artifact listings."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from run_pipeline.client import queries
from run_pipeline.client.attrs import Attrs, generate_id
from run_pipeline.client.codec import parse_json
from run_pipeline.client.errors import WandbNotFoundError
from run_pipeline.client.paging import Paginator

if TYPE_CHECKING:
    from run_pipeline.client.run import Run


def parse_artifact_path(path: str, entity: str | None, project: str | None) -> tuple[str, str, str]:
    """`entity/project/name:alias`, `project/name:alias` or `name:alias` (alias defaults to
    `latest`) → (entity, project, "name:alias")."""
    parts = path.strip("/").split("/")
    if len(parts) >= 3:
        entity, project, name = parts[0], parts[1], "/".join(parts[2:])
    elif len(parts) == 2:
        project, name = parts
    else:
        name = parts[0]
    if ":" not in name:
        name += ":latest"
    if not entity or not project or not name.split(":")[0]:
        raise ValueError(f"invalid artifact path {path!r}: need entity/project/name[:alias]")
    return entity, project, name


class Artifact(Attrs):
    """An artifact version.

    Built by the client from the server (`api.artifact(name)`, `run.logged_artifacts()`), or
    locally as a draft, `Artifact("my-dataset", "dataset", metadata={...})`, which
    `run.log_artifact()` then creates on the server (metadata only: this client does not
    upload artifact contents).
    """

    def __init__(self, name: str, type: str, description: str | None = None,
                 metadata: dict[str, Any] | None = None, digest: str | None = None,
                 *, client: Any = None, attrs: dict[str, Any] | None = None,
                 entity: str | None = None, project: str | None = None):
        self._api = client
        self._attrs = dict(attrs or {})
        self._name = name
        self._type = type
        self._description = description
        self._metadata = dict(metadata or {})
        self._digest = digest
        self._entity = entity
        self._project = project

    @classmethod
    def _from_attrs(cls, client: Any, attrs: dict[str, Any], entity: str | None = None,
                    project: str | None = None, collection: str | None = None) -> Artifact:
        seq = attrs.get("artifactSequence") or {}
        seq_project = seq.get("project") or {}
        entity = ((seq_project.get("entity") or {}).get("name")) or entity
        project = seq_project.get("name") or project
        collection = seq.get("name") or collection or ""
        version = attrs.get("versionIndex")
        name = f"{collection}:v{version}" if version is not None else collection
        metadata = attrs.get("metadata")
        if isinstance(metadata, (str, bytes)):
            metadata = parse_json(metadata) if metadata else {}
        return cls(
            name, (attrs.get("artifactType") or {}).get("name") or "",
            attrs.get("description"), metadata or {}, attrs.get("digest"),
            client=client, attrs=attrs, entity=entity, project=project,
        )

    # -- identity -------------------------------------------------------------------------

    def is_draft(self) -> bool:
        return not self._attrs.get("id")

    @property
    def id(self) -> str | None:
        return self._attrs.get("id")

    @property
    def name(self) -> str:
        return self._name

    @property
    def source_name(self) -> str:
        return self._name

    @property
    def collection_name(self) -> str:
        return self._name.split(":")[0]

    @property
    def type(self) -> str:
        return self._type

    @property
    def entity(self) -> str | None:
        return self._entity

    @property
    def project(self) -> str | None:
        return self._project

    source_entity = entity
    source_project = project

    @property
    def qualified_name(self) -> str:
        return f"{self._entity}/{self._project}/{self._name}"

    @property
    def version(self) -> str | None:
        v = self._attrs.get("versionIndex")
        return None if v is None else f"v{v}"

    @property
    def aliases(self) -> list[str]:
        """Aliases of this version within its own collection."""
        coll = self.collection_name
        out = []
        for a in self._attrs.get("aliases") or []:
            owner = (a.get("artifactCollection") or {}).get("name") or a.get(
                "artifactCollectionName")
            if owner in (None, coll):
                out.append(a.get("alias"))
        return out

    @property
    def tags(self) -> list[str]:
        return [t.get("name") for t in self._attrs.get("tags") or []]

    @property
    def description(self) -> str | None:
        return self._description

    @property
    def metadata(self) -> dict[str, Any]:
        return self._metadata

    @property
    def digest(self) -> str:
        if self._digest:
            return self._digest
        payload = json.dumps(
            {"name": self.collection_name, "type": self._type, "metadata": self._metadata},
            sort_keys=True, default=str,
        )
        return hashlib.md5(payload.encode()).hexdigest()

    @property
    def state(self) -> str | None:
        return self._attrs.get("state")

    @property
    def size(self) -> int:
        return int(self._attrs.get("size") or 0)

    @property
    def file_count(self) -> int:
        return int(self._attrs.get("fileCount") or 0)

    @property
    def created_at(self) -> str | None:
        return self._attrs.get("createdAt")

    @property
    def updated_at(self) -> str | None:
        return self._attrs.get("updatedAt")

    def __repr__(self) -> str:
        return f"<Artifact {self.qualified_name} ({self._type})>"


class RunArtifacts(Paginator[Artifact]):
    """Artifacts a run logged (`mode="logged"`) or used (`mode="used"`)."""

    def __init__(self, client: Any, run: Run, mode: str = "logged", per_page: int = 100):
        super().__init__(per_page)
        if mode not in ("logged", "used"):
            raise ValueError("mode must be 'logged' or 'used'")
        self._api = client
        self.run = run
        self.mode = mode

    def _fetch(self, cursor: str | None):
        logged = self.mode == "logged"
        query = queries.RUN_OUTPUT_ARTIFACTS if logged else queries.RUN_INPUT_ARTIFACTS
        data = self._api.transport.graphql(query, {
            "entity": self.run.entity, "project": self.run.project, "run": self.run.id,
            "cursor": cursor, "perPage": self.per_page,
        })
        run = (data.get("project") or {}).get("run")
        if run is None:
            raise WandbNotFoundError(f"run {self.run._path_str} not found")
        conn = run.get("artifacts") or {}
        objects = []
        for edge in conn.get("edges") or []:
            node = edge.get("node")
            if not node or not (node.get("artifactSequence") or {}).get("project"):
                continue
            objects.append(Artifact._from_attrs(self._api, node))
        page = conn.get("pageInfo") or {}
        return objects, page.get("endCursor"), bool(page.get("hasNextPage")), conn.get("totalCount")

    def __repr__(self) -> str:
        return f"<RunArtifacts {self.run._path_str} {self.mode}>"


def use_artifact(run: Run, artifact: Artifact, use_as: str | None = None) -> Artifact:
    """Record `artifact` (an existing version) as an input of `run`."""
    if not isinstance(artifact, Artifact) or artifact.is_draft():
        raise ValueError("use_artifact needs an existing artifact from api.artifact()")
    run.client.transport.graphql(queries.USE_ARTIFACT, {
        "entityName": run.entity, "projectName": run.project, "runName": run.id,
        "artifactID": artifact.id, "usedAs": use_as or artifact.name})
    return artifact


def log_artifact(run: Run, artifact: Artifact, aliases: list[str] | None = None,
                 tags: list[str] | None = None) -> Artifact:
    """Create (or, with the same digest, reuse) a version of `artifact` as an output of `run`
    and return the stored version."""
    if not isinstance(artifact, Artifact):
        raise TypeError("log_artifact needs an Artifact")
    if not artifact.is_draft() and (
        artifact.entity != run.entity or artifact.project != run.project
    ):
        raise ValueError("A run can't log an artifact to a different project.")
    collection = artifact.collection_name
    data = run.client.transport.graphql(queries.CREATE_ARTIFACT, {
        "artifactTypeName": artifact.type, "artifactCollectionNames": [collection],
        "entityName": run.entity, "projectName": run.project, "runName": run.id,
        "description": artifact.description, "digest": artifact.digest,
        "digestAlgorithm": "MANIFEST_MD5",
        "aliases": [{"artifactCollectionName": collection, "alias": a}
                    for a in (aliases or [])],
        "metadata": json.dumps(artifact.metadata, default=str),
        "clientID": generate_id(32), "sequenceClientID": generate_id(32),
        "tags": [{"tagName": t} for t in (tags or [])],
    })
    created = (data.get("createArtifact") or {}).get("artifact") or {}
    version = created.get("versionIndex")
    if version is None:
        version = ((created.get("artifactSequence") or {}).get("latestArtifact") or {}).get(
            "versionIndex")
    return run._api.artifact(f"{run.entity}/{run.project}/{collection}:v{version}")
