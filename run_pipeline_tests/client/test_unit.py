"""Pure parts of the client: path parsing, naming, URL derivation, credentials lookup,
batch typing, retry delays, rate-limit pacing, step-window paging, secret redaction."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from run_pipeline.client import (
    Api,
    WandbAuthError,
    batch_to_rows,
    is_json_field,
    parse_run_path,
)
from run_pipeline.client.api import api_key_from_netrc, app_url_from_base
from run_pipeline.client.artifacts import parse_artifact_path
from run_pipeline.client.attrs import parse_datetime, snake_to_camel
from run_pipeline.client.auth import ApiKeyAuth, Redactor, display_url
from run_pipeline.client.batches import (
    JSON_METADATA,
    normalize_batch,
    parse_rows,
    rows_to_batch,
    strings_to_batch,
)
from run_pipeline.client.codec import parse_json
from run_pipeline.client.retry import (
    RateLimitPacer,
    RetryPolicy,
    parse_retry_after,
    retry_delay,
)
from run_pipeline.client.windows import page_windows

KEY = "k" * 36 + "SEC1"


# -- paths and names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, expected",
    [
        ("ent/proj/abc123", ("ent", "proj", "abc123")),
        ("ent/proj/runs/abc123", ("ent", "proj", "abc123")),
        ("/ent/proj/runs/abc123/", ("ent", "proj", "abc123")),
        ("ent/proj:abc123", ("ent", "proj", "abc123")),
        ("proj/abc123", ("dflt", "proj", "abc123")),
        ("proj:abc123", ("dflt", "proj", "abc123")),
        ("abc123", ("dflt", "dproj", "abc123")),
    ],
)
def test_parse_run_path_forms(path, expected):
    assert parse_run_path(path, lambda: "dflt", "dproj") == expected


def test_parse_run_path_looks_up_default_entity_only_when_needed():
    def boom():
        raise AssertionError("default entity must not be looked up")

    assert parse_run_path("e/p/r", boom, None) == ("e", "p", "r")


@pytest.mark.parametrize("path", ["", "abc123", "a/b/c/d/e"])
def test_parse_run_path_rejects_incomplete(path):
    with pytest.raises(ValueError):
        parse_run_path(path, None, None)


def test_parse_artifact_path():
    assert parse_artifact_path("e/p/data:v1", None, None) == ("e", "p", "data:v1")
    assert parse_artifact_path("p/data", "e", None) == ("e", "p", "data:latest")
    assert parse_artifact_path("data:best", "e", "p") == ("e", "p", "data:best")
    with pytest.raises(ValueError):
        parse_artifact_path("data", None, None)


@pytest.mark.parametrize(
    "snake, camel",
    [("job_type", "jobType"), ("history_line_count", "historyLineCount"), ("name", "name"),
     ("sweep_name", "sweepName"), ("heartbeat_at", "heartbeatAt")],
)
def test_snake_to_camel(snake, camel):
    assert snake_to_camel(snake) == camel


@pytest.mark.parametrize(
    "base, app",
    [
        ("https://api.wandb.ai", "https://wandb.ai"),
        ("https://api.wandb.ai/", "https://wandb.ai"),
        ("https://api.wandb.test", "https://app.wandb.test"),
        ("https://api.example.com", "https://app.example.com"),
        ("http://127.0.0.1:18080", "http://127.0.0.1:18080"),
        ("https://wandb.corp.internal/prefix", "https://wandb.corp.internal/prefix"),
    ],
)
def test_app_url_from_base(base, app):
    assert app_url_from_base(base) == app


def test_parse_datetime_is_aware_utc():
    dt = parse_datetime("2024-01-02T03:04:05")
    assert dt == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert parse_datetime("2024-01-02T03:04:05Z").tzinfo == timezone.utc
    assert parse_datetime(None) is None


# -- credentials ------------------------------------------------------------------------------


def test_key_order_argument_env_netrc(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.example.com\n  login user\n  password NETRCKEY\n")
    netrc.chmod(0o600)
    base = "https://api.example.com"
    assert api_key_from_netrc(base, netrc) == "NETRCKEY"
    assert api_key_from_netrc("https://other.example.com", netrc) is None
    env = {"WANDB_API_KEY": "ENVKEY", "WANDB_BASE_URL": base}
    assert Api("ARGKEY", environ=env, netrc_path=netrc)._transport._auth._header.endswith(
        _basic("ARGKEY"))
    assert Api(environ=env, netrc_path=netrc)._transport._auth._header.endswith(_basic("ENVKEY"))
    api = Api(environ={"WANDB_BASE_URL": base}, netrc_path=netrc)
    assert api._transport._auth._header.endswith(_basic("NETRCKEY"))
    assert api.base_url == base
    assert api.app_url == "https://app.example.com"
    with pytest.raises(WandbAuthError):
        Api(environ={}, netrc_path=tmp_path / "missing")


def test_default_base_url_and_repr_hide_key():
    api = Api(KEY, environ={})
    assert api.base_url == "https://api.wandb.ai"
    assert api.app_url == "https://wandb.ai"
    for text in (repr(api), repr(api._transport), repr(api._transport._auth), str(vars(api))):
        assert KEY not in text


def _basic(key):
    import base64

    return base64.b64encode(f"api:{key}".encode()).decode()


def test_auth_only_for_urls_under_base():
    auth = ApiKeyAuth(KEY, "http://127.0.0.1:8080/prefix")
    assert auth.applies_to("http://127.0.0.1:8080/prefix/graphql")
    assert not auth.applies_to("http://127.0.0.1:8080/other/x")
    assert not auth.applies_to("http://127.0.0.1:9090/prefix/graphql")
    assert not auth.applies_to("https://127.0.0.1:8080/prefix/graphql")
    assert not auth.applies_to("http://storage.example.com/prefix/file?sig=1")


# -- secrets ------------------------------------------------------------------------------------


def test_redactor_scrubs_key_from_text_and_exception_chain():
    red = Redactor(KEY)
    assert KEY not in red.text(f"Authorization: api:{KEY}")
    assert _basic(KEY) not in red.text(f"Basic {_basic(KEY)}")
    inner = ValueError(f"inner {KEY}")
    try:
        try:
            raise inner
        except ValueError as exc:
            raise requests.ConnectionError(f"conn {KEY}", request=None) from exc
    except requests.ConnectionError as outer:
        red.exception(outer)
        assert KEY not in str(outer)
        assert KEY not in str(outer.__cause__)


def test_display_url_drops_query_and_userinfo():
    assert display_url("https://u:p@host:9/a/b?sig=SECRET") == "https://host:9/a/b"


# -- JSON -----------------------------------------------------------------------------------------


def test_parse_json_accepts_nan_and_huge_ints():
    value = parse_json(b'{"a": NaN, "b": Infinity, "c": -Infinity, "d": 123456789012345678901234}')
    assert math.isnan(value["a"]) and value["b"] == math.inf and value["c"] == -math.inf
    assert value["d"] == 123456789012345678901234


@pytest.mark.parametrize("number", [2**64 + 1, -(2**63) - 1, 10**30, -(10**40), 2**63, 2**64 - 1])
def test_integers_beyond_64_bits_are_exact_without_a_non_finite_token(number):
    # orjson parses these as rounded floats instead of failing: nothing must reach it.
    text = f'{{"v": {number}, "w": [{number}], "x": 0.5}}'
    assert parse_json(text) == parse_json(text.encode()) == {"v": number, "w": [number], "x": 0.5}
    assert type(parse_json(text)["v"]) is int
    assert parse_rows([text, '{"v": 1}']) == [{"v": number, "w": [number], "x": 0.5}, {"v": 1}]


# -- retry policy -------------------------------------------------------------------------------


def test_retry_delay_exponential_with_bounded_jitter_and_cap():
    policy = RetryPolicy(backoff_base=1.0, backoff_cap=60.0, jitter=0.25)
    assert retry_delay(0, policy, rand=lambda: 0.0) == 1.0
    assert retry_delay(3, policy, rand=lambda: 0.0) == 8.0
    assert retry_delay(3, policy, rand=lambda: 1.0) == 10.0
    assert retry_delay(20, policy, rand=lambda: 0.5) == 60.0
    assert retry_delay(5, policy, retry_after=1.5) == 1.5


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-1") is None
    now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(30.0)
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


def test_pacer_spreads_remaining_quota_until_reset():
    clock = [100.0]
    pacer = RateLimitPacer(clock=lambda: clock[0])
    assert pacer.wait_time() == 0.0
    pacer.observe({"RateLimit-Remaining": "4", "RateLimit-Reset": "2"})
    assert pacer.wait_time() == pytest.approx(0.5)
    pacer.observe({"RateLimit-Remaining": "0", "RateLimit-Reset": "3"})
    assert pacer.wait_time() == pytest.approx(3.0)
    clock[0] += 5
    assert pacer.wait_time() == 0.0
    pacer.observe({"RateLimit-Remaining": "x"})
    assert pacer.wait_time() == 0.0


# -- batch typing ---------------------------------------------------------------------------------


def _types(batch):
    return {f.name: f.type for f in batch.schema}


def test_rows_to_batch_types_by_contract():
    rows = [
        {"_step": 1, "i": 1, "f": 1.5, "n": 1, "b": True, "s": "x", "d": {"a": 1}, "m": 1,
         "big": 2**70, "l": [1, 2]},
        {"_step": 0, "i": 2, "f": float("nan"), "n": 2.5, "b": False, "s": "y", "m": "two"},
        {"_step": 2, "f": float("inf"), "n": float("-inf")},
    ]
    batch = rows_to_batch(rows)
    assert batch.schema.names[0] == "_step"
    assert batch.schema.names == ["_step", "i", "f", "n", "b", "s", "d", "m", "big", "l"]
    t = _types(batch)
    assert t["_step"] == pa.int64() and t["i"] == pa.int64()
    assert t["f"] == pa.float64() and t["n"] == pa.float64()
    assert t["b"] == pa.bool_() and t["s"] == pa.string()
    for name in ("d", "m", "big", "l"):
        assert t[name] == pa.string()
        assert is_json_field(batch.schema.field(name))
        assert batch.schema.field(name).metadata == JSON_METADATA
    for name in ("i", "f", "s"):
        assert not is_json_field(batch.schema.field(name))
    assert batch.column("_step").to_pylist() == [1, 0, 2]  # order kept, nothing sorted
    assert batch.column("i").to_pylist() == [1, 2, None]
    back = batch_to_rows(batch)
    assert back[0]["big"] == 2**70 and back[0]["d"] == {"a": 1} and back[1]["m"] == "two"
    assert math.isnan(back[1]["f"]) and back[2]["n"] == -math.inf


def test_int64_boundaries_and_large_ints_exact():
    batch = rows_to_batch([{"_step": 0, "a": 2**63 - 1, "b": 2**53 + 1, "c": 2**63}])
    assert _types(batch)["a"] == pa.int64() and batch.column("a")[0].as_py() == 2**63 - 1
    assert batch.column("b")[0].as_py() == 2**53 + 1
    assert is_json_field(batch.schema.field("c"))
    assert json.loads(batch.column("c")[0].as_py()) == 2**63


def test_duplicate_steps_kept_and_step_from_float():
    batch = rows_to_batch([{"_step": 3.0, "a": 1}, {"_step": 3, "a": 2}])
    assert batch.column("_step").type == pa.int64()
    assert batch.column("_step").to_pylist() == [3, 3]
    assert batch.num_rows == 2


PAGES = [
    ['{"_step":0,"a":1,"b":1.5}', '{"_step":1,"a":2,"c":"x"}'],
    ['{"_step":0,"a":NaN}', '{"_step":1,"a":Infinity,"z":-Infinity}'],
    ['{"_step":0,"a":1}', '{"_step":1,"a":true}'],
    ['{"_step":0,"a":"2024-01-02"}'],
    ['{"_step":0,"a":9223372036854775808}', '{"_step":1,"a":1}'],
    ['{"_step":0,"a":9007199254740993}'],
    ['{"_step":0,"m":{"_type":"image-file","path":"x.png"}}', '{"_step":1}'],
    ['{"_step":0,"a":null}', '{"_step":1,"a":[1,2]}'],
    ['{"x":1,"_step":5}'],
    ['{"_step":0,"a":1e400}'],
    ['{"_step":0,"a":1.5,"b":null,"c":2.5}', '{"_step":1,"a":NaN,"b":-18446744073709551617,"c":Infinity}'],
    # Nested values' JSON text: orjson writes it when every float inside is 0 or in [1e-4, 1e16)
    # and finite, the standard library otherwise; both must give the canonical text.
    ['{"_step":0,"h":{"bins":[0.0001,-0.0,2.5e15,0],"s":"é\\u0001\\"\\\\\\n\u2028"}}', '{"_step":1,"h":{"n":12}}'],
    ['{"_step":0,"h":{"bins":[0.5,1e-05]}}', '{"_step":1,"h":{"bins":[3.14e-7]}}'],
    ['{"_step":0,"h":{"v":[1,2.5]}}', '{"_step":1,"h":{"v":[1e16,NaN]}}'],
    ['{"_step":0,"h":{"v":[1.5,18446744073709551617]}}'],
    ['{"_step":0,"h":{"s":"\\ud800","v":0.5}}'],
    ['{"_step":0,"h":[{"a":12345.678},{"b":[true,null,"x"]}]}', '{"_step":1,"h":[1.5,-Infinity]}'],
]


@pytest.mark.parametrize("page", PAGES)
def test_fast_and_exact_parsers_agree(page):
    fast = strings_to_batch(page)
    exact = rows_to_batch([parse_json(s) for s in page])
    assert fast.schema.names[0] == "_step"
    assert fast.schema.equals(exact.schema, check_metadata=True), (fast.schema, exact.schema)
    assert fast.to_pylist() == exact.to_pylist() or _nan_equal(fast, exact)


def test_orjson_writes_the_standard_librarys_text_for_floats_where_batches_let_it():
    """`batches._json_texts(plain=True)` writes with orjson only when every float is 0 or in
    [1e-4, 1e16) and finite: there both encoders agree digit for digit. 500,000 doubles, half
    spread over that range by magnitude and half random bit patterns that fall inside it."""
    import random
    import struct

    import orjson

    rng = random.Random(0)
    checked = 0
    for i in range(500_000):
        if i % 2:
            x = rng.choice((-1.0, 1.0)) * 10 ** rng.uniform(-4, 16)
        else:
            x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if not (math.isfinite(x) and 1e-4 <= abs(x) < 1e16):
            continue
        checked += 1
        assert orjson.dumps(x).decode() == json.dumps(x), x
    assert checked > 250_000
    # Just outside the range the two differ, which is why the range is checked first.
    assert orjson.dumps(1e-05) != json.dumps(1e-05).encode()


def _nan_equal(a, b):
    return json.dumps(a.to_pylist()) == json.dumps(b.to_pylist())


def test_normalize_parquet_batch(tmp_path):
    table = pa.table({
        "a": pa.array([1, 2], pa.int32()),
        "_step": pa.array([0, 1], pa.int32()),
        "f": pa.array([1.0, None], pa.float32()),
        "s": pa.array(["x", "y"], pa.large_string()),
        "st": pa.array([{"k": 1}, None]),
        "d": pa.array(["u", "v"]).dictionary_encode(),
    })
    pq.write_table(table, tmp_path / "x.parquet")
    raw = pq.read_table(tmp_path / "x.parquet").to_batches()[0]
    batch = normalize_batch(raw)
    assert batch.schema.names == ["_step", "a", "f", "s", "st", "d"]
    t = _types(batch)
    assert t["_step"] == pa.int64() and t["a"] == pa.int64() and t["f"] == pa.float64()
    assert t["s"] == pa.string() and t["d"] == pa.string()
    assert is_json_field(batch.schema.field("st"))
    assert batch_to_rows(batch)[0]["st"] == {"k": 1}


# -- step windows -----------------------------------------------------------------------------


class FakeHistory:
    """`history(minStep, maxStep, samples)` over a list of steps, truncating to `samples`."""

    def __init__(self, steps):
        self.steps = sorted(steps)
        self.calls = []

    def __call__(self, a, b, samples):
        self.calls.append((a, b, samples))
        return [s for s in self.steps if a <= s < b][:samples]


def test_windows_survive_a_late_start_with_few_requests():
    steps = list(range(61010, 61510)) + list(range(70000, 70100))
    fake = FakeHistory(steps)
    got = [s for page in page_windows(fake, 0, 70100, 100) for s in page]
    assert got == steps
    assert len(fake.calls) < 40
    assert max(s for a, b, s in fake.calls) <= 101


def test_windows_cover_range_exactly_and_respect_bounds():
    steps = list(range(0, 1000, 3))
    fake = FakeHistory(steps)
    got = [s for page in page_windows(fake, 10, 500, 50) for s in page]
    assert got == [s for s in steps if 10 <= s < 500]
    assert all(10 <= a < b <= 500 for a, b, _ in fake.calls)


def test_windows_do_not_lose_duplicate_steps():
    steps = [0, 1, 1, 1, 1, 1, 1, 1, 2] + [5] * 30 + [6]
    fake = FakeHistory(steps)
    got = [s for page in page_windows(fake, 0, 7, 2) for s in page]
    assert got == steps


def test_windows_after_sparse_then_dense_keep_pages_bounded():
    steps = list(range(0, 100_000, 1000)) + list(range(100_000, 120_000))
    fake = FakeHistory(steps)
    pages = list(page_windows(fake, 0, 120_000, 1000))
    assert [s for p in pages for s in p] == steps
    assert max(len(p) for p in pages) <= 1000
    assert max(s for a, b, s in fake.calls) <= 1001  # never more than page_size + 1 rows asked
    assert len(fake.calls) < 80


# -- prefetch -----------------------------------------------------------------------------------


def test_prefetch_keeps_order_and_raises_in_the_consumer():
    from run_pipeline.client.windows import prefetch

    def items():
        yield 1
        yield 2
        raise RuntimeError("page 3 failed")

    got = []
    with pytest.raises(RuntimeError, match="page 3"):
        for item in prefetch(items()):
            got.append(item)
    assert got == [1, 2]


def test_prefetch_stops_its_thread_when_abandoned():
    import threading

    from run_pipeline.client.windows import prefetch

    produced = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    gen = prefetch(items())
    assert next(gen) == 0
    gen.close()
    assert len(produced) < 10
    assert not any(t.name == "run_pipeline-prefetch" and t.is_alive()
                   for t in threading.enumerate())


def test_client_pickles_for_a_worker_process_with_its_settings():
    # export_runs hands the client to worker processes; each rebuilds its own from the pickle.
    import pickle

    from run_pipeline.client import RetryPolicy

    api = Api(KEY, "http://127.0.0.1:9/", environ={}, entity="ent", timeout=5.0, retry=RetryPolicy(budget=7.0))
    clone = pickle.loads(pickle.dumps(api))
    assert clone is not api and clone._transport is not api._transport
    assert (clone.base_url, clone.default_entity, clone._transport.timeout) == ("http://127.0.0.1:9", "ent", 5.0)
    assert clone._transport.retry.budget == 7.0
    assert clone._transport._auth.api_key == KEY
    assert KEY not in str(vars(clone))


def test_page_larger_than_a_parse_block_is_read_whole():
    # A row of 2 MiB and 3 MiB of ordinary rows: more than pyarrow.json's default block.
    big = {"_step": 0, "note": "é" * (1 << 20), "x": 0.5}
    rows = [big] + [{"_step": i, "x": i / 7, "k": i} for i in range(1, 60_000)]
    page = [json.dumps(r, ensure_ascii=False) for r in rows]
    batch = strings_to_batch(page)
    assert batch.num_rows == 60_000
    assert _types(batch) == {"_step": pa.int64(), "note": pa.string(), "x": pa.float64(), "k": pa.int64()}
    assert batch.column("note")[0].as_py() == big["note"] and batch.column("note")[1].as_py() is None
    assert batch.column("x").to_pylist()[:3] == [0.5, 1 / 7, 2 / 7]
    assert batch.column("k").to_pylist()[-1] == 59_999


def test_integer_beyond_int64_among_floats_nan_and_infinity_stays_exact():
    from run_pipeline.client.batches import strings_to_batch

    page = ['{"_step": 0, "x": 1.5, "y": 1.5}', '{"_step": 1, "x": Infinity, "y": -Infinity}',
            '{"_step": 2, "x": 18446744073709551617, "y": 1e300}', '{"_step": 3, "x": NaN, "y": NaN}']
    batch = strings_to_batch(page)
    assert is_json_field(batch.schema.field("x"))  # mixed number kinds with a huge int: JSON text
    assert [r.get("x") for r in batch_to_rows(batch)][:3] == [1.5, math.inf, 18446744073709551617]
    assert batch.schema.field("y").type == pa.float64()  # real floats, however large, stay float64
    assert batch.column("y").to_pylist()[:3] == [1.5, -math.inf, 1e300]
