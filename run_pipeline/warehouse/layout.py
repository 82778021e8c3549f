"""Where things live under a warehouse root: the root's filesystem, hive partition directories
with safely encoded values, the staging area, and the globs the DuckDB views read."""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from dataclasses import dataclass

import pyarrow.fs as pafs

from .errors import WarehousePathError

RUNS, RUN_CONFIG, RUN_SUMMARY = "runs", "run_config", "run_summary"
HISTORY, SYSTEM_METRICS, METRICS = "history", "system_metrics", "metrics"
TABLES = (RUNS, RUN_CONFIG, RUN_SUMMARY, HISTORY, SYSTEM_METRICS, METRICS)
#: The long-form `metrics` of many finished runs of a project in one file (see `packs.py`):
#: `metrics_packs/entity=E/project=P/pack-<id>.parquet`, the run id a column of the file.
METRICS_PACKS = "metrics_packs"
#: Marks of runs deleted on the server (see `deletions.py`): read by the `runs` view, no view of its own.
RUN_DELETIONS = "run_deletions"
#: Temporary files live here, outside every table directory, so no view glob can see them.
STAGING = "_staging"
CATALOG_FILE = "warehouse.duckdb"
#: Part files and single-table files end in this; the views glob `*/*/*/*.parquet`.
PARQUET_SUFFIX = ".parquet"

# Kept verbatim in partition values; everything else ASCII is percent-encoded. DuckDB (and
# pyarrow, Spark, Polars) URL-decode hive values, so the view columns equal the originals.
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
# DuckDB reads this directory value back as NULL.
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
# Linux NAME_MAX; S3 has no per-segment limit but a 1,024-byte key limit.
_MAX_COMPONENT_BYTES = 255
_GLOB_CHARS = frozenset("*?[]{}")


def encode_partition_value(value: str) -> str:
    """Encode one entity/project/run id for a `key=value` directory name.

    ASCII other than letters, digits, `-`, `_` and `.` is percent-encoded (so `/`, `=`, `%`,
    quotes, spaces and control characters never reach the path); printable non-ASCII is kept as
    UTF-8 so names stay short. The value always follows `key=`, so `.` and `..` cannot name a
    parent directory.
    """
    if not isinstance(value, str):
        raise WarehousePathError(f"partition values must be strings, got {type(value).__name__}")
    out = []
    for ch in value:
        if ch in _PLAIN or (ord(ch) > 127 and ch.isprintable() and not ch.isspace()):
            out.append(ch)
        else:
            try:
                raw = ch.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise WarehousePathError(f"partition value {value!r} is not valid Unicode") from exc
            out.append("".join(f"%{b:02X}" for b in raw))
    encoded = "".join(out)
    if encoded == _HIVE_NULL:
        encoded = "%5F" + encoded[1:]
    return encoded


def decode_partition_value(text: str) -> str:
    """Inverse of `encode_partition_value`."""
    return urllib.parse.unquote(text, errors="strict")


def partition_component(key: str, value: str) -> str:
    component = f"{key}={encode_partition_value(value)}"
    if len(component.encode("utf-8")) > _MAX_COMPONENT_BYTES:
        raise WarehousePathError(
            f"{key} {value[:40]!r}… is too long for a directory name once encoded "
            f"({len(component.encode('utf-8'))} > {_MAX_COMPONENT_BYTES} bytes)")
    return component


def project_token(entity: str, project: str) -> str:
    """A short, path-safe name unique to a project (never equal to a run's `RunKey.token`)."""
    raw = "\0".join(("project", entity, project)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()[:32]


@dataclass(frozen=True)
class RunKey:
    """One W&B run's identity, the same in every layer: the warehouse derives its partition
    directories from it, the exporter and the pool name runs by it, and the Dagster partition
    key is its encoding (`defs/partitions.py`)."""

    entity: str
    project: str
    run_id: str

    @property
    def path(self) -> str:
        """`entity/project/run_id`, for messages (not parsed back: names may hold "/")."""
        return f"{self.entity}/{self.project}/{self.run_id}"

    def token(self) -> str:
        """A short, path-safe name unique to this run."""
        raw = "\0".join((self.entity, self.project, self.run_id)).encode("utf-8", "surrogatepass")
        return hashlib.sha256(raw).hexdigest()[:32]

    def components(self) -> tuple[str, str, str]:
        return (partition_component("entity", self.entity), partition_component("project", self.project),
                partition_component("run_id", self.run_id))


@dataclass(frozen=True)
class WarehouseRoot:
    """A warehouse root: a pyarrow filesystem, the base path on it, and the URI DuckDB reads.

    `filesystem` overrides the one inferred from the URI (e.g. an `S3FileSystem` with an
    `endpoint_override` for MinIO or a test server).
    """

    fs: pafs.FileSystem
    base: str
    uri: str

    @classmethod
    def parse(cls, root: str | os.PathLike | WarehouseRoot,
              filesystem: pafs.FileSystem | None = None) -> WarehouseRoot:
        if isinstance(root, WarehouseRoot):
            return root
        text = os.fspath(root)
        if not text:
            raise WarehousePathError("empty warehouse root")
        if text.startswith("file://"):
            text = urllib.parse.urlparse(text).path
        if "://" not in text:
            base = os.path.abspath(os.path.expanduser(text)).replace(os.sep, "/").rstrip("/") or "/"
            if _GLOB_CHARS & set(base) or "'" in base:
                raise WarehousePathError(f"local root {base!r} contains glob or quote characters")
            return cls(filesystem or pafs.LocalFileSystem(), base, base)
        scheme, rest = text.split("://", 1)
        rest = rest.split("?", 1)[0].strip("/")
        if not rest:
            raise WarehousePathError(f"root {text!r} names no bucket")
        if filesystem is None:
            try:
                filesystem, _ = pafs.FileSystem.from_uri(text)
            except (OSError, ValueError) as exc:
                raise WarehousePathError(f"cannot open warehouse root {text!r}: {exc}") from exc
        if _GLOB_CHARS & set(rest) or "'" in rest:
            raise WarehousePathError(f"root {text!r} contains glob or quote characters")
        return cls(filesystem, rest, f"{scheme}://{rest}")

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *components: str) -> str:
        """Path on `fs` below the base. Components are single names, never `.`/`..`/`a/b`."""
        for c in components:
            if not c or c in (".", "..") or "/" in c or "\\" in c or "\x00" in c:
                raise WarehousePathError(f"unsafe path component {c!r}")
        return "/".join((self.base, *components)) if components else self.base

    def location(self, path: str) -> str:
        """The URI of a path on `fs` (what DuckDB or a user would open)."""
        rel = path[len(self.base):]
        return self.uri + rel

    def run_dir(self, table: str, run: RunKey) -> str:
        return self.path(table, *run.components())

    def project_dir(self, table: str, entity: str, project: str) -> str:
        return self.path(table, partition_component("entity", entity), partition_component("project", project))

    def staging_dir(self, table: str, run: RunKey) -> str:
        """Per-run staging directory, one level below `_staging/<table>/` so cleaning up leaves
        no empty tree behind. Only one export of a run runs at a time (`lock.run_lock`), so
        anything left here is debris from an earlier crash and may be deleted."""
        return self.path(STAGING, table, run.token())

    def glob(self, table: str) -> str:
        """DuckDB glob of every committed Parquet file of `table`."""
        return f"{self.uri}/{table}/*/*/*/*{PARQUET_SUFFIX}"

    def catalog_path(self) -> str:
        return self.path(CATALOG_FILE)
