"""History export read back through DuckDB: typing, names, ids, idempotence, incremental."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from run_pipeline.warehouse import (
    FULL,
    INCREMENTAL,
    UNCHANGED,
    WarehouseDataError,
    export_run,
    read_state,
    RunKey,
    WarehouseRoot,
)
from run_pipeline.warehouse import long_form as long_form_module
from run_pipeline.warehouse import parts as parts_module

from .helpers import (
    GrowingHistory,
    JsonColumn,
    batch,
    columns,
    make_run,
    query,
    same_rows,
    system_batch,
    visible_files,
)

BIG = 2**70  # beyond int64: the client sends it as JSON text


@pytest.fixture(params=["one-part", "row-group-per-batch", "tiny-parts"])
def small_row_groups(request, monkeypatch):
    """Run a test with everything in one buffered part; with a row group flushed after every
    batch (so type changes and new keys roll parts and force rewrites); and with parts capped
    at three rows."""
    if request.param == "row-group-per-batch":
        monkeypatch.setattr(parts_module, "ROW_GROUP_ROWS", 1)
    if request.param == "tiny-parts":
        monkeypatch.setattr(parts_module, "ROW_GROUP_ROWS", 2)
        monkeypatch.setattr(parts_module, "PART_MAX_ROWS", 3)
    return request.param


def typed_batches():
    return [
        batch([0, 1], {"ints": [1, 2], "int_then_float": [1, 2], "nonfinite": [math.nan, math.inf],
                       "text": ["a", "b"], "flag": [True, False], "obj": JsonColumn([{"a": 1}, [1, 2]]),
                       "mixed": [1, 2], "big": JsonColumn([BIG, None])}),
        batch([2, 3], {"ints": [3, 2**62], "int_then_float": [2.5, -0.5], "nonfinite": [-math.inf, 0.25],
                       "text": ["c", None], "flag": [None, True],
                       "obj": JsonColumn([{"nested": {"x": [None, "y"]}}, {"_type": "image-file", "path": "a.png"}]),
                       "mixed": ["three", "four"]}),
    ]


def test_typing_rules(tmp_path, small_row_groups):
    export_run(tmp_path, make_run(), typed_batches())
    types = columns(tmp_path, "history")
    assert types["_step"] == "BIGINT"
    assert types["ints"] == "BIGINT"
    assert types["int_then_float"] == "DOUBLE"
    assert types["nonfinite"] == "DOUBLE"
    assert types["text"] == "VARCHAR"
    assert types["flag"] == "BOOLEAN"
    assert types["obj"] == types["mixed"] == types["big"] == "VARCHAR"  # JSON text

    rows = query(tmp_path, 'SELECT ints, int_then_float, nonfinite, text, flag, obj, mixed, big '
                           'FROM history ORDER BY _step')
    ints, int_then_float, nonfinite, text, flag, obj, mixed, big = zip(*rows)
    assert ints == (1, 2, 3, 2**62)
    assert int_then_float == (1.0, 2.0, 2.5, -0.5)
    assert math.isnan(nonfinite[0]) and nonfinite[1:] == (math.inf, -math.inf, 0.25)
    assert text == ("a", "b", "c", None)
    assert flag == (True, False, None, True)
    assert [json.loads(o) for o in obj] == [{"a": 1}, [1, 2], {"nested": {"x": [None, "y"]}},
                                           {"_type": "image-file", "path": "a.png"}]
    assert [json.loads(m) for m in mixed] == [1, 2, "three", "four"]
    assert json.loads(big[0]) == BIG and big[1:] == (None, None, None)
    # The JSON text is valid for DuckDB's JSON type.
    assert query(tmp_path, "SELECT CAST(obj AS JSON) ->> '$.a' FROM history WHERE _step = 0") == [("1",)]

    # Every numeric value is also in long form, as DOUBLE.
    metrics = query(tmp_path, "SELECT key, step, value FROM metrics ORDER BY key, step")
    by_key = {}
    for key, step, value in metrics:
        by_key.setdefault(key, []).append((step, value))
    assert set(by_key) == {"ints", "int_then_float", "nonfinite"}
    assert by_key["ints"] == [(0, 1.0), (1, 2.0), (2, 3.0), (3, float(2**62))]
    assert math.isnan(by_key["nonfinite"][0][1]) and [v for _, v in by_key["nonfinite"][1:]] == [math.inf, -math.inf, 0.25]


def test_json_nan_inside_objects_becomes_strings(tmp_path):
    texts = pa.array(['{"x": NaN, "y": [Infinity, -Infinity, 1.5]}'], pa.string())
    b = pa.record_batch([pa.array([0], pa.int64()), texts],
                        schema=pa.schema([pa.field("_step", pa.int64()),
                                          pa.field("o", pa.string(), metadata={b"run_pipeline.json": b"1"})]))
    export_run(tmp_path, make_run(), [b])
    [(text,)] = query(tmp_path, "SELECT CAST(o AS JSON) FROM history")
    assert json.loads(text) == {"x": "NaN", "y": ["Infinity", "-Infinity", 1.5]}


HOSTILE_KEYS = ["a/b", "a.b", "with space", 'quo"te', "it's", "ünï ✓", "", "x" * 1000,
                "loss", "Loss", "entity", "RUN_ID"]


def test_hostile_column_names_round_trip(tmp_path):
    values = {k: [float(i), float(i) + 0.5] for i, k in enumerate(HOSTILE_KEYS)}
    export_run(tmp_path, make_run(), [batch([0, 1], values)])
    names = list(columns(tmp_path, "history"))
    expected_columns = {k: k for k in HOSTILE_KEYS}
    expected_columns.update({"": "(empty key)", "Loss": "Loss (2)", "entity": "entity (2)", "RUN_ID": "RUN_ID (2)"})
    assert names == ["entity", "project", "run_id", "_step", *expected_columns.values()]
    for key, column in expected_columns.items():
        quoted = '"' + column.replace('"', '""') + '"'
        assert query(tmp_path, f"SELECT {quoted} FROM history ORDER BY _step") == [
            (values[key][0],), (values[key][1],)], key
    # The long form keeps every key exactly as logged.
    long = query(tmp_path, "SELECT key, step, value FROM metrics")
    assert {(k, s): v for k, s, v in long} == {(k, s): values[k][s] for k in HOSTILE_KEYS for s in (0, 1)}
    # Renamed columns carry the logged key in their Parquet field metadata.
    part = next((tmp_path / "history").rglob("*.parquet"))
    schema = pq.read_schema(part)
    assert schema.field("(empty key)").metadata[b"run_pipeline.key"] == b""
    assert schema.field("Loss (2)").metadata[b"run_pipeline.key"] == b"Loss"


HOSTILE_IDS = [("../x", "a'; DROP TABLE runs; --", "ünï/=%2F"),
               ("__HIVE_DEFAULT_PARTITION__", "..", "00123"),
               ("e", "p r\no\tj", "")]


def test_hostile_ids_stay_inside_root_and_read_back(tmp_path):
    root = tmp_path / "wh"
    for i, (entity, project, run_id) in enumerate(HOSTILE_IDS):
        export_run(root, make_run(entity, project, run_id, summary={"i": i}), [batch([0], {"v": [float(i)]})],
                   [system_batch([1.0], {"gpu": [1.0]})])
    assert [p.name for p in tmp_path.iterdir()] == ["wh"]
    for table in ("runs", "history", "metrics", "run_summary"):
        got = sorted(query(root, f"SELECT entity, project, run_id FROM {table}"))
        assert got == sorted(HOSTILE_IDS), table
    for i, (entity, project, run_id) in enumerate(HOSTILE_IDS):
        params = {"e": entity, "p": project, "r": run_id}
        assert query(root, "SELECT v FROM history WHERE entity = $e AND project = $p AND run_id = $r",
                     params) == [(float(i),)]
        assert query(root, "SELECT value_double FROM run_summary WHERE entity = $e AND project = $p "
                           "AND run_id = $r AND key = 'i'", params) == [(float(i),)]
    assert query(root, "SELECT count(*) FROM runs") == [(3,)]


def test_reexport_replaces_partition(tmp_path, small_row_groups):
    run = make_run()
    export_run(tmp_path, run, typed_batches())
    first = query(tmp_path, "SELECT * FROM history ORDER BY _step")
    files = visible_files(tmp_path)
    result = export_run(tmp_path, run, typed_batches())
    assert result.mode == FULL and result.history_rows_total == 4
    assert same_rows(query(tmp_path, "SELECT * FROM history ORDER BY _step"), first)
    assert query(tmp_path, "SELECT count(*) FROM metrics") == [(12,)]
    assert len(visible_files(tmp_path)) == len(files)  # one generation replaced the other


def growing_batches():
    """A run whose later steps change types, add keys, repeat a step and turn a numeric key
    into a mixed (JSON) one."""
    return [
        batch([0, 1], {"loss": [1, 2], "acc": [0.1, 0.2], "stage": ["a", "b"]}),
        batch([2, 3], {"loss": [0.5, 0.25], "acc": [0.3, None]}),
        batch([4, 4, 5], {"loss": [0.2, 0.2, 0.1], "val/acc": [0.9, 0.91, None], "stage": ["c", "c", "d"]}),
        batch([6, 7], {"loss": [0.05, 0.04], "acc": JsonColumn(["n/a", 0.5]), "flag": [True, False]}),
        batch([8], {"loss": [0.03], "acc": pa.array([1], pa.int64()), "img": JsonColumn([{"_type": "image-file"}])}),
    ]


def _snapshot(root):
    """History rows (columns in name order: union_by_name orders them by file), long-form
    metrics, and the view's column types."""
    types = columns(root, "history")
    names = ", ".join('"' + n.replace('"', '""') + '"' for n in sorted(types))
    return (query(root, f"SELECT {names} FROM history ORDER BY ALL"),
            query(root, "SELECT step, key, value FROM metrics ORDER BY key, step, value"),
            types)


