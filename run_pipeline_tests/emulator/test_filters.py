"""W&B's MongoDB-style run filters and `order` strings (emulator/filters.py), evaluated over
tiny in-memory runs: which runs a filter selects, the order a listing comes back in, and the
errors a malformed filter gets."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from run_pipeline.emulator.filters import MISSING, FilterError, compare, matches, parse_order, sort_key


@dataclass
class Run:
    """A run as filters.py sees one: `.column(camelCaseName)`, `.config`, `.summary`."""

    name: str
    columns: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def storage_id(self) -> str:
        return f"sid-{self.name}"

    def column(self, col: str) -> Any:
        if col == "name":
            return self.name
        if col == "tags":
            return self.columns.get("tags", [])
        return self.columns.get(col, MISSING)


RUNS = [
    Run("a1", {"state": "finished", "displayName": "quiet-river-1", "createdAt": "2026-11-01T10:00:00Z",
               "heartbeatAt": "2026-11-01T11:00:00Z", "group": "sweep-1", "jobType": "train",
               "tags": ["baseline", "prod"], "username": "ada"},
        config={"lr": 0.01, "batch_size": 32, "optimizer": {"name": "adam", "betas": [0.9, 0.999]}, "model": "resnet"},
        summary={"train/loss": 0.5, "eval/acc": 0.8, "best.acc": 0.81, "nested": {"val": 3}}),
    Run("b2", {"state": "running", "displayName": "misty-comet-2", "createdAt": "2026-11-02T10:00:00",
               "heartbeatAt": "2026-11-03T09:00:00", "group": "sweep-1", "jobType": "eval",
               "tags": ["sweep"], "username": "alan"},
        config={"lr": 0.001, "batch_size": 64, "optimizer": {"name": "sgd"}, "model": "vit"},
        summary={"train/loss": 0.2, "nested": {"val": 7}}),
    Run("c3", {"state": "crashed", "displayName": "golden-harbor-3", "createdAt": "2026-11-03T10:00:00+00:00",
               "heartbeatAt": "2026-11-03T10:30:00Z", "group": None, "tags": [], "username": "ada"},
        config={"lr": 0.1, "batch_size": 32, "optimizer": {"name": "adam"}},
        summary={"train/loss": 0.9, "eval/acc": 0.4, "best.acc": 0.5}),
    Run("d4", {"state": "failed", "createdAt": "2026-11-04T10:00:00Z"},
        config={"lr": 0.01}, summary={}),
]


def select(flt: Any, runs: list[Run] = RUNS) -> list[str]:
    return [r.name for r in runs if matches(r, flt)]


def ordered(order: str | None, runs: list[Run] = RUNS) -> list[str]:
    """Runs in listing order, the way the store sorts them (value, then storage id)."""
    path, desc = parse_order(order)
    keyed = [((sort_key(r, path), r.storage_id), r) for r in runs]
    keyed.sort(key=functools.cmp_to_key(lambda a, b: compare(a[0], b[0], desc)))
    return [r.name for _, r in keyed]


# -- empty filters ----------------------------------------------------------------------------
@pytest.mark.parametrize("flt", [None, {}])
def test_empty_filter_selects_every_run(flt):
    assert select(flt) == ["a1", "b2", "c3", "d4"]


# -- comparison operators over run columns ------------------------------------------------------
@pytest.mark.parametrize("flt, expected", [
    ({"state": "finished"}, ["a1"]),
    ({"state": {"$eq": "running"}}, ["b2"]),
    ({"state": {"$ne": "finished"}}, ["b2", "c3", "d4"]),
    ({"state": {"$in": ["crashed", "failed"]}}, ["c3", "d4"]),
    ({"state": {"$nin": ["crashed", "failed"]}}, ["a1", "b2"]),
    ({"state": {"$regex": "^(fin|run)"}}, ["a1", "b2"]),
    ({"state": {"$in": []}}, []),
    ({"name": "c3"}, ["c3"]),
    ({"name": {"$in": ["a1", "d4", "zz"]}}, ["a1", "d4"]),
    ({"name": {"$gt": "b2"}}, ["c3", "d4"]),
    ({"name": {"$gte": "b2", "$lt": "d4"}}, ["b2", "c3"]),
    ({"name": {"$lte": "b2"}}, ["a1", "b2"]),
    ({"group": "sweep-1"}, ["a1", "b2"]),
    ({"group": {"$ne": "sweep-1"}}, ["c3", "d4"]),
    ({"jobType": "train"}, ["a1"]),
    ({"job_type": {"$in": ["train", "eval"]}}, ["a1", "b2"]),
    ({"username": "ada"}, ["a1", "c3"]),
    ({"username": {"$regex": "^al"}}, ["b2"]),
])
def test_column_operators(flt, expected):
    assert select(flt) == expected


@pytest.mark.parametrize("key", ["displayName", "display_name"])
def test_display_name_in_either_case(key):
    assert select({key: "misty-comet-2"}) == ["b2"]
    assert select({key: {"$regex": "-[13]$"}}) == ["a1", "c3"]
    assert select({key: {"$exists": False}}) == ["d4"]


def test_regex_searches_anywhere_unless_anchored():
    assert select({"display_name": {"$regex": "comet"}}) == ["b2"]
    assert select({"display_name": {"$regex": "^comet"}}) == []


def test_exists():
    assert select({"jobType": {"$exists": True}}) == ["a1", "b2"]
    assert select({"jobType": {"$exists": False}}) == ["c3", "d4"]
    assert select({"username": {"$exists": True}}) == ["a1", "b2", "c3"]


def test_null_and_missing_equal_none():
    # c3 stores group: null, d4 has no group at all: both equal None, neither exists.
    assert select({"group": None}) == ["c3", "d4"]
    assert select({"group": {"$eq": None}}) == ["c3", "d4"]
    assert select({"group": {"$ne": None}}) == ["a1", "b2"]
    assert select({"group": {"$exists": True}}) == ["a1", "b2"]


def test_ordering_operators_never_match_missing_or_other_types():
    assert select({"jobType": {"$gt": ""}}) == ["a1", "b2"]
    assert select({"config.lr": {"$gt": "0"}}) == []
    assert select({"summary_metrics.eval/acc": {"$lt": 1}}) == ["a1", "c3"]


# -- logical operators --------------------------------------------------------------------------
def test_and_or_nor():
    assert select({"$and": [{"state": {"$ne": "failed"}}, {"username": "ada"}]}) == ["a1", "c3"]
    assert select({"$or": [{"state": "running"}, {"tags": "prod"}]}) == ["a1", "b2"]
    assert select({"$nor": [{"state": "running"}, {"tags": "prod"}]}) == ["c3", "d4"]
    assert select({"$and": [{"$or": [{"jobType": "eval"}, {"group": None}]}, {"$nor": [{"state": "failed"}]}]}) == ["b2", "c3"]


def test_sibling_keys_are_anded():
    assert select({"state": {"$in": ["finished", "crashed"]}, "username": "ada", "config.lr": 0.1}) == ["c3"]


def test_empty_logical_lists():
    assert select({"$and": []}) == ["a1", "b2", "c3", "d4"]
    assert select({"$or": []}) == []
    assert select({"$nor": []}) == ["a1", "b2", "c3", "d4"]


# -- dates: ISO strings compared as instants, with or without 'Z' ---------------------------
@pytest.mark.parametrize("bound", ["2026-11-02T10:00:00Z", "2026-11-02T10:00:00", "2026-11-02T10:00:00+00:00",
                                   "2026-11-02T11:00:00+01:00", "2026-11-02T10:00:00.000Z"])
def test_created_at_compares_instants(bound):
    assert select({"createdAt": {"$gte": bound}}) == ["b2", "c3", "d4"]
    assert select({"createdAt": {"$gt": bound}}) == ["c3", "d4"]
    assert select({"created_at": {"$lt": bound}}) == ["a1"]
    assert select({"createdAt": bound}) == ["b2"]


def test_heartbeat_at_window():
    flt = {"heartbeat_at": {"$gt": "2026-11-03T09:00:00Z", "$lte": "2026-11-03T10:30:00"}}
    assert select(flt) == ["c3"]
    assert select({"heartbeatAt": {"$lt": "2026-11-03T09:00:01Z"}}) == ["a1", "b2"]


def test_dates_in_and_nin_compare_instants():
    assert select({"createdAt": {"$in": ["2026-11-01T10:00:00", "2026-11-03T10:00:00Z"]}}) == ["a1", "c3"]
    assert select({"createdAt": {"$nin": ["2026-11-01T10:00:00"]}}) == ["b2", "c3", "d4"]


# -- tags: contains, any-of, none-of -----------------------------------------------------------
def test_tags():
    assert select({"tags": "prod"}) == ["a1"]
    assert select({"tags": {"$eq": "sweep"}}) == ["b2"]
    assert select({"tags": {"$in": ["prod", "sweep"]}}) == ["a1", "b2"]
    assert select({"tags": {"$nin": ["prod", "sweep"]}}) == ["c3", "d4"]
    assert select({"tags": {"$ne": "prod"}}) == ["b2", "c3", "d4"]
    assert select({"tags": {"$regex": "^base"}}) == ["a1"]
    assert select({"tags": ["baseline", "prod"]}) == ["a1"]
    assert select({"$and": [{"tags": "baseline"}, {"tags": "prod"}]}) == ["a1"]


# -- config.<key> -------------------------------------------------------------------------------
@pytest.mark.parametrize("flt, expected", [
    ({"config.lr": 0.01}, ["a1", "d4"]),
    ({"config.lr.value": 0.01}, ["a1", "d4"]),
    ({"config.lr": {"$gt": 0.005}}, ["a1", "c3", "d4"]),
    ({"config.lr.value": {"$lte": 0.01}}, ["a1", "b2", "d4"]),
    ({"config.batch_size": {"$in": [64, 128]}}, ["b2"]),
    ({"config.batch_size": {"$nin": [32]}}, ["b2", "d4"]),
    ({"config.batch_size": 32.0}, ["a1", "c3"]),
    ({"config.optimizer.name": "adam"}, ["a1", "c3"]),
    ({"config.optimizer.name.value": "sgd"}, ["b2"]),
    ({"config.optimizer.betas": [0.9, 0.999]}, ["a1"]),
    ({"config.model": {"$exists": True}}, ["a1", "b2"]),
    ({"config.model.value": {"$exists": False}}, ["c3", "d4"]),
    ({"config.model": {"$regex": "^res"}}, ["a1"]),
    ({"config.nope": {"$exists": True}}, []),
])
def test_config_keys(flt, expected):
    assert select(flt) == expected


def test_config_key_with_a_dot_is_found_whole_before_nesting():
    runs = [Run("x", config={"a.b": 1, "a": {"b": 2}}), Run("y", config={"a": {"b": 1}})]
    assert select({"config.a.b": 1}, runs) == ["x", "y"]
    assert select({"config.a.b": 2}, runs) == []


# -- summary_metrics.<key> ----------------------------------------------------------------------
@pytest.mark.parametrize("flt, expected", [
    ({"summary_metrics.train/loss": {"$lt": 0.6}}, ["a1", "b2"]),
    ({"summary_metrics.train/loss": {"$gte": 0.5, "$lte": 0.9}}, ["a1", "c3"]),
    ({"summary_metrics.eval/acc": {"$exists": False}}, ["b2", "d4"]),
    ({"summary_metrics.best.acc": {"$gt": 0.6}}, ["a1"]),
    ({"summary_metrics.nested.val": {"$in": [7, 9]}}, ["b2"]),
    ({"summary_metrics.nested.val": {"$ne": 7}}, ["a1", "c3", "d4"]),
])
def test_summary_metric_keys(flt, expected):
    assert select(flt) == expected


def test_boolean_values_are_not_numbers():
    runs = [Run("t", summary={"flag": True}), Run("one", summary={"flag": 1}), Run("f", summary={"flag": False})]
    assert select({"summary_metrics.flag": True}, runs) == ["t"]
    assert select({"summary_metrics.flag": 1}, runs) == ["one"]
    assert select({"summary_metrics.flag": {"$in": [False]}}, runs) == ["f"]


# -- malformed filters name the place ------------------------------------------------------------
@pytest.mark.parametrize("flt, message", [
    ([{"state": "finished"}], "filters must be a JSON object, got list"),
    ("state", "filters must be a JSON object, got str"),
    ({"state": {"$bogus": 1}}, "unknown operator '$bogus' at filters.state"),
    ({"$xor": []}, "unknown operator '$xor' at filters"),
    ({"$and": {"state": "finished"}}, "$and at filters needs a list"),
    ({"$or": "x"}, "$or at filters needs a list"),
    ({"$nor": None}, "$nor at filters needs a list"),
    ({"state": {"$in": "finished"}}, "$in at filters.state needs a list, got str"),
    ({"tags": {"$nin": "prod"}}, "$nin at filters.tags needs a list, got str"),
    ({"name": {"$regex": 5}}, "$regex at filters.name needs a string"),
    ({"name": {"$regex": "(unclosed"}}, "bad $regex '(unclosed' at filters.name"),
    ({"$and": [{"state": "finished"}, {"$or": [{"name": {"$in": 3}}]}]}, "$in at filters.$and[1].$or[0].name needs a list"),
    ({"$or": [{"state": "finished"}, "oops"]}, "filters.$or[1] must be a JSON object, got str"),
])
def test_malformed_filter_raises_naming_the_place(flt, message):
    # Every run is tried, so a clause that a short-circuit would skip for one run is reached by another.
    with pytest.raises(FilterError) as exc:
        select(flt)
    assert message in str(exc.value)


@pytest.mark.parametrize("flt, message", [
    ({"state": "nope", "tags": {"$in": "prod"}}, "$in at filters.tags needs a list"),
    ({"$and": [{"state": "nope"}, {"name": {"$bogus": 1}}]}, "unknown operator '$bogus' at filters.$and[1].name"),
    ({"$or": [{"state": {"$ne": "nope"}}, {"name": {"$regex": "("}}]}, "bad $regex '(' at filters.$or[1].name"),
])
def test_malformed_filter_raises_whatever_the_data(flt, message):
    """A malformed clause is an error even when earlier clauses already decide the answer:
    otherwise a bad filter silently lists nothing (or everything) depending on the runs."""
    with pytest.raises(FilterError) as exc:
        matches(RUNS[0], flt)
    assert message in str(exc.value)


# -- order -------------------------------------------------------------------------------------
@pytest.mark.parametrize("order, expected", [
    (None, ("created_at", False)),
    ("", ("created_at", False)),
    ("+created_at", ("created_at", False)),
    ("-created_at", ("created_at", True)),
    ("created_at", ("created_at", False)),
    ("  -heartbeat_at ", ("heartbeat_at", True)),
    ("+config.lr.value", ("config.lr.value", False)),
    ("-summary_metrics.train/loss", ("summary_metrics.train/loss", True)),
])
def test_parse_order(order, expected):
    assert parse_order(order) == expected


@pytest.mark.parametrize("order", ["+", "-"])
def test_order_without_a_field_is_an_error(order):
    with pytest.raises(FilterError, match="names no field"):
        parse_order(order)


def test_order_by_created_at_mixes_z_and_naive_timestamps_chronologically():
    assert ordered("+created_at") == ["a1", "b2", "c3", "d4"]
    assert ordered("-created_at") == ["d4", "c3", "b2", "a1"]
    assert ordered("-createdAt") == ["d4", "c3", "b2", "a1"]
    assert ordered(None) == ["a1", "b2", "c3", "d4"]


def test_order_by_heartbeat_missing_last():
    # d4 has no heartbeat: it comes last ascending and descending.
    assert ordered("+heartbeat_at") == ["a1", "b2", "c3", "d4"]
    assert ordered("-heartbeat_at") == ["c3", "b2", "a1", "d4"]


def test_order_by_config_value_ties_broken_by_storage_id():
    # lr: a1 0.01, b2 0.001, c3 0.1, d4 0.01 → a1 and d4 tie; storage id decides in both directions.
    assert ordered("+config.lr.value") == ["b2", "a1", "d4", "c3"]
    assert ordered("-config.lr.value") == ["c3", "a1", "d4", "b2"]
    assert ordered("+config.lr") == ["b2", "a1", "d4", "c3"]


def test_order_by_nested_config_missing_last_in_both_directions():
    assert ordered("+config.optimizer.name.value") == ["a1", "c3", "b2", "d4"]
    assert ordered("-config.optimizer.name.value") == ["b2", "a1", "c3", "d4"]


def test_order_by_summary_metric_with_slash_missing_last_in_both_directions():
    assert ordered("+summary_metrics.train/loss") == ["b2", "a1", "c3", "d4"]
    assert ordered("-summary_metrics.train/loss") == ["c3", "a1", "b2", "d4"]
    assert ordered("+summary_metrics.best.acc") == ["c3", "a1", "b2", "d4"]
    assert ordered("-summary_metrics.best.acc") == ["a1", "c3", "b2", "d4"]


def test_order_is_the_same_whatever_the_input_order():
    assert ordered("-config.lr.value", RUNS[::-1]) == ordered("-config.lr.value", RUNS)
    assert ordered("+summary_metrics.train/loss", RUNS[::-1]) == ordered("+summary_metrics.train/loss", RUNS)


def test_order_with_nan_and_infinity_is_total_and_deterministic():
    """NaN compares unequal to itself: the order (and the cursors built on it) must still be a
    total order, the same for any input order, with NaN neither among nor between the numbers."""
    runs = [Run("n1", summary={"loss": math.nan}), Run("p", summary={"loss": math.inf}),
            Run("m", summary={"loss": -math.inf}), Run("n2", summary={"loss": math.nan}),
            Run("z", summary={"loss": 0.5}), Run("none")]
    up = ordered("+summary_metrics.loss", runs)
    down = ordered("-summary_metrics.loss", runs)
    for perm in (runs[::-1], runs[2:] + runs[:2], runs[1::2] + runs[::2]):
        assert ordered("+summary_metrics.loss", perm) == up
        assert ordered("-summary_metrics.loss", perm) == down
    assert up[:3] == ["m", "z", "p"] and down[:3] == ["p", "z", "m"]
    assert set(up[3:]) == set(down[3:]) == {"n1", "n2", "none"}


def test_order_across_value_types_groups_types():
    runs = [Run("s", summary={"v": "abc"}), Run("n", summary={"v": 2}), Run("b", summary={"v": True}),
            Run("n0", summary={"v": 1.5}), Run("x")]
    up = ordered("+summary_metrics.v", runs)
    assert up == ["n0", "n", "s", "b", "x"]
    assert ordered("-summary_metrics.v", runs) == ["b", "s", "n", "n0", "x"]
