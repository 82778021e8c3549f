"""The DuckDB catalog: views on an empty warehouse, refresh idempotence, new runs and keys
appearing without a refresh, and the README's example queries on a small warehouse."""

from __future__ import annotations

import math
import statistics

import duckdb
import pyarrow as pa
import pytest

from run_pipeline.warehouse import EXAMPLES, TABLES, export_run, refresh_catalog, view_statements
from run_pipeline.warehouse.catalog import EMPTY_COLUMNS

from .helpers import batch, columns, make_run, query


def test_empty_warehouse_has_every_view(tmp_path):
    info = refresh_catalog(tmp_path)
    assert info["runs"] == 0 and info["empty_tables"] == ", ".join(TABLES)
    for table in TABLES:
        assert query(tmp_path, f"SELECT count(*) FROM {table}", catalog=True) == [(0,)]
        assert columns(tmp_path, table, catalog=True) == dict(EMPTY_COLUMNS[table])


def test_refresh_is_idempotent_and_new_runs_and_keys_need_no_refresh(tmp_path):
    export_run(tmp_path, make_run(run_id="a"), [batch([0], {"loss": [1.0]})])
    first = refresh_catalog(tmp_path)
    second = refresh_catalog(tmp_path)
    same = lambda info: {k: v for k, v in info.items() if k not in ("seconds", "catalog")}  # noqa: E731
    assert same(first) == same(second)
    assert first["runs"] == 1 and first["empty_tables"] == "system_metrics"
    # The views did not change, so the second refresh left the catalog as it was.
    assert (first["catalog"], second["catalog"]) == ("rebuilt", "unchanged")
    assert refresh_catalog(tmp_path, force=True)["catalog"] == "rebuilt"

    export_run(tmp_path, make_run(run_id="b"), [batch([0, 1], {"loss": [2.0, 3.0], "new/key": ["x", "y"]})])
    assert query(tmp_path, "SELECT run_id, count(*) FROM history GROUP BY ALL ORDER BY ALL", catalog=True) == [
        ("a", 1), ("b", 2)]
    assert query(tmp_path, 'SELECT "new/key" FROM history WHERE run_id = \'b\' ORDER BY _step', catalog=True) == [
        ("x",), ("y",)]
    assert query(tmp_path, "SELECT count(*) FROM runs", catalog=True) == [(2,)]


def test_keys_typed_differently_across_runs_stay_readable(tmp_path):
    export_run(tmp_path, make_run(run_id="a"), [batch([0], {"k": [1], "m": [1.5], "j": [True]})])
    export_run(tmp_path, make_run(run_id="b"), [batch([0], {"k": [2.5], "m": ["text"], "j": [7]})])
    types = columns(tmp_path, "history")
    assert (types["k"], types["m"], types["j"]) == ("DOUBLE", "VARCHAR", "BIGINT")
    assert query(tmp_path, "SELECT run_id, k, m FROM history ORDER BY run_id") == [("a", 1.0, "1.5"), ("b", 2.5, "text")]


def test_view_statements_create_the_same_views(tmp_path):
    export_run(tmp_path, make_run(), [batch([0], {"x": [1.0]})])
    con = duckdb.connect()
    for sql in view_statements(tmp_path):
        con.execute(sql)
    assert con.execute("SELECT entity, project, run_id, _step, x FROM history").fetchall() == [
        ("team", "proj", "run1", 0, 1.0)]
    assert con.execute("SELECT count(*) FROM system_metrics").fetchall() == [(0,)]


# ---------------------------------------------------------------------------------------------
# The README's example questions on a small synthetic warehouse

RUNS = {
    ("vision", "r1"): ({"optimizer": {"name": "adam", "lr": 0.1}, "seed": 1}, {"accuracy": 0.80}),
    ("vision", "r2"): ({"optimizer": {"name": "adam", "lr": 0.01}, "seed": 1}, {"accuracy": 0.90}),
    ("vision", "r3"): ({"optimizer": {"name": "sgd", "lr": 0.01}, "seed": 1, "batch": 64}, {"accuracy": math.nan}),
    ("nlp", "n1"): ({"optimizer": {"name": "adam", "lr": 0.1}, "seed": 1}, {"accuracy": 0.70}),
    ("nlp", "n2"): ({"optimizer": {"name": "adam", "lr": 0.1}, "seed": 2}, {"accuracy": 0.75}),
}
STEPS = 100


def loss(run_index: int, step: int) -> float:
    return 1.0 / (1 + step) + run_index / 10


@pytest.fixture(scope="module")
def example_warehouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    for i, ((project, run_id), (config, summary)) in enumerate(RUNS.items()):
        steps = list(range(STEPS))
        batches = [batch(steps[:50], {"loss": [loss(i, s) for s in steps[:50]]}),
                   batch(steps[50:], {"loss": [loss(i, s) for s in steps[50:]], "note": ["x"] * 50})]
        run = make_run("team", project, run_id, config=config, summary=summary,
                       history_line_count=STEPS, last_step=STEPS - 1)
        export_run(root, run, batches)
    refresh_catalog(root)
    return root


def run_example(root, name: str, **params):
    _, sql = EXAMPLES[name]
    return query(root, sql, params, catalog=True)