@pytest.mark.parametrize("cut", [[2, 3, 5], [1, 4, 5], [3, 5]])
def test_incremental_equals_full(tmp_path, small_row_groups, cut):
    everything = growing_batches()
    full_root, inc_root = tmp_path / "full", tmp_path / "inc"
    source = GrowingHistory(everything)
    export_run(full_root, make_run(history_line_count=source.rows(), last_step=source.last_step()), source)

    modes, previous_last = [], None
    for n in cut:
        grown = GrowingHistory(everything[:n])
        run = make_run(history_line_count=grown.rows(), last_step=grown.last_step())
        modes.append(export_run(inc_root, run, grown, incremental=True).mode)
        assert grown.calls == [0 if previous_last is None else previous_last + 1]
        previous_last = grown.last_step()
    assert modes == [FULL] + [INCREMENTAL] * (len(cut) - 1)
    full, inc = _snapshot(full_root), _snapshot(inc_root)
    assert inc[2] == full[2]
    assert same_rows(inc[0], full[0])
    assert same_rows(inc[1], full[1])
    assert query(inc_root, "SELECT count(*), count(DISTINCT _step) FROM history") == [(10, 9)]


def test_incremental_with_plain_iterable_skips_exported_steps(tmp_path):
    everything = growing_batches()
    export_run(tmp_path, make_run(), everything[:2])
    result = export_run(tmp_path, make_run(), everything, incremental=True)
    assert result.mode == INCREMENTAL and result.history_rows_written == 6
    assert query(tmp_path, "SELECT count(*) FROM history") == [(10,)]


