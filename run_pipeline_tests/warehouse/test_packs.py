"""Metrics packs (`warehouse/packs.py`, `warehouse/compaction.py`): compaction moves finished
runs' long-form metrics into a few sorted files per project and the `metrics` view keeps exactly
the same rows; replacing, growing, retyping or deleting a packed run afterwards reads back as it
would in a warehouse that was never compacted (the reference every test compares against)."""

from __future__ import annotations

import math
import re
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from run_pipeline.warehouse import (
    FULL,
    INCREMENTAL,
    CompactResult,
    RunKey,
    Warehouse,
    WarehouseError,
    compaction,
    packs,
)
from run_pipeline.warehouse.catalog import has_files

from .helpers import GrowingHistory, JsonColumn, batch, make_run, query, same_rows

METRICS_SQL = "SELECT entity, project, run_id, step, key, value FROM metrics ORDER BY ALL"
HOSTILE = [("e'nt/=%ü", 'p"r; --%2F=', "it's"), ("e'nt/=%ü", 'p"r; --%2F=', "a/b=c%41"),
           ("e'nt/=%ü", 'p"r; --%2F=', "ünï ✓"), ("e'nt/=%ü", 'p"r; --%2F=', "*?[x]")]
KEYS = ("loss", "a/b", 'quo"te', "it's", "ünï ✓", "%x=1")


def history(seed: int, steps: int = 6, *, start: int = 0, scale: float = 1.0, repeat: bool = True):
    """A history with an int key, float keys (NaN, ±inf in `odd`), hostile key names and, with
    `repeat`, a step logged twice."""
    s = list(range(start, start + steps))
    if repeat:
        s = sorted(s + [start + 1])
    n = len(s)
    columns = {k: [scale * (seed + i * 0.5 + j) for i in range(n)] for j, k in enumerate(KEYS)}
    columns["count"] = [seed * 100 + i for i in range(n)]  # int64
    columns["odd"] = [[math.nan, math.inf, -math.inf, 0.0, -1.5][(i + seed) % 5] for i in range(n)]
    return [batch(s, columns)]


def export(wh: Warehouse, key: RunKey, hist, *, state: str = "finished", incremental: bool = False):
    steps = [s for b in hist for s in b.column(0).to_pylist()]
    record = make_run(key.entity, key.project, key.run_id, state=state, history_line_count=len(steps),
                      last_step=max(steps))
    return wh.export_run(record, GrowingHistory(hist), incremental=incremental)


def rows(root: Path, where: str = "") -> list[tuple]:
    return query(root, METRICS_SQL.replace("ORDER BY", f"{where} ORDER BY"))


def pack_files(root: Path) -> list[Path]:
    return sorted((root / "metrics_packs").glob("*/*/pack-*.parquet"))


def own_metrics_files(root: Path) -> list[Path]:
    return sorted((root / "metrics").glob("*/*/*/*.parquet"))


def keys(n: int, entity: str = "team", project: str = "proj", prefix: str = "r") -> list[RunKey]:
    return [RunKey(entity, project, f"{prefix}{i:02d}") for i in range(n)]


@pytest.fixture
def pair(tmp_path):
    """Two warehouses given the same exports: the first one compacted, the reference never."""
    return Warehouse(tmp_path / "wh"), Warehouse(tmp_path / "ref")


def both(pair, key: RunKey, hist, **kw):
    results = [export(wh, key, hist, **kw) for wh in pair]
    assert results[0].mode == results[1].mode
    return results[0]


def assert_same_as_reference(pair) -> list[tuple]:
    got, want = rows(Path(pair[0].uri)), rows(Path(pair[1].uri))
    assert same_rows(got, want), (len(got), len(want))
    return got


# -- 1. compaction keeps the rows ------------------------------------------------------------


