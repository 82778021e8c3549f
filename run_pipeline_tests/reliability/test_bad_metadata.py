"""One run with bad metadata: a config nested thousands of levels deep, one that is not JSON,
one that is not an object, lone surrogates in keys and values. The real emulator serves the
project; a loopback proxy in front of it rewrites those runs' fields in its GraphQL answers
(the emulator's dataset format cannot hold a document that is not JSON)."""

from __future__ import annotations

import json

import duckdb

from run_pipeline.warehouse import Warehouse

from .helpers import ENTITY, dataset_run_ids, run_cli
from .proxy import rewriting_proxy

PROJECT = "rl-agents"  # 12 runs: with --workers 2 the CLI exports them in a process pool


def deep_config(levels: int) -> str:
    """A config JSONString whose key "nested" holds `levels` nested objects (as text: the
    stdlib's encoder cannot write it)."""
    return '{"nested": {"value": ' + '{"a": ' * levels + '"bottom"' + "}" * levels + ', "desc": null}}'


def rewrite_runs(fields: dict[str, dict[str, str]]):
    """A proxy hook replacing the fields of the runs named in `fields` ({run id: {field: raw
    JSONString text}}) in every GraphQL answer."""
    def rewrite(node):
        if isinstance(node, dict):
            if node.get("name") in fields and "config" in node:
                node.update(fields[node["name"]])
            for v in node.values():
                rewrite(v)
        elif isinstance(node, list):
            for v in node:
                rewrite(v)

    def hook(operation: str, status: int, body: bytes) -> tuple[int, bytes]:
        if status != 200:
            return status, body
        payload = json.loads(body)
        rewrite(payload)
        return status, json.dumps(payload).encode()

    return hook


def _config(value) -> str:
    """A JSONString config as W&B sends it: each key's value wrapped as {"value", "desc"}."""
    return json.dumps({k: {"value": v, "desc": None} for k, v in value.items()})


def test_one_run_with_bad_metadata_fails_alone_and_deep_odd_configs_are_stored(emulator, tmp_path):
    runs = dataset_run_ids(emulator.dataset_dir, PROJECT)
    deepest, deep_ish, not_json, a_list, odd_text = runs[:5]
    fields = {
        deepest: {"config": deep_config(3000)},
        deep_ish: {"config": deep_config(800)},
        not_json: {"config": '{"lr": 0.1, "oops'},
        a_list: {"config": "[1, 2, 3]"},
        odd_text: {"config": _config({"k\ud800": "v\ud800", "ok": "fine"}),
                   "summaryMetrics": json.dumps({"s\udfff": 1.5})},
    }
    wh = tmp_path / "wh"
    with rewriting_proxy(emulator.base_url, rewrite_runs(fields)) as proxy:
        done = run_cli(["export", "--entity", ENTITY, "--project", PROJECT, "--warehouse", str(wh),
                        "--workers", "2", "--quiet"],
                       env={"WANDB_BASE_URL": proxy, "WANDB_API_KEY": emulator.api_key})
    assert done.returncode == 6, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "1 of 12 runs failed" in done.stderr
    assert (f"  {ENTITY}/{PROJECT}/{not_json}: WandbMalformedDataError: run {ENTITY}/{PROJECT}/{not_json}: "
            "config is not valid JSON (") in done.stderr
    with Warehouse(wh).connect() as con:
        landed = {r for (r,) in con.execute("SELECT run_id FROM runs").fetchall()}
        assert landed == set(runs) - {not_json}

        def config_rows(run_id):
            return con.execute("SELECT key, value::VARCHAR, value_text FROM run_config WHERE run_id = ? "
                               "ORDER BY key NULLS FIRST", [run_id]).fetchall()

        assert config_rows(deepest) == [(".".join(["nested"] + ["a"] * 3000), '"bottom"', "bottom")]
        assert config_rows(deep_ish) == [(".".join(["nested"] + ["a"] * 800), '"bottom"', "bottom")]
        (text,) = con.execute("SELECT config::VARCHAR FROM runs WHERE run_id = ?", [deepest]).fetchone()
        assert text == '{"nested":' + '{"a":' * 3000 + '"bottom"' + "}" * 3001
        # Not an object: kept as it is, one run_config row with a NULL key.
        assert con.execute("SELECT config::VARCHAR FROM runs WHERE run_id = ?", [a_list]).fetchone() == ("[1,2,3]",)
        assert config_rows(a_list) == [(None, "[1,2,3]", None)]
        # Lone surrogates: U+FFFD in plain text, the escape spelled out in the JSON value.
        assert config_rows(odd_text) == [("k\ufffd", '"v\\\\ud800"', "v\ufffd"), ("ok", '"fine"', "fine")]
        assert json.loads(con.execute("SELECT value::VARCHAR FROM run_config WHERE run_id = ? AND key = 'k\ufffd'",
                                      [odd_text]).fetchone()[0]) == "v\\ud800"
        assert con.execute("SELECT key, value_double FROM run_summary WHERE run_id = ?",
                           [odd_text]).fetchall() == [("s\ufffd", 1.5)]
        assert con.execute("SELECT summary::VARCHAR FROM runs WHERE run_id = ?", [odd_text]).fetchone() == (
            '{"s\\\\udfff":1.5}',)
    with duckdb.connect(str(wh / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (11,)


def test_a_lone_surrogate_in_a_history_key_or_value_is_stored(emulator, tmp_path):
    from run_pipeline.client import Api
    from run_pipeline.export import Exporter
    from run_pipeline.warehouse import RunKey

    run_id = dataset_run_ids(emulator.dataset_dir, PROJECT)[0]
    history = emulator.dataset_dir / ENTITY / PROJECT / run_id / "history.jsonl"
    last = json.loads(history.read_text().splitlines()[-1])["_step"]
    with history.open("a") as f:  # json.dumps escapes the surrogate: the file stays UTF-8
        f.write(json.dumps({"_step": last + 1, "k\ud800": "v\ud800"}) + "\n")
    emulator.store.reload()
    emulator.set_parquet_mode("live")
    with Api(api_key=emulator.api_key, base_url=emulator.base_url, environ={}) as api:
        Exporter(api, Warehouse(tmp_path / "wh")).export_run(RunKey(ENTITY, PROJECT, run_id), full=True)
    with Warehouse(tmp_path / "wh").connect() as con:
        # The key and the text value with U+FFFD in place of the lone surrogate (README, typing).
        assert con.execute('SELECT "k\ufffd" FROM history WHERE _step = ?', [last + 1]).fetchone() == ("v\ufffd",)