def test_incremental_appends_without_touching_committed_parts(tmp_path):
    everything = [batch([0, 1], {"loss": [1.0, 2.0]}), batch([2, 3], {"loss": [3.0, 4.0]})]
    export_run(tmp_path, make_run(), everything[:1])
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "history").rglob("*.parquet")}
    export_run(tmp_path, make_run(), GrowingHistory(everything), incremental=True)
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "history").rglob("*.parquet")}
    assert len(after) == 2 and all(after[p] == t for p, t in before.items())


def test_unchanged_run_is_not_fetched(tmp_path):
    source = GrowingHistory([batch([0, 5], {"x": [1.0, 2.0]})])
    run = make_run(history_line_count=2, last_step=5)
    export_run(tmp_path, run, source)
    again = GrowingHistory(source.batches)
    assert export_run(tmp_path, run, again, incremental=True).mode == UNCHANGED
    assert again.calls == []


def test_shrunk_history_is_replaced(tmp_path):
    export_run(tmp_path, make_run(), [batch(list(range(10)), {"x": [float(i) for i in range(10)]})])
    short = GrowingHistory([batch(list(range(5)), {"x": [float(-i) for i in range(5)]})])
    result = export_run(tmp_path, make_run(history_line_count=5, last_step=4), short, incremental=True)
    assert result.mode == FULL and short.calls == [0]
    assert query(tmp_path, "SELECT sum(x), count(*) FROM history") == [(-10.0, 5)]