def test_compaction_keeps_every_row_and_writes_one_sorted_pack(tmp_path):
    wh = Warehouse(tmp_path)
    runs = [RunKey(e, p, r) for e, p, r in HOSTILE] + keys(4, "e'nt/=%ü", 'p"r; --%2F=')
    for i, key in enumerate(runs):
        export(wh, key, history(i), state=["finished", "crashed", "failed", "killed", "preempted"][i % 5])
    wh.refresh_catalog()
    before = rows(tmp_path)
    assert len(before) == 8 * 7 * len((*KEYS, "count", "odd"))  # 8 runs, 7 rows (one repeated step), 8 keys
    assert any(math.isnan(r[5]) for r in before) and {math.inf, -math.inf} <= {r[5] for r in before}

    [result] = wh.compact()
    assert (result.entity, result.project, result.runs, result.rows, result.busy, result.recovered) == (
        "e'nt/=%ü", 'p"r; --%2F=', 8, len(before), 0, 0)
    assert re.fullmatch(r"""e'nt/=%ü/p"r; --%2F=: 8 runs \(448 metric rows\) packed into 1 file in \d+\.\d\ds""",
                        result.describe()), result.describe()

    assert same_rows(rows(tmp_path), before)
    with wh.connect() as con:  # the catalog, refreshed by compact()
        assert same_rows(con.execute(METRICS_SQL).fetchall(), before)
    assert own_metrics_files(tmp_path) == []
    [pack] = pack_files(tmp_path)
    assert pack.name == result.packs[0]
    assert pack.parent == Path(packs.pack_dir(wh.root, "e'nt/=%ü", 'p"r; --%2F='))
    assert packs.pack_runs(wh.root, str(pack)) == sorted(k.run_id for k in runs)
    table = pq.read_table(pack)
    assert table.column_names == ["run_id", "step", "key", "value"]
    order = list(zip(table.column("key").to_pylist(), table.column("run_id").to_pylist(),
                     table.column("step").to_pylist()))
    assert order == sorted(order)
    for key in runs:  # every part of every run names the pack
        assert {p.pack for p in wh.run_state(key).parts} == {pack.name}
    # History (wide form) is untouched; a second compaction finds nothing.
    assert query(tmp_path, "SELECT count(*) FROM history") == [(8 * 7,)]
    [again] = wh.compact()
    assert (again.runs, again.packs) == (0, ())
    assert re.fullmatch(r"""e'nt/=%ü/p"r; --%2F=: nothing to pack in \d+\.\d\ds""", again.describe())


def test_describe_names_busy_runs_and_finished_interrupted_packs():
    r = CompactResult("e", "p", 1, 1_234, ("pack-a.parquet",), 2, 1, 0.5)
    assert r.describe() == ("e/p: 1 runs (1,234 metric rows) packed into 1 file "
                            "(2 runs busy, left for next time; 1 interrupted pack finished) in 0.50s")
    r = CompactResult("e", "p", 0, 0, (), 0, 3, 0.0)
    assert r.describe() == "e/p: nothing to pack (3 interrupted packs finished) in 0.00s"
    r = CompactResult("e", "p", 20, 20_000, ("a", "b"), 0, 0, 1.25)
    assert r.describe() == "e/p: 20 runs (20,000 metric rows) packed into 2 files in 1.25s"


# -- 2. which runs, how many packs -----------------------------------------------------------


def test_only_terminal_runs_are_packed_and_a_running_one_keeps_its_files(tmp_path):
    wh = Warehouse(tmp_path)
    runs = keys(9)
    for i, key in enumerate(runs):
        export(wh, key, history(i), state="running" if i == 4 else "finished")
    before = rows(tmp_path)
    [result] = wh.compact()
    assert (result.runs, len(result.packs)) == (8, 1)
    assert [p.relative_to(tmp_path).parts[3] for p in own_metrics_files(tmp_path)] == ["run_id=r04"]
    assert "r04" not in packs.pack_runs(wh.root, str(pack_files(tmp_path)[0]))
    assert all(p.pack is None for p in wh.run_state(runs[4]).parts)
    assert same_rows(rows(tmp_path), before)


