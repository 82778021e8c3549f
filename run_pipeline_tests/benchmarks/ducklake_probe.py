"""DuckLake measured against the warehouse's own layout, on a warehouse already exported.

DuckLake's Python packages exist only for DuckDB 1.5.x while the project pins 2.0, so this
runs in a virtual environment of its own, with nothing of run_pipeline imported:

    python3 -m venv /tmp/lake && /tmp/lake/bin/pip install duckdb==1.5.5 duckdb-extension-ducklake==1.5.5
    /tmp/lake/bin/python run_pipeline_tests/benchmarks/ducklake_probe.py WAREHOUSE_DIR

It copies every run's `metrics` into one DuckLake table, one transaction per run (a delete and
an insert: how a re-export would replace a run atomically), then times the README's "mean over
the last 10% of steps" query (median of 7 after one warm-up) on DuckLake's files as committed,
after `ducklake_merge_adjacent_files` and clean-up, on the warehouse's own hive-partitioned
files and on one long-form file sorted by key (the ideal layout of the benchmark).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import duckdb_extension_ducklake


def _examples():
    """The warehouse's examples module, loaded by path: it imports only the standard library,
    and nothing else of run_pipeline is importable beside DuckDB 1.5."""
    path = Path(__file__).resolve().parents[2] / "run_pipeline" / "warehouse" / "examples.py"
    spec = importlib.util.spec_from_file_location("run_pipeline_examples", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


SQL = _examples().MEAN_OVER_LAST_10_PERCENT.replace("FROM metrics", "FROM {table}")


def timed(con, sql: str, metric: str) -> float:
    con.execute(sql, {"metric": metric}).fetchall()
    times = []
    for _ in range(7):
        start = time.perf_counter()
        con.execute(sql, {"metric": metric}).fetchall()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(warehouse: str, metric: str = "train/loss") -> None:
    ext = next(Path(duckdb_extension_ducklake.__file__).parent.rglob("ducklake.duckdb_extension"))
    out = Path(tempfile.mkdtemp(prefix="ducklake-probe-"))
    try:
        lake = duckdb.connect(config={"allow_unsigned_extensions": "true"})
        lake.execute(f"LOAD '{ext}'")
        lake.execute(f"ATTACH 'ducklake:{out}/meta.ducklake' AS lake (DATA_PATH '{out}/data/')")
        lake.execute("CREATE TABLE lake.metrics (entity VARCHAR, project VARCHAR, run_id VARCHAR, "
                     "step BIGINT, key VARCHAR, value DOUBLE)")
        runs: dict[str, list[str]] = {}
        for f in sorted(glob.glob(f"{warehouse}/metrics/*/*/*/*.parquet")):
            runs.setdefault(os.path.dirname(f), []).append(f)
        per_run = []
        for directory, files in runs.items():
            part = dict(p.split("=", 1) for p in directory.split("/")[-3:])
            ids = [part["entity"], part["project"], part["run_id"]]
            start = time.perf_counter()
            lake.execute("BEGIN")
            lake.execute("DELETE FROM lake.metrics WHERE entity = ? AND project = ? AND run_id = ?", ids)
            lake.execute(f"INSERT INTO lake.metrics SELECT ?, ?, ?, step, key, value FROM read_parquet({files!r}) "
                         "ORDER BY key, step", ids)
            lake.execute("COMMIT")
            per_run.append(time.perf_counter() - start)
        print(f"DuckDB {duckdb.__version__}, DuckLake: {len(runs)} runs committed one transaction each, "
              f"median {statistics.median(per_run) * 1000:.1f} ms per run, {sum(per_run):.1f} s in all")
        lake_sql = SQL.format(table="lake.metrics")
        print(f"  query on DuckLake as committed: {timed(lake, lake_sql, metric) * 1000:.0f} ms")
        lake.execute("CALL ducklake_merge_adjacent_files('lake')")
        lake.execute("CALL ducklake_expire_snapshots('lake', older_than => now())")
        lake.execute("CALL ducklake_cleanup_old_files('lake', cleanup_all => true)")
        files = len(glob.glob(f"{out}/data/**/*.parquet", recursive=True))
        print(f"  query on DuckLake merged ({files} files): {timed(lake, lake_sql, metric) * 1000:.0f} ms")
        hive = duckdb.connect()
        hive.execute("SET parquet_metadata_cache = true")
        hive.execute(f"CREATE VIEW metrics AS SELECT * FROM read_parquet('{warehouse}/metrics/*/*/*/*.parquet', "
                     "hive_partitioning = true)")
        print(f"  query on the warehouse's files: {timed(hive, SQL.format(table='metrics'), metric) * 1000:.0f} ms")
        ideal = out / "ideal.parquet"
        hive.execute(f"COPY (SELECT entity, project, run_id, step, CAST(key AS VARCHAR) AS key, value FROM metrics "
                     f"ORDER BY key, entity, project, run_id, step) TO '{ideal}' "
                     "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)")
        one = duckdb.connect()
        one.execute(f"CREATE VIEW metrics AS SELECT * FROM read_parquet('{ideal}')")
        print(f"  query on one file sorted by key: {timed(one, SQL.format(table='metrics'), metric) * 1000:.0f} ms")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: ducklake_probe.py WAREHOUSE_DIR [METRIC]")
    main(*sys.argv[1:])
