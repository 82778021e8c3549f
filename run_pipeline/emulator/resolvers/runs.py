"""The Run node: metadata, config and summary as W&B shapes them, its files and artifacts
(history fields come from `history.RunHistoryFields`)."""

from __future__ import annotations

from ..records import RunRecord, parse_time
from .artifacts import artifact_node
from .base import page, store_of, user_node
from .files import file_connection
from .history import RunHistoryFields


class RunNode(RunHistoryFields):
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
        return store_of(info).ensure_project(self.rec.entity, self.rec.project).internal_id

    def project(self, info):
        from .projects import ProjectNode  # a project lists its runs: a cycle

        return ProjectNode(store_of(info).ensure_project(self.rec.entity, self.rec.project))

    def config(self, info):
        return {k: {"value": v, "desc": None} for k, v in self.rec.config.items()}

    def summaryMetrics(self, info):
        return self.rec.summary

    def systemMetrics(self, info):
        return self.rec.meta.get("system_metrics") or {}

    def user(self, info):
        return user_node(self.rec.meta.get("user"), self.rec.entity)

    def fileCount(self, info):
        return len(self.rec.list_files())

    def files(self, info, names=None, after=None, first=None, pattern=None):
        return file_connection(self.rec, names, after, first, pattern)

    def outputArtifacts(self, info, after=None, first=None):
        arts = store_of(info).artifacts.logged_by(self.rec)
        return page([artifact_node(info, a) for a in arts], after, first)

    def inputArtifacts(self, info, after=None, first=None):
        arts = store_of(info).artifacts.used_by(self.rec)
        return page([artifact_node(info, a) for a in arts], after, first)