def test_fewer_runs_than_min_runs_write_nothing(tmp_path):
    wh = Warehouse(tmp_path)
    for i, key in enumerate(keys(3)):
        export(wh, key, history(i))
    files = own_metrics_files(tmp_path)
    [result] = wh.compact()  # default: 8 runs at least
    assert (result.runs, result.rows, result.packs) == (0, 0, ())
    assert result.describe().startswith("team/proj: nothing to pack in ")
    assert own_metrics_files(tmp_path) == files and not (tmp_path / "metrics_packs").exists()
    [result] = wh.compact(min_runs=3)
    assert (result.runs, len(result.packs)) == (3, 1)
    assert own_metrics_files(tmp_path) == []


def test_max_rows_groups_runs_into_several_packs_and_a_large_run_stays(tmp_path, monkeypatch):
    wh = Warehouse(tmp_path)
    runs = keys(7)
    for i, key in enumerate(runs):
        export(wh, key, history(i, steps=3, repeat=False))  # 3 rows × 8 keys = 24 metric rows
    export(wh, runs[6], history(6, steps=5, repeat=False))  # 40 rows: above LARGE_RUN_ROWS below
    before = rows(tmp_path)
    monkeypatch.setattr(compaction, "LARGE_RUN_ROWS", 30)
    states = {k.run_id: "finished" for k in runs}
    result = compaction.compact_project(wh.root, "team", "proj", states, min_runs=2, max_rows=50)
    assert (result.runs, result.rows, len(result.packs)) == (6, 6 * 24, 3)
    held = sorted(packs.pack_runs(wh.root, str(p)) for p in pack_files(tmp_path))
    assert held == [["r00", "r01"], ["r02", "r03"], ["r04", "r05"]]  # run-id order, ≤ 50 rows each
    assert [pq.read_metadata(p).num_rows for p in pack_files(tmp_path)] == [48, 48, 48]
    assert [p.relative_to(tmp_path).parts[3] for p in own_metrics_files(tmp_path)] == ["run_id=r06"]
    assert same_rows(rows(tmp_path), before)


# -- 3. packed runs change afterwards ---------------------------------------------------------


def packed_pair(pair, n: int = 8):
    """`n` finished runs in both warehouses, packed in the first one."""
    runs = keys(n)
    for i, key in enumerate(runs):
        both(pair, key, history(i))
    [result] = pair[0].compact()
    assert result.runs == n
    return runs, Path(pair[0].uri) / "metrics_packs" / "entity=team" / "project=proj" / result.packs[0]


def sort_keys(pack: Path) -> list[tuple]:
    table = pq.read_table(pack)
    return list(zip(table.column("key").to_pylist(), table.column("run_id").to_pylist(),
                    table.column("step").to_pylist()))


def test_a_pack_of_many_row_groups_stays_sorted_when_a_run_leaves_it(pair, monkeypatch):
    monkeypatch.setattr(packs, "ROW_GROUP_ROWS", 2048)  # DuckDB's smallest: row groups read in parallel
    runs = keys(8)
    for i, key in enumerate(runs):
        both(pair, key, history(i, steps=400))
    [result] = pair[0].compact()
    pack = pack_files(Path(pair[0].uri))[0]
    assert pq.read_metadata(pack).num_row_groups == math.ceil(8 * 401 * 8 / 2048)
    assert sort_keys(pack) == sorted(sort_keys(pack))
    assert both(pair, runs[5], history(5, steps=10, scale=2.0)).mode == FULL
    assert pq.read_metadata(pack).num_rows == 7 * 401 * 8
    assert sort_keys(pack) == sorted(sort_keys(pack))  # rewritten in its order, not sorted again
    assert_same_as_reference(pair)


