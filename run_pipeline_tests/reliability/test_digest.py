"""The content digest the fault tests compare by: blind to row order, file layout and export
time; sensitive to a lost, duplicated or altered row, to one ulp of a float, to NaN versus NULL
and to a value's type."""

from __future__ import annotations

import math

import duckdb
import pytest

from run_pipeline.warehouse import TABLES
from run_pipeline.warehouse.layout import CATALOG_FILE

from .digest import explain_difference, warehouse_digest

BASE_ROWS = [("demo", "p", "r1", 0, 0.5, "a"), ("demo", "p", "r1", 1, float("nan"), None),
             ("demo", "p", "r2", 0, float("inf"), "b")]


def make_warehouse(root, history_rows, *, history_type: str = "DOUBLE", exported_at: str = "2026-01-01 00:00:00"):
    """A catalog holding every table: `history` with the given rows, the others one fixed row."""
    root.mkdir(parents=True)
    con = duckdb.connect(str(root / CATALOG_FILE))
    for table in TABLES:
        if table == "history":
            con.execute(f'CREATE TABLE history (entity VARCHAR, project VARCHAR, run_id VARCHAR, _step BIGINT, '
                        f'"train/loss" {history_type}, phase VARCHAR)')
            con.executemany("INSERT INTO history VALUES (?, ?, ?, ?, ?, ?)", history_rows)
        else:
            con.execute(f"CREATE TABLE {table} (entity VARCHAR, project VARCHAR, run_id VARCHAR, "
                        "exported_at TIMESTAMP)")
            con.execute(f"INSERT INTO {table} VALUES ('demo', 'p', 'r1', ?)", [exported_at])
    con.close()
    return root


def test_equal_content_in_another_order_and_export_time_gives_the_same_digest(tmp_path):
    a = make_warehouse(tmp_path / "a", BASE_ROWS)
    b = make_warehouse(tmp_path / "b", list(reversed(BASE_ROWS)), exported_at="2027-06-01 12:00:00")
    da = warehouse_digest(a)
    assert da == warehouse_digest(b)
    assert da["history"].rows == 3 and set(da) == set(TABLES)
    assert ("exported_at", "TIMESTAMP") not in da["runs"].columns
    assert explain_difference(a, b) == "no difference"


def _set_loss(rows, i, value):
    return [r[:4] + (value,) + r[5:] if n == i else r for n, r in enumerate(rows)]


CHANGES = {
    "a row lost": (BASE_ROWS[:-1], "DOUBLE"),
    "a row duplicated": (BASE_ROWS + BASE_ROWS[:1], "DOUBLE"),
    "one ulp off": (_set_loss(BASE_ROWS, 0, math.nextafter(0.5, 1.0)), "DOUBLE"),
    "NaN became NULL": (_set_loss(BASE_ROWS, 1, None), "DOUBLE"),
    "text changed": (BASE_ROWS[:2] + [BASE_ROWS[2][:5] + ("B",)], "DOUBLE"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_of_content_changes_the_digest(tmp_path, change):
    rows, column_type = CHANGES[change]
    base = make_warehouse(tmp_path / "base", BASE_ROWS)
    other = make_warehouse(tmp_path / "other", rows, history_type=column_type)
    assert warehouse_digest(base)["history"] != warehouse_digest(other)["history"]
    assert "history:" in explain_difference(base, other)


def test_the_same_numbers_in_another_type_change_the_digest(tmp_path):
    as_double = make_warehouse(tmp_path / "double", [_set_loss([r], 0, 1.0)[0] for r in BASE_ROWS])
    as_bigint = make_warehouse(tmp_path / "bigint", [_set_loss([r], 0, 1)[0] for r in BASE_ROWS], history_type="BIGINT")
    assert warehouse_digest(as_double)["history"] != warehouse_digest(as_bigint)["history"]


def test_a_missing_catalog_is_an_error_not_an_empty_digest(tmp_path):
    with pytest.raises(FileNotFoundError, match="no DuckDB catalog"):
        warehouse_digest(tmp_path)
