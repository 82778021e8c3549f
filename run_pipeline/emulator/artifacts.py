"""A minimal artifact registry: versions in collections, aliases, and which runs logged or
used them. Persisted per project in `<entity>/<project>/.artifacts.json`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .dataset import ARTIFACTS_FILE, write_json_atomic

if TYPE_CHECKING:
    from .records import RunRecord
    from .store import Store


class ArtifactStore:
    def __init__(self, store: "Store"):
        self.store = store
        self.by_project: dict[tuple[str, str], list[dict]] = {}
        for (entity, project), rec in store.projects.items():
            path = rec.dir / ARTIFACTS_FILE
            if path.exists():
                self.by_project[(entity, project)] = json.loads(path.read_text(encoding="utf-8"))["artifacts"]

    def _save(self, entity: str, project: str) -> None:
        rec = self.store.ensure_project(entity, project)
        write_json_atomic(rec.dir / ARTIFACTS_FILE, {"artifacts": self.by_project.get((entity, project), [])})

    def all(self) -> list[dict]:
        return [a for arts in self.by_project.values() for a in arts]

    def get(self, artifact_id: str) -> dict | None:
        return next((a for a in self.all() if a["id"] == artifact_id), None)

    def lookup(self, entity: str, project: str, name: str) -> dict | None:
        """`collection:v3`, `collection:alias` or `collection` (meaning `latest`)."""
        coll, _, ref = name.partition(":")
        ref = ref or "latest"
        versions = [a for a in self.by_project.get((entity, project), []) if a["collection"] == coll]
        for a in versions:
            if ref == f"v{a['version_index']}" or ref in a["aliases"]:
                return a
        return None

    def create(self, entity: str, project: str, *, type_name: str, collection: str, digest: str,
               run_id: str | None, description: str | None = None, metadata: Any = None,
               aliases: list[str] = (), tags: list[str] = (), created_at: str, dedupe: bool = True) -> dict:
        with self.store.lock:
            arts = self.by_project.setdefault((entity, project), [])
            versions = [a for a in arts if a["collection"] == collection]
            existing = next((a for a in versions if a["digest"] == digest), None) if dedupe else None
            if existing is None:
                existing = {
                    "id": _relay("Artifact", entity, project, collection, str(len(versions))),
                    "sequence_id": _relay("ArtifactSequence", entity, project, collection),
                    "type": type_name, "collection": collection, "version_index": len(versions),
                    "digest": digest, "description": description, "metadata": metadata or {},
                    "aliases": [], "tags": list(tags), "state": "COMMITTED", "size": 0, "file_count": 0,
                    "created_at": created_at, "logged_by": [], "used_by": [],
                }
                arts.append(existing)
                for a in versions:
                    if "latest" in a["aliases"]:
                        a["aliases"].remove("latest")
                existing["aliases"].append("latest")
            for alias in aliases:
                for a in versions:
                    if alias in a["aliases"] and a is not existing:
                        a["aliases"].remove(alias)
                if alias not in existing["aliases"]:
                    existing["aliases"].append(alias)
            if run_id and run_id not in existing["logged_by"]:
                existing["logged_by"].append(run_id)
            self._save(entity, project)
            return existing

    def use(self, run: "RunRecord", artifact: dict) -> None:
        with self.store.lock:
            ref = [run.entity, run.project, run.run_id]
            if ref not in artifact["used_by"]:
                artifact["used_by"].append(ref)
            entity, project = self.project_of(artifact)
            self._save(entity, project)

    def project_of(self, artifact: dict) -> tuple[str, str]:
        return next(k for k, arts in self.by_project.items() if any(a is artifact for a in arts))

    def logged_by(self, run: "RunRecord") -> list[dict]:
        return [a for a in self.by_project.get((run.entity, run.project), []) if run.run_id in a["logged_by"]]

    def used_by(self, run: "RunRecord") -> list[dict]:
        ref = [run.entity, run.project, run.run_id]
        return [a for a in self.all() if ref in a["used_by"]]

    def forget_run(self, run: "RunRecord", delete_artifacts: bool) -> None:
        key = (run.entity, run.project)
        arts = self.by_project.get(key, [])
        if delete_artifacts:
            arts[:] = [a for a in arts if run.run_id not in a["logged_by"]]
        ref = [run.entity, run.project, run.run_id]
        for a in self.all():
            if ref in a["used_by"]:
                a["used_by"].remove(ref)
            if run.run_id in a["logged_by"] and a in arts:
                a["logged_by"].remove(run.run_id)
        if key in self.by_project:
            self._save(*key)


def _relay(*parts: str) -> str:
    import base64

    return base64.b64encode(":".join(parts).encode()).decode()
