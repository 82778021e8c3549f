"""Run files: the `Files` paging sequence and `File` (metadata, download, delete)."""

from __future__ import annotations

import os
import pathlib
from typing import TYPE_CHECKING, Any, TextIO

from run_pipeline.client import queries
from run_pipeline.client.attrs import Attrs
from run_pipeline.client.errors import WandbNotFoundError
from run_pipeline.client.paging import Paginator

if TYPE_CHECKING:
    from run_pipeline.client.run import Run


class File(Attrs):
    """One file saved with a run: `id name url direct_url size mimetype updated_at md5`."""

    def __init__(self, client: Any, attrs: dict[str, Any], run: Run | None = None):
        self._api = client
        self._attrs = dict(attrs)
        self.run = run

    @property
    def id(self) -> str:
        return self._attrs["id"]

    @property
    def name(self) -> str:
        return self._attrs["name"]

    @property
    def url(self) -> str | None:
        url = self._attrs.get("url")
        return self._api.transport.absolute_url(url) if url else url

    @property
    def direct_url(self) -> str | None:
        return self._attrs.get("directUrl")

    @property
    def size(self) -> int:
        size = self._attrs.get("sizeBytes")
        return int(size) if size is not None else 0

    @property
    def md5(self) -> str | None:
        return self._attrs.get("md5")

    @property
    def mimetype(self) -> str | None:
        return self._attrs.get("mimetype")

    @property
    def updated_at(self) -> str | None:
        return self._attrs.get("updatedAt")

    def download(self, root: str | os.PathLike = ".", replace: bool = False,
                 exist_ok: bool = False) -> TextIO:
        """Download to `root/name` (atomically: a temporary name, then a rename) and return
        the file opened for reading, as W&B does. Raises `ValueError` if it exists and
        neither `replace` nor `exist_ok` is set."""
        path = pathlib.Path(root, self.name)
        resolved_root = pathlib.Path(root).resolve()
        if resolved_root not in path.resolve().parents:
            raise ValueError(f"file name {self.name!r} escapes the download root")
        if path.exists() and not replace:
            if exist_ok:
                return open(path)
            raise ValueError(
                "File already exists, pass replace=True to overwrite or exist_ok=True to "
                "leave it as is and don't error."
            )
        if not self.url:
            raise WandbNotFoundError(f"file {self.name!r} has no download URL")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part-{os.getpid()}")
        try:
            self._api.transport.download(self.url, tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return open(path)

    def read_bytes(self) -> bytes:
        """The file's content, without touching the disk."""
        if not self.url:
            raise WandbNotFoundError(f"file {self.name!r} has no download URL")
        return self._api.transport.get_bytes(self.url)

    def delete(self) -> None:
        project_id = None
        if self.run is not None and self.run._attrs.get("projectId") is not None:
            try:
                project_id = int(self.run._attrs["projectId"])
            except (TypeError, ValueError):
                project_id = None
            # GraphQL Int is 32-bit; the argument is optional, so drop an id that cannot fit.
            if project_id is not None and not -(2**31) <= project_id < 2**31:
                project_id = None
        self._api.transport.graphql(
            queries.DELETE_FILES, {"files": [self.id], "projectId": project_id}
        )

    def __repr__(self) -> str:
        return f"<File {self.name} ({self.mimetype}) {self.size} bytes>"


class Files(Paginator[File]):
    """A lazy sequence of a run's files; `len()` is the run's `fileCount`."""

    def __init__(self, client: Any, run: Run, names: list[str] | None = None,
                 per_page: int = 50, upload: bool = False, pattern: str | None = None):
        super().__init__(per_page)
        if names and pattern:
            raise ValueError("pass either names or pattern, not both")
        self._api = client
        self.run = run
        self.names = list(names or [])
        self.pattern = pattern
        self.upload = upload

    def _fetch(self, cursor: str | None):
        variables = {
            "project": self.run.project, "entity": self.run.entity, "name": self.run.id,
            "fileCursor": cursor, "fileLimit": self.per_page, "fileNames": self.names,
            "upload": self.upload,
        }
        if self.pattern is not None:
            variables["pattern"] = self.pattern
        data = self._api.transport.graphql(queries.RUN_FILES, variables)
        project = data.get("project")
        run = (project or {}).get("run")
        if run is None:
            raise WandbNotFoundError(f"run {self.run._path_str} not found")
        conn = run.get("files") or {}
        edges = conn.get("edges") or []
        objects = [File(self._api, e["node"], self.run) for e in edges if e.get("node")]
        page = conn.get("pageInfo") or {}
        next_cursor = edges[-1].get("cursor") if edges else None
        total = run.get("fileCount")
        if self.names:
            total = None  # fileCount counts all files, not the requested names
        return objects, next_cursor, bool(page.get("hasNextPage")), total

    def __repr__(self) -> str:
        return f"<Files {self.run._path_str}>"


def upload_run_file(run: Run, path: str | os.PathLike, root: str | os.PathLike = ".") -> File:
    """`createRunFiles`, PUT to the returned URL, `markRunFilesUploaded` when the server has
    that feature, then the stored `File` (wandb-api.md 3.10)."""
    root_abs = os.path.abspath(root)
    name = pathlib.PurePath(os.path.relpath(os.path.abspath(path), root_abs)).as_posix()
    transport = run.client.transport
    data = transport.graphql(queries.CREATE_RUN_FILES, {
        "entity": run.entity, "project": run.project, "run": run.id, "files": [name]})
    result = data.get("createRunFiles") or {}
    if not result.get("runID"):
        raise WandbNotFoundError(f"cannot upload to {run._path_str}: run not found")
    (info,) = result["files"]
    headers = dict(h.split(":", 1) for h in result.get("uploadHeaders") or [])
    with open(os.path.join(root_abs, name), "rb") as fh:
        transport.put(info["uploadUrl"], fh.read(), headers)
    if "MARK_RUN_FILES_UPLOADED" in run._api.server_features():
        transport.graphql(queries.MARK_RUN_FILES_UPLOADED, {
            "entity": run.entity, "project": run.project, "run": run.id, "files": [name]})
    return run.file(name)