def test_full_reexport_of_a_packed_run_replaces_its_rows_only(pair):
    runs, pack = packed_pair(pair)
    others = rows(Path(pair[0].uri), "WHERE run_id <> 'r03'")
    assert both(pair, runs[3], history(3, steps=4, scale=-2.0)).mode == FULL
    got = assert_same_as_reference(pair)
    assert sum(r[2] == "r03" for r in got) == 5 * 8
    assert {r[5] for r in got if r[2] == "r03" and r[4] == "loss"} == {-2.0 * (3 + i * 0.5) for i in range(5)}
    assert same_rows(rows(Path(pair[0].uri), "WHERE run_id <> 'r03'"), others)
    assert packs.pack_runs(pair[0].root, str(pack)) == [k.run_id for k in runs if k.run_id != "r03"]
    assert pq.read_metadata(pack).num_rows == 7 * 7 * 8
    assert sort_keys(pack) == sorted(sort_keys(pack))  # still sorted: rewritten in its order
    assert all(p.pack is None for p in pair[0].run_state(runs[3]).parts)
    assert len(own_metrics_files(Path(pair[0].uri))) == 1


def test_incremental_growth_of_a_packed_run_then_a_second_compaction(pair):
    runs, pack = packed_pair(pair)
    grown = history(4) + history(4, steps=5, start=6, repeat=False)
    assert both(pair, runs[4], grown, incremental=True).mode == INCREMENTAL
    got = assert_same_as_reference(pair)
    r04 = [(r[3], r[4]) for r in got if r[2] == "r04"]
    assert len(r04) == (7 + 5) * 8 and len(set(r04)) == 11 * 8  # one repeated step, nothing doubled
    parts = pair[0].run_state(runs[4]).parts
    assert [p.pack for p in parts] == [pack.name] + [None] * (len(parts) - 1)
    assert len(own_metrics_files(Path(pair[0].uri))) == len(parts) - 1

    [second] = pair[0].compact(min_runs=1)
    assert (second.runs, second.rows, len(second.packs)) == (1, 5 * 8, 1)
    assert own_metrics_files(Path(pair[0].uri)) == []
    # The pack with room grows: the same file name now holds the new part too.
    assert second.packs == (pack.name,) and pack_files(Path(pair[0].uri)) == [pack]
    assert packs.pack_runs(pair[0].root, str(pack)) == [r.run_id for r in runs]
    assert {p.pack for p in pair[0].run_state(runs[4]).parts} == {pack.name}
    assert_same_as_reference(pair)

    # A replace takes all of its rows out of the pack.
    assert both(pair, runs[4], history(4, scale=3.0)).mode == FULL
    assert_same_as_reference(pair)
    assert pack_files(Path(pair[0].uri)) == [pack]
    assert "r04" not in packs.pack_runs(pair[0].root, str(pack))


def test_delete_and_prune_take_runs_out_and_the_last_one_deletes_the_pack(pair):
    runs, pack = packed_pair(pair)
    for wh in pair:
        wh.delete_run(runs[0])
    assert_same_as_reference(pair)
    assert packs.pack_runs(pair[0].root, str(pack)) == [k.run_id for k in runs[1:]]
    when = datetime(2024, 6, 1, tzinfo=timezone.utc)
    for wh in pair:
        for key in runs[1:6]:
            assert wh.mark_deleted(key, when) == when
        assert sorted(wh.prune(when + timedelta(days=1)), key=str) == runs[1:6]
    got = assert_same_as_reference(pair)
    assert sorted({r[2] for r in got}) == ["r06", "r07"]
    assert packs.pack_runs(pair[0].root, str(pack)) == ["r06", "r07"]
    for wh in pair:
        for key in runs[6:]:
            wh.delete_run(key)
    assert pack_files(Path(pair[0].uri)) == [] and own_metrics_files(Path(pair[0].uri)) == []
    assert rows(Path(pair[0].uri)) == []
    assert not has_files(pair[0].root, "metrics")


