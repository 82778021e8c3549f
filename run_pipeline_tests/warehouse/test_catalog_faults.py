"""The catalog under faults: a write that cannot complete (a full disk, reproduced with a file
size limit in a child process, since mounting a small filesystem needs privileges CI may lack)
and a catalog damaged behind the stamp's back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import duckdb

from run_pipeline.warehouse import Warehouse, export_run, refresh_catalog

from .helpers import batch, make_run, query

_LIMITED_REFRESH = textwrap.dedent("""
    import resource, signal, sys
    from run_pipeline.warehouse import refresh_catalog
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
    try:
        print(refresh_catalog(sys.argv[1], force=True)["catalog"])
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
        sys.exit(3)
""")


def _limited_refresh(root) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.run([sys.executable, "-c", _LIMITED_REFRESH, str(root)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_a_catalog_that_cannot_be_written_fails_loudly_and_keeps_the_old_one(tmp_path):
    export_run(tmp_path, make_run(run_id="a"), [batch([0, 1], {"loss": [1.0, 2.0]})])
    # No catalog yet: the refresh fails, and no catalog (nor a stamp) is left behind.
    done = _limited_refresh(tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.startswith("WarehouseCatalogError: refreshing ") and "warehouse.duckdb" in done.stdout
    assert not (tmp_path / "warehouse.duckdb").exists()
    assert not (tmp_path / ".warehouse.duckdb.views").exists()
    # Space again: the next refresh builds it, and every view answers.
    assert refresh_catalog(tmp_path)["catalog"] == "rebuilt"
    assert query(tmp_path, "SELECT count(*) FROM runs", catalog=True) == [(1,)]
    # Full again: the refresh fails and the catalog readers use is the previous, whole one.
    export_run(tmp_path, make_run(run_id="b"), [batch([0], {"loss": [3.0]})])
    assert _limited_refresh(tmp_path).returncode == 3
    assert query(tmp_path, "SELECT count(*) FROM runs", catalog=True) == [(2,)]
    # The failed refresh dropped the stamp first, so the next one rebuilds rather than trusts.
    assert refresh_catalog(tmp_path)["catalog"] == "rebuilt"
    assert not list(tmp_path.glob("warehouse.duckdb.*"))


def test_a_catalog_missing_its_views_is_rebuilt_even_when_its_stamp_matches(tmp_path):
    export_run(tmp_path, make_run(run_id="a"), [batch([0], {"loss": [1.0]})])
    refresh_catalog(tmp_path)
    database = tmp_path / "warehouse.duckdb"
    before = os.stat(database)
    con = duckdb.connect(str(database))
    for view in ("runs", "history", "run_config", "run_summary", "system_metrics", "metrics"):
        con.execute(f"DROP VIEW {view}")
    con.close()
    os.utime(database, ns=(before.st_atime_ns, before.st_mtime_ns))  # the stamp still matches
    assert refresh_catalog(tmp_path)["catalog"] == "rebuilt"
    assert query(tmp_path, "SELECT count(*) FROM history", catalog=True) == [(1,)]


def test_a_moved_or_copied_warehouse_reads_its_own_files(tmp_path):
    original, copy, moved = tmp_path / "original", tmp_path / "copy", tmp_path / "moved"
    export_run(original, make_run(run_id="a"), [batch([0, 1], {"loss": [1.0, 2.0]})])
    refresh_catalog(original)
    shutil.copytree(original, copy)
    # The original changes after the copy: the copy must not show it.
    export_run(original, make_run(run_id="a"), [batch([0, 1, 2], {"loss": [5.0, 6.0, 7.0]})])
    with Warehouse(copy).connect() as con:
        assert con.execute("SELECT run_id, sum(loss) FROM history GROUP BY ALL").fetchall() == [("a", 3.0)]
        assert con.execute("SELECT count(*) FROM metrics").fetchall() == [(2,)]
    # Moved: the original's files are gone, and the moved one still answers.
    os.rename(original, moved)
    with Warehouse(moved).connect() as con:
        assert con.execute("SELECT run_id, sum(loss) FROM history GROUP BY ALL").fetchall() == [("a", 18.0)]
    # Rebuilt on that open: DuckDB itself, opening the file directly, now reads the moved files.
    assert query(moved, "SELECT count(*) FROM history", catalog=True) == [(3,)]