def test_rows_added_at_the_last_exported_step_force_a_full_export(tmp_path):
    export_run(tmp_path, make_run(), [batch([0, 1], {"x": [1.0, 2.0]})])
    source = GrowingHistory([batch([0, 1, 1], {"x": [1.0, 2.0, 3.0]})])
    result = export_run(tmp_path, make_run(history_line_count=3, last_step=1), source, incremental=True)
    assert result.mode == FULL
    assert query(tmp_path, "SELECT count(*) FROM history") == [(3,)]


def test_rows_added_below_the_last_exported_step_force_a_full_export(tmp_path):
    # A resumed run logs step 1 again after step 5 was exported, and step 6: fetching only
    # "steps after 5" would miss the new row at step 1 while the row count says it is there.
    export_run(tmp_path, make_run(), [batch([0, 1, 5], {"x": [1.0, 2.0, 3.0]})])
    source = GrowingHistory([batch([0, 1, 1, 5, 6], {"x": [1.0, 2.0, 9.0, 3.0, 4.0]})])
    result = export_run(tmp_path, make_run(history_line_count=5, last_step=6), source, incremental=True)
    assert result.mode == FULL and source.calls == [6, 0]
    assert query(tmp_path, "SELECT sum(x), count(*) FROM history") == [(19.0, 5)]


class Boom(RuntimeError):
    pass


def failing(batches, after: int):
    for i, b in enumerate(batches):
        if i == after:
            raise Boom("network went away")
        yield b


@pytest.mark.parametrize("incremental", [False, True])
def test_interrupted_export_leaves_old_content(tmp_path, small_row_groups, incremental):
    export_run(tmp_path, make_run(), growing_batches()[:2])
    before_rows = query(tmp_path, "SELECT * FROM history ORDER BY _step")
    before_files = visible_files(tmp_path)
    with pytest.raises(Boom):
        export_run(tmp_path, make_run(), failing(growing_batches(), after=4), incremental=incremental)
    assert visible_files(tmp_path) == before_files
    assert same_rows(query(tmp_path, "SELECT * FROM history ORDER BY _step"), before_rows)
    # Nothing staged is left behind (the run's lock file stays: lock files are never deleted).
    assert not [p for p in (tmp_path / "_staging").rglob("*.*") if p.parent.name != "locks"]
    # The next export works normally.
    export_run(tmp_path, make_run(), growing_batches(), incremental=incremental)
    assert query(tmp_path, "SELECT count(*) FROM history") == [(10,)]


def test_interrupted_first_export_leaves_nothing(tmp_path):
    with pytest.raises(Boom):
        export_run(tmp_path, make_run(), failing(growing_batches(), after=3))
    assert visible_files(tmp_path) == []
    assert query(tmp_path, "SELECT count(*) FROM history") == [(0,)]


def test_debris_of_an_interrupted_commit_triggers_a_full_replace(tmp_path):
    export_run(tmp_path, make_run(), [batch([0, 1], {"x": [1.0, 2.0]})])
    run_dir = next((tmp_path / "history").rglob("_manifest.json")).parent
    part = next(run_dir.glob("*.parquet"))
    (run_dir / "part-000009-00000.parquet").write_bytes(part.read_bytes())  # an orphan part
    assert query(tmp_path, "SELECT count(*) FROM history") == [(4,)]
    source = GrowingHistory([batch([0, 1, 2], {"x": [1.0, 2.0, 3.0]})])
    result = export_run(tmp_path, make_run(), source, incremental=True)
    assert result.mode == FULL and source.calls == [0]
    assert query(tmp_path, "SELECT x FROM history ORDER BY _step") == [(1.0,), (2.0,), (3.0,)]


