"""Pure functions: partition encoding, root parsing, the type lattice, column naming."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pytest

from run_pipeline.warehouse import WarehousePathError, WarehouseRoot, decode_partition_value, encode_partition_value
from run_pipeline.warehouse.layout import RunKey
from run_pipeline.warehouse.schema import (
    DOUBLE,
    INT,
    JSON,
    NULL,
    STRING,
    ColumnNamer,
    canonical_json,
    classify,
    join_types,
    json_text,
)

VALUES = ["../x", "..", ".", "a/b", "a=b", "50%", "a'; DROP TABLE runs; --", "ünï code ✓", "tab\there",
          "__HIVE_DEFAULT_PARTITION__", "", "C:\\x", "new\nline", "+plus", "?q#f"]


@pytest.mark.parametrize("value", VALUES)
def test_partition_values_round_trip_and_stay_one_component(value):
    encoded = encode_partition_value(value)
    assert decode_partition_value(encoded) == value
    assert "/" not in encoded and "\\" not in encoded and "=" not in encoded and "'" not in encoded
    assert encoded != "__HIVE_DEFAULT_PARTITION__"


def test_run_paths_stay_under_the_root(tmp_path):
    root = WarehouseRoot.parse(tmp_path / "wh")
    for value in VALUES:
        path = root.run_dir("history", RunKey(value, value, value))
        assert path.startswith(root.base + "/history/entity=")
        assert path.count("/") == root.base.count("/") + 4


def test_overlong_partition_values_are_refused():
    with pytest.raises(WarehousePathError):
        RunKey("e", "p" * 300, "r").components()


def test_unsafe_components_are_refused(tmp_path):
    root = WarehouseRoot.parse(tmp_path)
    for bad in ("..", ".", "a/b", ""):
        with pytest.raises(WarehousePathError):
            root.path("history", bad)


def test_root_parsing(tmp_path):
    local = WarehouseRoot.parse(str(tmp_path) + "/")
    assert local.is_local and local.uri == str(tmp_path)
    with pytest.raises(WarehousePathError):
        WarehouseRoot.parse(str(tmp_path / "a*b"))


def test_type_lattice():
    assert join_types(INT, INT) == INT
    assert join_types(INT, DOUBLE) == join_types(DOUBLE, INT) == DOUBLE
    assert join_types(NULL, STRING) == STRING
    assert join_types(INT, STRING) == JSON and join_types(DOUBLE, "bool") == JSON
    assert join_types(JSON, INT) == JSON


def test_classify_client_columns():
    json_field = pa.field("j", pa.string(), metadata={b"run_pipeline.json": b"1"})
    assert classify(json_field, pa.array(['{"a":  1}', None]))[1].to_pylist() == ['{"a":1}', None]
    assert classify(pa.field("u", pa.uint64()), pa.array([2**64 - 1], pa.uint64()))[0] == JSON
    assert classify(pa.field("f", pa.float32()), pa.array([1.5], pa.float32()))[0] == DOUBLE
    assert classify(pa.field("n", pa.float64()), pa.array([None, None], pa.float64()))[0] == NULL
    assert classify(pa.field("l", pa.list_(pa.int64())), pa.array([[1, 2]]))[1].to_pylist() == ["[1,2]"]


def test_json_text_is_valid_json():
    text = json_text({"a": math.nan, "b": [math.inf, -math.inf], "c": 2**80, "d": "ü"})
    assert json.loads(text) == {"a": "NaN", "b": ["Infinity", "-Infinity"], "c": 2**80, "d": "ü"}
    assert canonical_json("not json") == '"not json"'
    assert canonical_json("NaN") == '"NaN"'


def test_column_namer_is_stable_and_case_safe():
    namer = ColumnNamer(("entity", "project", "run_id", "_step"))
    assert [namer.physical(k) for k in ["loss", "Loss", "LOSS", "", "Entity", "loss (2)", "Loss"]] == [
        "loss", "Loss (2)", "LOSS (3)", "(empty key)", "Entity (2)", "loss (2) (2)", "Loss (2)"]
    again = ColumnNamer(("entity", "project", "run_id", "_step"), list(namer.columns.items()))
    assert again.physical("lOsS") == "lOsS (4)"
