"""The long form of a history slice (`metrics` rows) for narrow and wide slices: every numeric
value once, as (step, key, value), sorted by key then row, in row groups that split no key."""

from __future__ import annotations

import itertools
import math
import random

import pyarrow as pa
import pytest

from run_pipeline.warehouse import long_form
from run_pipeline.warehouse.schema import DOUBLE, INT, JSON, STEP, STRING


def _slice(rows: int, keys: int, density: float, seed: int = 0):
    rng = random.Random(seed)
    steps = sorted(rng.randrange(rows * 2) for _ in range(rows))  # repeated steps too
    columns, types, logged = {STEP: pa.array(steps, pa.int64())}, {}, {}
    for k in range(keys):
        name = f"c{k}"
        logged[name] = f"key/{rng.randrange(10**6):06d}/{k}"  # physical names differ from keys
        kind = k % 4
        if kind == 0:
            values = [rng.choice([rng.random(), math.nan, math.inf]) if rng.random() < density else None
                      for _ in range(rows)]
            columns[name], types[name] = pa.array(values, pa.float64()), DOUBLE
        elif kind == 1:
            values = [rng.randrange(-2**62, 2**62) if rng.random() < density else None for _ in range(rows)]
            columns[name], types[name] = pa.array(values, pa.int64()), INT
        elif kind == 2:
            columns[name], types[name] = pa.array([0.5] * rows, pa.float64()), DOUBLE  # dense
        else:
            columns[name], types[name] = pa.array(["x"] * rows, pa.string()), STRING
    columns["empty"], types["empty"] = pa.nulls(rows, pa.float64()), DOUBLE
    columns["j"], types["j"] = pa.array(["{}"] * rows), JSON
    return pa.table(columns), types, logged


def _expected(table, types, logged):
    steps = table.column(STEP).to_pylist()
    out = []
    for name in sorted((n for n, t in types.items() if t in (INT, DOUBLE)), key=lambda n: logged.get(n, n)):
        for step, value in zip(steps, table.column(name).to_pylist()):
            if value is not None:
                out.append((step, logged.get(name, name), float(value)))
    return out


@pytest.mark.parametrize("rows,keys,density,limit", [
    (300, 12, 0.9, 128 * 1024),   # narrow
    (300, 12, 0.9, 500),          # narrow, row groups split between keys
    (200, 800, 0.03, 128 * 1024),  # wide
    (200, 800, 0.03, 7),          # wide, one key alone beyond the limit
])
def test_long_form_holds_every_numeric_value_once_by_key_then_row(rows, keys, density, limit, monkeypatch):
    monkeypatch.setattr(long_form, "METRICS_ROW_GROUP_ROWS", limit)
    table, types, logged = _slice(rows, keys, density)
    tables = list(long_form.long_form(table.column(STEP), dict(zip(table.column_names, table.columns)),
                                   types, logged))
    got = [(s, k, v) for t in tables for s, k, v in zip(t.column("step").to_pylist(),
                                                         t.column("key").to_pylist(),
                                                         t.column("value").to_pylist())]
    want = _expected(table, types, logged)
    assert len(got) == len(want)
    assert all(g[:2] == w[:2] and (g[2] == w[2] or (math.isnan(g[2]) and math.isnan(w[2])))
               for g, w in zip(got, want))
    keys_of = [set(t.column("key").to_pylist()) for t in tables]
    for t, ks in zip(tables, keys_of):
        assert t.schema.equals(long_form.METRICS_SCHEMA)
        assert len(t) <= limit or len(ks) == 1  # a key alone may exceed the limit
    for a, b in itertools.pairwise(keys_of):
        assert not a & b  # no key split across row groups
