"""Run metadata as rows: the JSON text of config and summary leaves."""

from __future__ import annotations

import math

import pytest

from run_pipeline.warehouse.records import key_value_table
from run_pipeline.warehouse.schema import KEY_VALUE_SCHEMA, _encode_json, json_text


class Str(str):
    pass


@pytest.mark.parametrize("value", [
    0.1, 1e-05, 1e300, -0.0, 3.0, math.nan, math.inf, -math.inf, 0, -7, 2**63, 2**70, True, False, None,
    "", "plain", 'quote " backslash \\ newline \n', "é ü 日本 \u2028 \x00", Str("sub"),
    [1, "a", None], {"b": 1}, {}, {"_type": "image-file"}, (1, 2),
])
def test_json_text_of_scalars_is_the_encoders_text(value):
    assert json_text(value) == _encode_json(value)


def test_key_value_rows():
    table = key_value_table({"a": {"b": 1, "c": "x"}, "n": math.nan, "t": True, "big": 2**70, "e": {}})
    assert table.schema == KEY_VALUE_SCHEMA
    rows = table.to_pylist()
    assert [r["key"] for r in rows] == ["a.b", "a.c", "n", "t", "big", "e"]
    assert [r["value"] for r in rows] == ["1", '"x"', '"NaN"', "true", str(2**70), "{}"]
    assert rows[0]["value_double"] == 1.0 and math.isnan(rows[2]["value_double"])
    assert [r["value_double"] for r in rows[3:]] == [None, float(2**70), None]
    assert [r["value_text"] for r in rows] == [None, "x", None, None, None, None]
    assert key_value_table(None).num_rows == 0 and key_value_table(None).schema == KEY_VALUE_SCHEMA
