"""The emulator's records of a project and of a run (its directory, run.json metadata, history
and system logs, files), the relay ids W&B gives them, and the time and name rules of the dataset.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import filters as flt
from .dataset import FILES_DIR, HISTORY_LOG, SYSTEM_LOG, RowLog, write_json_atomic


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(v: Any) -> datetime | None:
    if not v:
        return None
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)
    dt = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def relay_id(*parts: str) -> str:
    return base64.b64encode(":".join(parts).encode()).decode()


def safe_component(name: str, what: str) -> str:
    """Entity, project, run and file names become directory names: refuse ones that escape."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name or name.startswith("."):
        raise ValueError(f"invalid {what} name {name!r}")
    return name


class RunRecord:
    """One run: its directory, its run.json metadata and its history and system logs."""

    def __init__(self, entity: str, project: str, run_id: str, run_dir: Path, meta: dict):
        self.entity, self.project, self.run_id, self.dir = entity, project, run_id, run_dir
        self.meta = meta
        self.history = RowLog(run_dir / HISTORY_LOG)
        self.events = RowLog(run_dir / SYSTEM_LOG, step_key=None)
        self.storage_id = relay_id("Run", "v1", run_id, project, entity)

    @property
    def config(self) -> dict:
        return self.meta.get("config") or {}

    @property
    def summary(self) -> dict:
        return self.meta.get("summary") or {}

    @property
    def created_at(self) -> datetime:
        return parse_time(self.meta.get("created_at")) or datetime.fromtimestamp(self.dir.stat().st_mtime, timezone.utc)

    @property
    def heartbeat_at(self) -> datetime:
        return parse_time(self.meta.get("heartbeat_at")) or self.created_at

    def column(self, name: str) -> Any:
        m = self.meta
        if name == "name":
            return self.run_id
        if name in ("createdAt", "heartbeatAt", "updatedAt"):
            return {"createdAt": self.created_at, "heartbeatAt": self.heartbeat_at,
                    "updatedAt": parse_time(m.get("updated_at")) or self.heartbeat_at}[name]
        # The same fallbacks as the GraphQL fields, so a filter matches what a client sees.
        if name == "username":
            return (m.get("user") or {}).get("username") or self.entity
        if name == "displayName":
            return m.get("display_name") or self.run_id
        if name == "duration":
            rt = self.summary.get("_runtime")
            return rt if isinstance(rt, (int, float)) else (self.heartbeat_at - self.created_at).total_seconds()
        key = {"displayName": "display_name", "jobType": "job_type", "sweepName": "sweep_name",
               "readOnly": "read_only"}.get(name, name)
        if name == "tags":
            return m.get("tags") or []
        return m.get(key, flt.MISSING)

    def save(self) -> None:
        write_json_atomic(self.dir / "run.json", self.meta)

    @property
    def files_dir(self) -> Path:
        return self.dir / FILES_DIR

    def list_files(self) -> list[str]:
        root = self.files_dir
        if not root.is_dir():
            return []
        names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".tmp-" not in p.name]
        return sorted(names)

    def file_path(self, name: str) -> Path:
        """The path of run file `name`, refusing names that would leave the files directory."""
        root = self.files_dir.resolve()
        target = (root / name).resolve()
        if not name or root not in target.parents:
            raise ValueError(f"invalid file name {name!r}")
        return target


@dataclass
class ProjectRecord:
    entity: str
    name: str
    dir: Path

    @property
    def storage_id(self) -> str:
        return relay_id("Project", "v1", self.name, self.entity)

    @property
    def internal_id(self) -> str:
        # W&B's projectId/internalId are integers in a string; the SDK calls int() on them.
        return str(int(hashlib.sha256(f"{self.entity}/{self.name}".encode()).hexdigest()[:7], 16))  # < 2**31: GraphQL Int

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.dir.stat().st_ctime, timezone.utc).replace(microsecond=0)
