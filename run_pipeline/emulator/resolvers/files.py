"""Run files: the File node (URLs, size, checksum, read lazily from disk) and the connection
of a run's files by names or by a SQL LIKE pattern."""

from __future__ import annotations

import base64
import re

from ..records import RunRecord
from ..store import Store
from .base import page, urls_of


def file_connection(rec: RunRecord, names: list[str] | None, after: str | None, first: int | None,
                    pattern: str | None) -> dict:
    if names:
        wanted = list(names)
    else:
        wanted = rec.list_files()
        if pattern:
            rx = re.compile("^" + "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern) + "$", re.S)
            wanted = [n for n in wanted if rx.match(n)]
    conn = page([FileNode(rec, n) for n in wanted], after, 50 if first is None else first)
    conn["uploadHeaders"] = []
    return conn


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
            return urls_of(info).upload_url(r.entity, r.project, r.run_id, self.name)
        return urls_of(info).file_url(r.entity, r.project, r.run_id, self.name)

    def directUrl(self, info):
        r = self.rec
        return urls_of(info).direct_url(r.entity, r.project, r.run_id, self.name)

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
