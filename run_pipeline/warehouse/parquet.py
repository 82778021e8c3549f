"""Parquet writing: the platform's write settings, lazily opened writers, and the staging area
that makes every file appear atomically under its final name.

A file is written completely in a staging directory outside every table directory, then
placed: a rename on a local root (atomic on POSIX), an upload on object stores (an S3 object
becomes visible only once its upload completes, so a partial object is never listed). Nothing
is ever streamed straight to a final S3 key, because pyarrow completes a multipart upload even
when the writer fails part-way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .layout import RunKey, WarehouseRoot

#: Rows buffered before a row group is written, and the byte cap that bounds memory on wide runs.
ROW_GROUP_ROWS = 131_072
ROW_GROUP_BYTES = 4 * 1024 * 1024  # 16 MiB raised the peak RSS of wide runs; 64 MiB grew with run length
COMPRESSION = "zstd"


def _leaf_paths(field: pa.Field, prefix: str = "") -> list[tuple[str, pa.DataType]]:
    path = prefix + field.name
    t = field.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _leaf_paths(t.value_field, path + ".list.")
    if pa.types.is_struct(t):
        return [leaf for f in t for leaf in _leaf_paths(f, path + ".")]
    return [(path, t)]


#: Ascending integer columns (steps), which delta encoding packs into a few bits per value.
DELTA_COLUMNS = ("_step", "step")


def write_options(schema: pa.Schema) -> dict:
    """zstd; dictionary encoding only for string columns; BYTE_STREAM_SPLIT for floats
    (3× faster than pyarrow's defaults on metric tables, see PLATFORM.md); delta encoding for
    the step columns."""
    dictionary, encoding = [], {}
    for field in schema:
        for path, t in _leaf_paths(field):
            if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
                dictionary.append(path)
            elif pa.types.is_floating(t):
                encoding[path] = "BYTE_STREAM_SPLIT"
            elif path in DELTA_COLUMNS and pa.types.is_int64(t):
                encoding[path] = "DELTA_BINARY_PACKED"
    return {"compression": COMPRESSION, "use_dictionary": dictionary, "column_encoding": encoding}


class LazyParquetWriter:
    """A ParquetWriter opened on the first write, so an empty part leaves no file. `options`
    are passed to the writer after `write_options`."""

    def __init__(self, path: str, **options):
        self.path = path
        self.options = options
        self.rows = 0
        self.schema: pa.Schema | None = None
        self._writer: pq.ParquetWriter | None = None

    @property
    def opened(self) -> bool:
        return self._writer is not None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self.schema = table.schema
            self._writer = pq.ParquetWriter(self.path, table.schema, **write_options(table.schema), **self.options)
        self._writer.write_table(table, row_group_size=max(len(table), 1))
        self.rows += len(table)

    def close(self) -> int:
        """Close the file; return its size in bytes (0 when nothing was written)."""
        if self._writer is None:
            return 0
        self._writer.close()
        self._writer = None
        return os.path.getsize(self.path)

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
        if os.path.exists(self.path):
            os.remove(self.path)


class Stage:
    """One export's scratch space.

    On a local root it is `<root>/_staging/<table>/<run token>/`, on the root's filesystem
    so placing a file is a rename (`export_run` stages all of a run's tables in one stage). On
    an object store files are written to a local temporary directory and uploaded when placed;
    `upload` first copies them to the same `_staging/` prefix in the bucket when a replace must
    keep its delete-then-place window short.
    Only one export of a run runs at a time (`lock.run_lock`), so whatever an earlier crash left
    in the run's staging directory is deleted when a new stage opens.
    """

    def __init__(self, root: WarehouseRoot, table: str, run: RunKey):
        self.root = root
        self.remote_dir = root.staging_dir(table, run)
        _delete_dir(root.fs, self.remote_dir)
        if root.is_local:
            self.local_dir = self.remote_dir
            os.makedirs(self.local_dir, exist_ok=True)
        else:
            self.local_dir = tempfile.mkdtemp(prefix="run_pipeline-stage-")
        self._files: dict[tuple[str, str], str] = {}
        self._uploaded: dict[tuple[str, str], str] = {}
        self._made: set[str] = set()  # local directories known to exist

    def new_file(self, kind: str, name: str) -> str:
        """A fresh local path for the file that will be placed as `name` in table `kind`."""
        path = os.path.join(self.local_dir, f"{uuid.uuid4().hex}.tmp")
        self._files[(kind, name)] = path
        return path

    def local_file(self, kind: str, name: str) -> str:
        return self._files[(kind, name)]

    def rename(self, kind: str, name: str, new_name: str) -> None:
        """Change the name a staged file will be placed under."""
        self._files[(kind, new_name)] = self._files.pop((kind, name))

    def upload(self, kind: str, name: str) -> None:
        """Object stores: copy the staged file into the bucket's staging prefix now, so that
        placing it later is a quick server-side copy."""
        if self.root.is_local or (kind, name) in self._uploaded:
            return
        remote = f"{self.remote_dir}/{os.path.basename(self._files[(kind, name)])}"
        _upload(self._files[(kind, name)], self.root.fs, remote)
        self._uploaded[(kind, name)] = remote

    def place(self, kind: str, name: str, final_path: str) -> None:
        """Make the staged file visible under `final_path`, atomically."""
        fs = self.root.fs
        parent = final_path.rsplit("/", 1)[0]
        if self.root.is_local:
            # A run places up to eight files into six directories: each is made once.
            if parent not in self._made:
                os.makedirs(parent, exist_ok=True)
                self._made.add(parent)
            os.replace(self._files[(kind, name)], final_path)
        elif (kind, name) in self._uploaded:
            fs.move(self._uploaded.pop((kind, name)), final_path)
        else:
            _upload(self._files[(kind, name)], fs, final_path)

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        if not self.root.is_local:
            shutil.rmtree(self.local_dir, ignore_errors=True)
        else:
            try:  # every staged file placed: the directory is empty, one rmdir removes it
                os.rmdir(self.local_dir)
                return
            except FileNotFoundError:
                return
            except OSError:  # files left by a failed export
                pass
        _delete_dir(self.root.fs, self.remote_dir)


def _upload(local_path: str, fs: pafs.FileSystem, remote_path: str) -> None:
    pafs.copy_files(local_path, remote_path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)


def _delete_dir(fs: pafs.FileSystem, path: str) -> None:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


def write_table_file(stage: Stage, kind: str, name: str, table: pa.Table) -> int:
    """Write a whole (small) table to a staged file; return its size in bytes."""
    path = stage.new_file(kind, name)
    pq.write_table(table, path, **write_options(table.schema))
    return os.path.getsize(path)


def write_bytes_file(stage: Stage, kind: str, name: str, data: bytes) -> None:
    path = stage.new_file(kind, name)
    with open(path, "wb") as f:
        f.write(data)


def delete_file(fs: pafs.FileSystem, path: str) -> None:
    """Delete a file if it exists."""
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def list_files(fs: pafs.FileSystem, directory: str) -> list[str]:
    """Base names of the files directly in `directory` ([] when it does not exist)."""
    infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)