def test_a_packed_numeric_key_that_later_logs_strings(pair):
    runs = keys(8)
    for i, key in enumerate(runs):
        both(pair, key, [batch([0, 1, 2], {"mixed": [1, 2, 3], "loss": [0.5, 0.25, 0.125]})])
    assert pair[0].compact()[0].runs == 8
    grown = [batch([0, 1, 2], {"mixed": [1, 2, 3], "loss": [0.5, 0.25, 0.125]}),
             batch([3, 4], {"mixed": JsonColumn(["n/a", 5]), "loss": [0.0625, 0.03125]})]
    assert both(pair, runs[2], grown, incremental=True).mode == INCREMENTAL
    got = assert_same_as_reference(pair)
    # `mixed` is JSON text now, so it leaves the long form, packed rows included.
    assert [(r[3], r[4], r[5]) for r in got if r[2] == "r02"] == [
        (0, "loss", 0.5), (1, "loss", 0.25), (2, "loss", 0.125), (3, "loss", 0.0625), (4, "loss", 0.03125)]
    assert len([r for r in got if r[4] == "mixed"]) == 7 * 3
    assert query(Path(pair[0].uri), "SELECT mixed FROM history WHERE run_id = 'r02' ORDER BY _step") == [
        ("1",), ("2",), ("3",), ('"n/a"',), ("5",)]
    assert "r02" not in packs.pack_runs(pair[0].root, str(pack_files(Path(pair[0].uri))[0]))


# -- 7. the catalog ---------------------------------------------------------------------------


def test_a_warehouse_whose_every_run_is_packed_keeps_a_metrics_view(tmp_path):
    wh = Warehouse(tmp_path)
    for i, key in enumerate(keys(8)):
        export(wh, key, history(i))
    before = rows(tmp_path)
    wh.refresh_catalog()
    wh.compact()
    assert own_metrics_files(tmp_path) == [] and not list((tmp_path / "metrics").rglob("*.parquet"))
    assert has_files(wh.root, "metrics")
    [statement] = [s for s in wh.view_statements() if s.startswith("CREATE OR REPLACE VIEW metrics ")]
    assert f"read_parquet('{tmp_path}/metrics_packs/*/*/*.parquet'" in statement
    assert f"'{tmp_path}/metrics/" not in statement
    assert wh.refresh_catalog(force=True)["empty_tables"] == "system_metrics"
    assert same_rows(query(tmp_path, METRICS_SQL, catalog=True), before)
    assert query(tmp_path, "SELECT DISTINCT typeof(step), typeof(key), typeof(value) FROM metrics",
                 catalog=True) == [("BIGINT", "VARCHAR", "DOUBLE")]
    # A run exported afterwards has its own file again: the view reads both.
    export(wh, RunKey("team", "proj", "new"), history(9))
    [statement] = [s for s in wh.view_statements() if s.startswith("CREATE OR REPLACE VIEW metrics ")]
    assert f"'{tmp_path}/metrics/*/*/*/*.parquet'" in statement and "UNION ALL" in statement
    assert query(tmp_path, "SELECT count(*) FROM metrics WHERE run_id = 'new'") == [(7 * 8,)]


# -- 6. an s3:// root -------------------------------------------------------------------------

S3_ENTITY, S3_PROJECT = "../x", "a'; DROP TABLE runs; --"