def test_state_records_last_step_rows_and_columns(tmp_path):
    export_run(tmp_path, make_run(), growing_batches())
    state = read_state(WarehouseRoot.parse(tmp_path), "history", RunKey("team", "proj", "run1"))
    assert (state.rows, state.last_step) == (10, 8)
    assert [(k, t) for k, _, t in state.columns] == [
        ("loss", "double"), ("acc", "json"), ("stage", "string"), ("val/acc", "double"),
        ("flag", "bool"), ("img", "json")]


def test_empty_history_commits_an_empty_state(tmp_path):
    result = export_run(tmp_path, make_run(), [])
    assert (result.history_rows_total, result.last_step) == (0, -1)
    assert query(tmp_path, "SELECT count(*) FROM history") == [(0,)]


def test_steps_going_backwards_are_rejected(tmp_path):
    with pytest.raises(WarehouseDataError):
        export_run(tmp_path, make_run(), [batch([5, 6], {"x": [1.0, 2.0]}), batch([3], {"x": [3.0]})])
    assert visible_files(tmp_path) == []


def test_system_metrics_are_replaced_whole(tmp_path):
    sys1 = [system_batch([100.0, 101.0], {"gpu.0.util": [10, 20]})]
    export_run(tmp_path, make_run(), None, sys1)
    sys2 = [system_batch([100.0, 101.0, 102.0], {"gpu.0.util": [10.5, 20, 30], "cpu": [1.0, 2.0, 3.0]})]
    result = export_run(tmp_path, make_run(), None, lambda: iter(sys2))
    assert result.system_rows_total == 3
    assert list(columns(tmp_path, "system_metrics")) == [
        "entity", "project", "run_id", "_timestamp", "_runtime", "gpu.0.util", "cpu"]
    assert query(tmp_path, 'SELECT "gpu.0.util", cpu FROM system_metrics ORDER BY _timestamp') == [
        (10.5, 1.0), (20.0, 2.0), (30.0, 3.0)]


def test_crash_in_the_middle_of_a_commit_shows_a_prefix_then_heals(tmp_path, monkeypatch):
    monkeypatch.setattr(parts_module, "ROW_GROUP_ROWS", 1)
    monkeypatch.setattr(parts_module, "PART_MAX_ROWS", 2)
    steps = list(range(6))
    export_run(tmp_path, make_run(), [batch(steps[i:i + 2], {"x": [float(s) for s in steps[i:i + 2]]})
                                      for i in (0, 2, 4)])
    assert len(list((tmp_path / "history").rglob("*.parquet"))) == 3

    from run_pipeline.warehouse.parquet import Stage
    real_place, calls = Stage.place, []

    def crashing_place(self, kind, name, final_path):
        calls.append(name)
        if kind == "history" and len([c for c in calls if c.startswith("part-")]) > 2:
            raise OSError("disk vanished")
        return real_place(self, kind, name, final_path)

    monkeypatch.setattr(Stage, "place", crashing_place)
    replacement = [batch(steps[i:i + 2], {"x": [-float(s) for s in steps[i:i + 2]]}) for i in (0, 2, 4)]
    with pytest.raises(OSError):
        export_run(tmp_path, make_run(), replacement)
    # Old parts are gone, the first new part is in: a prefix of the new export, no duplicates.
    seen = query(tmp_path, "SELECT _step, x FROM history ORDER BY _step")
    assert seen == [(0, -0.0), (1, -1.0)]
    monkeypatch.setattr(Stage, "place", real_place)
    result = export_run(tmp_path, make_run(), replacement, incremental=True)
    assert result.mode == FULL
    assert query(tmp_path, "SELECT _step, x FROM history ORDER BY _step") == [(s, -float(s)) for s in steps]
    assert query(tmp_path, "SELECT count(*) FROM metrics") == [(6,)]