def test_best_run_per_project(example_warehouse):
    assert run_example(example_warehouse, "best_run_per_project", metric="accuracy", maximize=True) == [
        ("team", "nlp", "n2", "name-n2", 0.75), ("team", "vision", "r2", "name-r2", 0.90)]
    assert run_example(example_warehouse, "best_run_per_project", metric="accuracy", maximize=False) == [
        ("team", "nlp", "n1", "name-n1", 0.70), ("team", "vision", "r1", "name-r1", 0.80)]


def test_metric_curve(example_warehouse):
    curve = run_example(example_warehouse, "metric_curve", entity="team", project="vision", run_id="r2", metric="loss")
    assert curve == [(s, loss(1, s)) for s in range(STEPS)]


def test_mean_over_last_10_percent(example_warehouse):
    got = run_example(example_warehouse, "mean_over_last_10_percent", metric="loss")
    tail = [s for s in range(STEPS) if s >= (STEPS - 1) - (STEPS - 1) * 0.1]
    assert tail == list(range(90, 100))
    expected = sorted(("team", p, r, statistics.fmean(loss(i, s) for s in tail), len(tail))
                      for i, (p, r) in enumerate(RUNS))
    assert [row[:3] for row in got] == [row[:3] for row in expected]
    for row, want in zip(got, expected):
        assert row[3] == pytest.approx(want[3]) and row[4] == want[4]


def test_config_differences(example_warehouse):
    one = run_example(example_warehouse, "config_differences", max_keys=1)
    assert [row[1:] for row in one] == [
        ("nlp", "n1", "n2", 1, "seed 1 -> 2"),
        ("vision", "r1", "r2", 1, "optimizer.lr 0.1 -> 0.01"),
    ]
    # r3 has a key the others lack: it counts as a difference.
    three = run_example(example_warehouse, "config_differences", max_keys=3)
    assert ("vision", "r2", "r3", 2, "batch (unset) -> 64; optimizer.name \"adam\" -> \"sgd\"") in [row[1:] for row in three]


def test_refresh_does_not_wait_for_open_readers(tmp_path):
    refresh_catalog(tmp_path)
    reader = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        assert reader.execute("SELECT count(*) FROM history").fetchall() == [(0,)]
        export_run(tmp_path, make_run(), [batch([0], {"x": [1.0]})])
        assert refresh_catalog(tmp_path)["runs"] == 1  # the old file stays readable meanwhile
        assert reader.execute("SELECT count(*) FROM runs").fetchall() == [(0,)]
    finally:
        reader.close()
    assert query(tmp_path, "SELECT count(*) FROM history", catalog=True) == [(1,)]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("warehouse")) == ["warehouse.duckdb"]


def test_refresh_rebuilds_when_a_table_gets_its_first_file_or_the_catalog_changed(tmp_path):
    export_run(tmp_path, make_run(run_id="a"), [batch([0], {"loss": [1.0]})])
    assert refresh_catalog(tmp_path)["empty_tables"] == "system_metrics"
    export_run(tmp_path, make_run(run_id="b"), [batch([0], {"loss": [2.0]})])
    assert refresh_catalog(tmp_path)["catalog"] == "unchanged"  # new runs: the globs see them
    assert query(tmp_path, "SELECT count(*) FROM runs", catalog=True) == [(2,)]
    # system_metrics gets its first file: its placeholder view must become a real one.
    system = pa.RecordBatch.from_pydict({"_timestamp": [1.0], "_runtime": [0.5], "system.cpu": [5.0]})
    export_run(tmp_path, make_run(run_id="c"), None, [system])
    info = refresh_catalog(tmp_path)
    assert (info["catalog"], info["empty_tables"]) == ("rebuilt", "")
    assert query(tmp_path, 'SELECT run_id, "system.cpu" FROM system_metrics', catalog=True) == [("c", 5.0)]
    # A catalog replaced behind the refresh's back (another writer, a restore) is rebuilt.
    catalog = tmp_path / "warehouse.duckdb"
    catalog.unlink()
    duckdb.connect(str(catalog)).close()
    info = refresh_catalog(tmp_path)
    assert info["catalog"] == "rebuilt" and info["runs"] == 3
    assert query(tmp_path, "SELECT count(*) FROM history", catalog=True) == [(2,)]


def test_an_open_connection_sees_a_run_replaced_under_the_same_file_name(tmp_path):
    """`connect()` caches Parquet footers; a run deleted and exported again at once gets the
    same part name with other content, and the open connection must read the new file."""
    from run_pipeline.warehouse import RunKey, Warehouse

    wh = Warehouse(tmp_path)
    wh.export_run(make_run(), [batch([0, 1, 2], {"x": [1.0, 2.0, 3.0]})])
    wh.refresh_catalog()
    with wh.connect() as con:
        assert con.execute("SELECT step, value FROM metrics ORDER BY step").fetchall() == [
            (0, 1.0), (1, 2.0), (2, 3.0)]
        before = sorted(p.name for p in (tmp_path / "metrics").rglob("*.parquet"))
        wh.delete_run(RunKey("team", "proj", make_run()["run_id"]))
        wh.export_run(make_run(), [batch([0, 1, 2, 3], {"x": [10.0, 20.0, 30.0, 40.0], "y": [5.0] * 4})])
        assert sorted(p.name for p in (tmp_path / "metrics").rglob("*.parquet")) == before
        assert con.execute("SELECT key, count(*), sum(value) FROM metrics GROUP BY key ORDER BY key").fetchall() == [
            ("x", 4, 100.0), ("y", 4, 20.0)]