def s3_objects(fs, prefix: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def test_compaction_and_reexport_on_s3(s3, s3_endpoint, tmp_path):
    fs, bucket = s3
    wh, ref = Warehouse(f"s3://{bucket}/wh", filesystem=fs), Warehouse(tmp_path / "ref")
    runs = [RunKey(S3_ENTITY, S3_PROJECT, r) for r in ("ünï/=%", "it's", "r3")]
    for i, key in enumerate(runs):
        for w in (wh, ref):
            export(w, key, history(i))
    secret = {"key_id": "test", "secret": "test", "region": "us-east-1", "endpoint": s3_endpoint,
              "url_style": "path", "use_ssl": False}
    with wh.connect(s3_secret=secret) as con:
        before = con.execute(METRICS_SQL).fetchall()
    assert len(before) == 3 * 7 * 8

    [result] = wh.compact(min_runs=2)
    assert (result.runs, result.rows, len(result.packs)) == (3, 3 * 7 * 8, 1)
    keys_now = s3_objects(fs, bucket)
    assert not [k for k in keys_now if "/_staging/" in k]
    assert not [k for k in keys_now if k.startswith(f"{bucket}/wh/metrics/")]
    pack = f"{packs.pack_dir(wh.root, S3_ENTITY, S3_PROJECT)}/{result.packs[0]}"
    assert [k for k in keys_now if "/metrics_packs/" in k] == [pack]
    assert packs.pack_runs(wh.root, pack) == sorted(k.run_id for k in runs)
    [statement] = [s for s in wh.view_statements() if s.startswith("CREATE OR REPLACE VIEW metrics ")]
    assert statement.count("read_parquet(") == 1
    assert f"read_parquet('s3://{bucket}/wh/metrics_packs/*/*/*.parquet'" in statement
    with wh.connect(s3_secret=secret) as con:
        assert same_rows(con.execute(METRICS_SQL).fetchall(), before)

    # A replace of a packed run: its new rows from its own file, the others from the pack.
    for w in (wh, ref):
        assert export(w, runs[1], history(1, steps=3, scale=-1.0)).mode == FULL
    assert packs.pack_runs(wh.root, pack) == sorted(k.run_id for k in runs if k is not runs[1])
    [statement] = [s for s in wh.view_statements() if s.startswith("CREATE OR REPLACE VIEW metrics ")]
    assert f"read_parquet('s3://{bucket}/wh/metrics/*/*/*/*.parquet'" in statement and "UNION ALL" in statement
    assert not [k for k in s3_objects(fs, bucket) if "/_staging/" in k]
    with wh.connect(s3_secret=secret) as con:
        assert same_rows(con.execute(METRICS_SQL).fetchall(), rows(tmp_path / "ref"))
    wh.delete_run(runs[0])
    wh.delete_run(runs[2])
    ref.delete_run(runs[0])
    ref.delete_run(runs[2])
    assert not [k for k in s3_objects(fs, bucket) if "/metrics_packs/" in k]
    with wh.connect(s3_secret=secret) as con:
        assert same_rows(con.execute(METRICS_SQL).fetchall(), rows(tmp_path / "ref"))


def test_an_interrupted_compaction_on_s3_is_finished_by_the_next(s3, s3_endpoint, tmp_path, monkeypatch):
    """The compaction fails after moving two runs (a dropped connection, say): the pack stays
    pending in the bucket; a run whose manifest names it is replaced whole by its next export;
    the next compaction takes the others out of the pending pack or finishes it."""
    fs, bucket = s3
    wh, ref = Warehouse(f"s3://{bucket}/wh", filesystem=fs), Warehouse(tmp_path / "ref")
    runs = keys(4, S3_ENTITY, S3_PROJECT)
    for i, key in enumerate(runs):
        for w in (wh, ref):
            export(w, key, history(i))
    real, calls = compaction._drop_files, []

    def failing(*args):
        calls.append(args)
        if len(calls) == 3:
            raise OSError("connection reset")
        return real(*args)

    monkeypatch.setattr(compaction, "_drop_files", failing)
    with pytest.raises(WarehouseError, match=r": compaction stopped, nothing was lost: connection reset$"):
        wh.compact(min_runs=2)
    monkeypatch.setattr(compaction, "_drop_files", real)
    [name] = packs.pending_packs(wh.root, S3_ENTITY, S3_PROJECT)
    assert [k for k in s3_objects(fs, bucket) if "/metrics_packs/" in k] == []
    secret = {"key_id": "test", "secret": "test", "region": "us-east-1", "endpoint": s3_endpoint,
              "url_style": "path", "use_ssl": False}
    # r00 and r01 moved (absent until the pack is promoted); r02's manifest names the pack
    # but its own file is still read; r03 was never reached.
    assert {p.pack for p in wh.run_state(runs[2]).parts} == {name}
    with wh.connect(s3_secret=secret) as con:
        got = con.execute(METRICS_SQL).fetchall()
    assert same_rows(got, rows(tmp_path / "ref", "WHERE run_id NOT IN ('r00', 'r01')"))

    assert export(wh, runs[1], history(1), incremental=True).mode == FULL
    [result] = wh.compact(min_runs=2)
    # Recovery: r00 and r02 stay in the pending pack, promoted; r01 (replaced since) and r03
    # leave it, and are packed anew.
    assert (result.recovered, result.runs) == (1, 2)
    assert not [k for k in s3_objects(fs, bucket) if "/_staging/" in k]
    held = sorted(packs.pack_runs(wh.root, f"{packs.pack_dir(wh.root, S3_ENTITY, S3_PROJECT)}/{n}")
                  for n in packs.committed_packs(wh.root, S3_ENTITY, S3_PROJECT))
    assert held == [["r00", "r01", "r02", "r03"]]
    with wh.connect(s3_secret=secret) as con:
        assert same_rows(con.execute(METRICS_SQL).fetchall(), rows(tmp_path / "ref"))


def test_projects_are_packed_apart_and_two_compactions_at_once_pack_each_run_once(tmp_path):
    wh = Warehouse(tmp_path)
    for project in ("a", "b"):
        for i, key in enumerate(keys(8, project=project)):
            export(wh, key, history(i))
    before = rows(tmp_path)
    assert [r.project for r in wh.compact(projects=["b"], min_runs=100)] == ["b"]
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(wh.compact("team"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    results = sorted((r.project, r.runs) for results in out for r in results)
    assert results == [("a", 0), ("a", 8), ("b", 0), ("b", 8)]
    assert [p.parent.name for p in pack_files(tmp_path)] == ["project=a", "project=b"]
    assert own_metrics_files(tmp_path) == []
    assert same_rows(rows(tmp_path), before)


def test_a_compaction_reads_only_the_runs_with_files_of_their_own(pair, monkeypatch):
    """Packed runs cost a compaction nothing (no manifest read, no lock): it lists `metrics/`
    and looks only at the runs found there, so a refresh after every batch stays cheap."""
    runs, _ = packed_pair(pair)
    extra = keys(10)[8:]
    for i, key in enumerate(extra, start=8):
        both(pair, key, history(i))
    read = []
    real = compaction.read_state

    def counting(root, table, run):
        read.append(run.run_id)
        return real(root, table, run)

    monkeypatch.setattr(compaction, "read_state", counting)
    [result] = pair[0].compact(min_runs=1)
    assert sorted(read) == ["r08", "r09"] and result.runs == 2
    read.clear()
    [result] = pair[0].compact(min_runs=1)
    assert read == [] and result.runs == 0
    assert_same_as_reference(pair)


def test_a_pack_that_cannot_be_written_fails_by_name_and_changes_nothing(tmp_path):
    wh = Warehouse(tmp_path / "wh")
    runs = keys(8)
    for i, key in enumerate(runs):
        export(wh, key, history(i))
    wh.refresh_catalog()
    broken = next((tmp_path / "wh" / "metrics").rglob("run_id=r03/*.parquet"))
    broken.write_bytes(b"not parquet at all")
    before = {p: p.read_bytes() for p in (tmp_path / "wh").rglob("*") if p.is_file() and "_staging" not in p.parts
              and not p.name.startswith("warehouse.duckdb") and not p.name.startswith(".warehouse.duckdb")}
    with pytest.raises(WarehouseError, match=r"^team/proj: writing a metrics pack of 8 runs failed, nothing was changed: "
                       r"Invalid Input Error: No magic bytes found at end of file '.*/run_id=r03/part-[0-9-]+\.parquet'$"):
        wh.compact()
    after = {p: p.read_bytes() for p in (tmp_path / "wh").rglob("*") if p.is_file() and "_staging" not in p.parts
             and not p.name.startswith("warehouse.duckdb") and not p.name.startswith(".warehouse.duckdb")}
    assert after == before
    assert packs.pending_packs(wh.root, "team", "proj") == []