def test_run_states_list_every_exported_run(tmp_path):
    from run_pipeline.warehouse import Warehouse

    wh = Warehouse(tmp_path)
    for run_id, n in (("a/1", 2), ("b", 3)):
        wh.export_run(make_run(run_id=run_id), [batch(list(range(n)), {"x": [1.0] * n})])
    states = {run.run_id: (s.rows, s.last_step) for run, s in wh.run_states()}
    assert states == {"a/1": (2, 1), "b": (3, 2)}
    assert wh.last_exported_step(RunKey("team", "proj", "b")) == 2
    assert wh.last_exported_step(RunKey("team", "proj", "nope")) == -1
    wh.delete_run(RunKey("team", "proj", "b"))
    assert [run.run_id for run, _ in wh.run_states()] == ["a/1"]
    assert query(tmp_path, "SELECT DISTINCT run_id FROM history") == [("a/1",)]
    assert query(tmp_path, "SELECT run_id FROM runs") == [("a/1",)]


def test_metrics_are_sorted_by_key_with_a_page_index(tmp_path, monkeypatch):
    """A `WHERE key = …` scan can skip what it does not need: rows sorted by key name then
    step, written with a page index (pages of at most METRICS_PAGE_ROWS rows), and row groups,
    when a slice is too big for one, that hold whole keys in key order."""
    monkeypatch.setattr(long_form_module, "METRICS_ROW_GROUP_ROWS", 9)
    names = ["zeta", "alpha", "mid/b", "mid/a", "sparse"]
    values = {name: [float(10 * i + s) for s in range(4)] for i, name in enumerate(names)}
    values["sparse"] = [None, 1.5, None, 2.5]
    export_run(tmp_path, make_run(), [batch([0, 1, 2, 3], values)])
    [path] = [p for p in visible_files(tmp_path) if p.startswith("metrics/")]
    pf = pq.ParquetFile(tmp_path / path)
    ranges = []
    for i in range(pf.metadata.num_row_groups):
        key_chunk = pf.metadata.row_group(i).column(1)
        assert key_chunk.has_column_index and key_chunk.has_offset_index
        ranges.append((key_chunk.statistics.min, key_chunk.statistics.max, pf.metadata.row_group(i).num_rows))
    # 4 rows per dense key, 2 for sparse: at most 9 rows per group, never a key split.
    assert ranges == [("alpha", "mid/a", 8), ("mid/b", "sparse", 6), ("zeta", "zeta", 4)]
    rows = pf.read().to_pylist()
    assert [(r["key"], r["step"]) for r in rows] == sorted((r["key"], r["step"]) for r in rows)
    assert query(tmp_path, "SELECT key, step, value FROM metrics WHERE key = 'sparse' ORDER BY step") == [
        ("sparse", 1, 1.5), ("sparse", 3, 2.5)]
    assert query(tmp_path, "SELECT count(*) FROM metrics") == [(18,)]


def test_metrics_pages_are_bounded_in_rows_and_indexed(tmp_path):
    import duckdb

    n = 3 * long_form_module.METRICS_PAGE_ROWS
    steps = list(range(n))
    export_run(tmp_path, make_run(), [batch(steps, {"b": [1.0] * n, "a": [float(s) for s in steps]})])
    [path] = [p for p in visible_files(tmp_path) if p.startswith("metrics/")]
    with duckdb.connect() as con:
        pages = con.execute("SELECT path_in_schema, first_row_index, num_rows, min_value, max_value "
                            "FROM parquet_page_index(?) WHERE path_in_schema = 'key' ORDER BY first_row_index",
                            [str(tmp_path / path)]).fetchall()
    size = long_form_module.METRICS_PAGE_ROWS
    # Six pages of the key column: three of "a" (sorted first), then three of "b".
    assert [(first, rows) for _, first, rows, _, _ in pages] == [(i * size, size) for i in range(6)]
    assert [(lo, hi) for *_, lo, hi in pages] == [("a", "a")] * 3 + [("b", "b")] * 3
    assert query(tmp_path, "SELECT key, count(*), sum(step) FROM metrics GROUP BY key ORDER BY key") == [
        ("a", n, sum(steps)), ("b", n, sum(steps))]
