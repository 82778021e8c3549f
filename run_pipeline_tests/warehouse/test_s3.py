"""An `s3://` root against moto's S3 server on a loopback port.

The S3 files are checked at the pyarrow level, by mirroring the bucket to a local directory
and reading it through the same view SQL, and by DuckDB itself over S3 through s3fs
registered as a filesystem (no DuckDB extension: nothing is downloaded).
"""

from __future__ import annotations

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from run_pipeline.warehouse import (
    FULL,
    INCREMENTAL,
    RunKey,
    Warehouse,
    WarehouseCatalogError,
    WarehouseRoot,
    decode_partition_value,
)

from .helpers import GrowingHistory, batch, make_run, query, system_batch

ENTITY, PROJECT, RUN_ID = "../x", "a'; DROP TABLE runs; --", "ünï/=%"


def objects(fs, prefix: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def history(n: int, start: int = 0):
    return [batch(list(range(start, start + n)), {"loss": [float(i) for i in range(start, start + n)],
                                                  "a/b": [i for i in range(start, start + n)]})]


def test_export_to_s3_lands_inside_the_prefix_with_decodable_partitions(s3, tmp_path):
    fs, bucket = s3
    wh = Warehouse(f"s3://{bucket}/warehouse", filesystem=fs)
    assert wh.uri == f"s3://{bucket}/warehouse"
    run = make_run(ENTITY, PROJECT, RUN_ID, config={"optimizer": {"name": "adam"}})
    result = wh.export_run(run, history(5), [system_batch([1.0, 2.0], {"gpu": [10.0, 20.0]})])
    assert result.history_rows_total == 5

    keys = objects(fs, bucket)
    assert keys and all(k.startswith(f"{bucket}/warehouse/") for k in keys)
    assert not [k for k in keys if "/_staging/" in k]
    parts = [k for k in keys if k.startswith(f"{bucket}/warehouse/history/") and k.endswith(".parquet")]
    assert len(parts) == 1
    entity_dir, project_dir, run_dir = parts[0].split("/")[3:6]
    assert [decode_partition_value(d.split("=", 1)[1]) for d in (entity_dir, project_dir, run_dir)] == [
        ENTITY, PROJECT, RUN_ID]
    table = pq.read_table(parts[0], filesystem=fs)
    assert table.column("loss").to_pylist() == [0.0, 1.0, 2.0, 3.0, 4.0]

    # The same bytes, mirrored to a local directory, read back through the view SQL.
    mirror = tmp_path / "mirror"
    pafs.copy_files(f"{bucket}/warehouse", str(mirror), source_filesystem=fs,
                    destination_filesystem=pafs.LocalFileSystem())
    assert query(mirror, 'SELECT entity, project, run_id, _step, loss, "a/b" FROM history ORDER BY _step')[0] == (
        ENTITY, PROJECT, RUN_ID, 0, 0.0, 0)
    assert query(mirror, "SELECT key, value FROM run_config") == [("optimizer.name", '"adam"')]
    assert query(mirror, "SELECT count(*) FROM system_metrics") == [(2,)]


def test_incremental_and_reexport_on_s3(s3, tmp_path):
    fs, bucket = s3
    wh = Warehouse(f"s3://{bucket}/wh", filesystem=fs)
    everything = history(4) + history(3, start=4)
    assert wh.export_run(make_run(), GrowingHistory(everything[:1])).mode == FULL
    source = GrowingHistory(everything)
    assert wh.export_run(make_run(), source, incremental=True).mode == INCREMENTAL
    assert source.calls == [4]
    assert wh.last_exported_step(RunKey("team", "proj", "run1")) == 6
    assert len([k for k in objects(fs, f"{bucket}/wh/history") if k.endswith(".parquet")]) == 2

    assert wh.export_run(make_run(), everything).mode == FULL  # replace: one generation remains
    keys = objects(fs, f"{bucket}/wh")
    assert len([k for k in keys if "/history/" in k and k.endswith(".parquet")]) == 1
    assert not [k for k in keys if "/_staging/" in k]
    mirror = tmp_path / "mirror"
    pafs.copy_files(f"{bucket}/wh", str(mirror), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    assert query(mirror, "SELECT count(*), sum(loss) FROM history") == [(7, 21.0)]


def test_interrupted_export_on_s3_adds_no_object(s3):
    fs, bucket = s3
    wh = Warehouse(f"s3://{bucket}/wh", filesystem=fs)
    wh.export_run(make_run(), history(3))
    before = objects(fs, bucket)

    def failing():
        yield from history(3)
        raise RuntimeError("connection reset")

    with pytest.raises(RuntimeError):
        wh.export_run(make_run(), failing())
    assert objects(fs, bucket) == before


def test_view_statements_for_s3_roots(s3):
    fs, bucket = s3
    wh = Warehouse(f"s3://{bucket}/wh", filesystem=fs)
    empty = wh.view_statements()
    assert all("read_parquet" not in sql for sql in empty)  # typed empty placeholders
    wh.export_run(make_run(), history(2))
    statements = {sql.split()[4]: sql for sql in wh.view_statements()}
    assert f"read_parquet('s3://{bucket}/wh/history/*/*/*/*.parquet'" in statements["history"]
    assert "read_parquet" not in statements["system_metrics"]
    with pytest.raises(WarehouseCatalogError):
        wh.refresh_catalog()  # a bucket has no local catalog file unless one is named


def test_duckdb_reads_the_bucket_with_nothing_downloaded(s3, s3_endpoint):
    fs, bucket = s3
    wh = Warehouse(f"s3://{bucket}/wh", filesystem=fs)
    wh.export_run(make_run(), history(3))
    secret = {"key_id": "test", "secret": "test", "region": "us-east-1", "endpoint": s3_endpoint,
              "url_style": "path", "use_ssl": False}
    con = wh.connect(s3_secret=secret)
    assert con.execute("SELECT count(*), sum(loss) FROM history").fetchall() == [(3, 3.0)]
    assert con.execute("SELECT entity, project, run_id FROM runs").fetchall() == [("team", "proj", "run1")]
    assert con.execute("SELECT current_setting('autoinstall_known_extensions')").fetchone() == (False,)
    assert con.execute("SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'httpfs'").fetchall() in (
        [], [(False,)])
    # Listings are not cached: a run exported after the connection opened is seen.
    wh.export_run(make_run(run_id="run2"), history(2))
    assert con.execute("SELECT count(*) FROM history").fetchall() == [(5,)]


def test_root_parsing_keeps_bucket_and_prefix(s3):
    fs, bucket = s3
    root = WarehouseRoot.parse(f"s3://{bucket}/a/b/", fs)
    assert (root.base, root.uri, root.is_local) == (f"{bucket}/a/b", f"s3://{bucket}/a/b", False)
