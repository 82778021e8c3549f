"""Secrets: after exports with a recognisable API key (through the CLI with DEBUG logging, through
Dagster with library logs in the event log, through requests that fail), the key, raw or as its
Basic-auth token, appears in no output, log record, Dagster event or run config, no config the
Dagster UI shows, no exception text, traceback or pickled exception, no repr, and no file under
the warehouse, Dagster's home or the temp directory."""

from __future__ import annotations

import base64
import json
import logging
import pickle
import runpy
import sys
import tempfile
import traceback
import urllib.parse
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from run_pipeline.client import (
    Api,
    RetryPolicy,
    WandbAuthError,
    WandbGaveUpError,
    WandbNotFoundError,
)
from run_pipeline.defs.partitions import encode_partition_key, wandb_runs_partitions
from run_pipeline.defs.resources import WandbResource
from run_pipeline.emulator.sample import generate
from run_pipeline.emulator.server import EmulatorServer
from run_pipeline.export import Exporter
from run_pipeline.warehouse import TABLES, RunKey, Warehouse

from .digest import table_rows
from .helpers import ENTITY, dataset_run_ids, run_cli

KEY = "SECRETKEY" + "q7Lm2Xv9Rb4Tn8Wc1Hd6Jf3Kp5Zs0Ya"
WRONG_KEY = "WRONGKEY0" + "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p"
PROJECT = "rl-agents"  # 12 runs, among them the one with media, files, NaN and Infinity
# Enough failures that retries log their reasons, few enough that the export finishes quickly.
NOISY = {"seed": 3, "rates": {"429": 0.1, "503": 0.1, "reset": 0.05, "truncate": 0.05}, "retry_after": 0.1}
DEBUG_CLI = ("import logging, sys; logging.basicConfig(level=logging.DEBUG); "
             "from run_pipeline.cli import main; sys.exit(main(sys.argv[1:]))")

assert len(KEY) == len(WRONG_KEY) == 40


def secret_forms(key: str) -> list[str]:
    """The ways a key can leak: raw, its first 20 characters (a cut-off key), URL-quoted, and
    base64 of `api:<key>` (the Basic-auth token) or of the key alone."""
    token = base64.b64encode(f"api:{key}".encode()).decode()
    return sorted({key, key[:20], urllib.parse.quote(key, safe=""), token, token.rstrip("="),
                   base64.b64encode(key.encode()).decode().rstrip("=")})


FORMS = [(f, k) for k in (KEY, WRONG_KEY) for f in secret_forms(k)]


def assert_clean(data: str | bytes, where: str) -> None:
    for form, key in FORMS:
        needle = form.encode() if isinstance(data, bytes) else form
        if needle in data:
            at = data.index(needle)
            context = data[max(0, at - 120): at + len(needle) + 40]
            pytest.fail(f"{'wrong ' if key == WRONG_KEY else ''}API key ({form[:12]}…) found in {where}: …{context!r}…")


def exception_texts(exc: BaseException) -> list[tuple[str, str | bytes]]:
    """Everything an exception can show: message, repr, the formatted traceback with its chain,
    each chained exception's attributes, and the pickle a process pool or Dagster would send."""
    out: list[tuple[str, str | bytes]] = [
        ("str", str(exc)), ("repr", repr(exc)),
        ("traceback", "".join(traceback.format_exception(exc))),
    ]
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out.append((f"vars({type(e).__name__})", repr(vars(e))))
        reason = getattr(e, "reason", None)  # urllib3 keeps the underlying error here
        todo += [e.__cause__, e.__context__, reason if isinstance(reason, BaseException) else None]
    try:
        out.append(("pickle", pickle.dumps(exc)))
    except Exception:  # unpicklable exceptions are not sent anywhere either
        pass
    return out


def assert_exception_clean(exc: BaseException, where: str) -> None:
    for what, text in exception_texts(exc):
        assert_clean(text, f"{where} ({what})")


def scan_tree(root: Path) -> dict[str, int]:
    """Scan every file under `root` as bytes, and Parquet and DuckDB files decoded too (their
    pages are compressed, so a key inside would not show as bytes). Returns counts by kind."""
    counts: dict[str, int] = {}
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        assert_clean(str(path), "a file name")
        assert_clean(path.read_bytes(), str(path))
        kind = path.suffix or path.name
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            assert_clean(repr(table.schema.metadata) + repr(table.to_pylist()), f"{path} (decoded)")
            assert_clean(repr(pq.read_metadata(path).to_dict()), f"{path} (footer)")
        elif path.suffix == ".duckdb":
            with duckdb.connect(str(path), read_only=True) as con:
                assert_clean(repr(con.execute("SELECT sql FROM duckdb_views()").fetchall()), f"{path} (views)")
                for table in TABLES:
                    assert_clean("\n".join(table_rows(con, table)[1]), f"{path} view {table}")
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def assert_log_records_clean(records: list[logging.LogRecord], where: str) -> None:
    for rec in records:
        text = rec.getMessage() + (rec.exc_text or "")
        if rec.exc_info and rec.exc_info[1] is not None:
            text += "".join(traceback.format_exception(rec.exc_info[1]))
        assert_clean(text, f"{where}: log record {rec.name}:{rec.levelname}")


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def _secret_server(tmp_path_factory):
    dataset = tmp_path_factory.mktemp("secret-emulator") / "dataset"
    generate(dataset)
    with EmulatorServer(dataset, api_key=KEY) as server:
        yield server


@pytest.fixture
def server(_secret_server, tmp_path, monkeypatch):
    """The emulator that accepts only KEY; temp files of this process land under tmp_path."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    yield _secret_server
    _secret_server.clear_faults()


def test_the_scanners_find_a_planted_key(tmp_path):
    """The checks below can fail: a key in a compressed Parquet column, a Basic-auth token in a
    log record, a key in an exception's chained cause are all found."""
    import pyarrow as pa

    pq.write_table(pa.table({"note": [f"token={KEY}"] * 100}), tmp_path / "x.parquet", compression="zstd")
    with pytest.raises(pytest.fail.Exception, match="API key"):
        scan_tree(tmp_path)
    token = base64.b64encode(f"api:{WRONG_KEY}".encode()).decode()
    record = logging.LogRecord("urllib3", logging.DEBUG, __file__, 1, "header %s", (f"Basic {token}",), None)
    with pytest.raises(pytest.fail.Exception, match="wrong API key"):
        assert_log_records_clean([record], "planted")
    try:
        try:
            raise ValueError(KEY)
        except ValueError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as outer:
        with pytest.raises(pytest.fail.Exception, match="API key"):
            assert_exception_clean(outer, "planted")


# -- the CLI --------------------------------------------------------------------------------------

def test_cli_export_with_debug_logging_never_shows_the_key(server, tmp_path):
    wh = tmp_path / "wh"
    server.set_faults(**NOISY)
    env = {"WANDB_BASE_URL": server.base_url, "WANDB_API_KEY": KEY, "TMPDIR": str(tmp_path / "tmp")}
    args = ["export", "--entity", ENTITY, "--project", PROJECT, "--warehouse", str(wh), "--retry-budget", "60"]
    # Every logger at DEBUG (urllib3 logs each request line), plus the progress lines.
    debug = run_cli(args, env=env, command=[sys.executable, "-c", DEBUG_CLI])
    assert debug.returncode == 0, debug.stderr[-3000:]
    assert '"POST /graphql HTTP/1.1" 200' in debug.stderr  # urllib3's DEBUG lines were on
    assert "failed (" in debug.stderr and "; retry 1 in" in debug.stderr  # retries logged their causes
    assert "exported 12 of 12 runs" in debug.stderr
    # The installed script as a user runs it, progress on, re-exporting in full.
    plain = run_cli(args + ["--full"], env=env)
    assert plain.returncode == 0, plain.stderr[-3000:]
    # A wrong key and an unknown entity: exit codes 3 and 4, with DEBUG logging.
    wrong = run_cli(args, env={**env, "WANDB_API_KEY": WRONG_KEY}, command=[sys.executable, "-c", DEBUG_CLI])
    assert wrong.returncode == 3 and "authentication failed" in wrong.stderr and "401" in wrong.stderr
    unknown = run_cli(["export", "--entity", "nobody", "--project", PROJECT, "--warehouse", str(wh)], env=env,
                      command=[sys.executable, "-c", DEBUG_CLI])
    assert unknown.returncode == 4, unknown.stderr
    for name, r in {"debug": debug, "plain": plain, "wrong key": wrong, "unknown entity": unknown}.items():
        assert_clean(r.stdout, f"stdout of the {name} CLI run")
        assert_clean(r.stderr, f"stderr of the {name} CLI run")
    counts = scan_tree(tmp_path)
    assert counts.get(".parquet", 0) >= 12 * 4 and counts.get(".duckdb") == 1 and counts.get(".json", 0) >= 12, counts


# -- the client in-process, at DEBUG -------------------------------------------------------------------

def test_client_logs_reprs_and_warehouse_never_show_the_key(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # the root logger: run_pipeline, urllib3, requests, everything
    server.set_faults(**NOISY)
    wh = Warehouse(tmp_path / "wh")
    with Api(api_key=KEY, base_url=server.base_url, environ={}, retry=RetryPolicy(budget=30, backoff_base=0.05)) as api:
        exporter = Exporter(api, wh)
        results = [exporter.export_run(RunKey(ENTITY, PROJECT, rid), full=True)
                   for rid in dataset_run_ids(server.dataset_dir, PROJECT)[:6]]
        run = api.run(f"{ENTITY}/{PROJECT}/{results[0].key.run_id}")
        shown = {"repr(Api)": repr(api), "str(Api)": str(api), "vars(Api)": repr(vars(api)),
                 "repr(Run)": repr(run), "repr(Exporter)": repr(exporter), "repr(Warehouse)": repr(wh),
                 "repr(result)": repr(results[0])}
    wh.refresh_catalog()
    for what, text in shown.items():
        assert_clean(text, what)
    assert any(r.name.startswith("urllib3") and r.levelno == logging.DEBUG for r in caplog.records)
    assert any("retry" in r.getMessage() for r in caplog.records if r.name.startswith("run_pipeline"))
    assert_log_records_clean(caplog.records, "caplog")
    assert_clean(caplog.text, "caplog text")
    counts = scan_tree(tmp_path)
    assert counts.get(".parquet", 0) >= 6 * 4 and counts.get(".duckdb") == 1, counts


def test_resource_repr_hides_the_key():
    for resource in (WandbResource(base_url="http://127.0.0.1:1", api_key=KEY),
                     WandbResource(base_url="http://127.0.0.1:1", api_key=dg.EnvVar("WANDB_API_KEY"))):
        assert_clean(repr(resource), "repr(WandbResource)")
        assert_clean(str(resource), "str(WandbResource)")


# -- failing requests --------------------------------------------------------------------------------

def test_failing_requests_never_show_either_key(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    wh = Warehouse(tmp_path / "wh")
    fast = RetryPolicy(budget=1.0, backoff_base=0.1)
    failures: dict[str, BaseException] = {}
    with Api(api_key=WRONG_KEY, base_url=server.base_url, environ={}, retry=fast) as wrong:
        with pytest.raises(WandbAuthError) as info:
            Exporter(wrong, wh).export_run(RunKey(ENTITY, PROJECT, dataset_run_ids(server.dataset_dir, PROJECT)[0]))
        failures["401 through Exporter"] = info.value
        with pytest.raises(WandbAuthError) as info:
            wrong.project(PROJECT, ENTITY)
        failures["401 through Api.project"] = info.value
    with Api(api_key=KEY, base_url=server.base_url, environ={}, retry=fast) as api:
        with pytest.raises(WandbNotFoundError) as info:
            Exporter(api, wh).export_run(RunKey("nobody", PROJECT, "abc123"))
        failures["unknown entity through Exporter"] = info.value
        with pytest.raises(WandbNotFoundError) as info:
            api.project(PROJECT, "nobody")
        failures["unknown entity through Api.project"] = info.value
        server.set_faults(seed=0, rates={"503": 1.0})
        with pytest.raises(WandbGaveUpError) as info:
            Exporter(api, wh).export_run(RunKey(ENTITY, PROJECT, "abc123"))
        failures["503 until the budget ends"] = info.value
        server.set_faults(seed=0, rates={"reset": 1.0})
        with pytest.raises(WandbGaveUpError) as info:
            api.project(PROJECT, ENTITY)
        failures["connection resets"] = info.value
        server.clear_faults()
    # Nothing listens on a port just closed: connection refused, with urllib3's own exceptions.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with Api(api_key=KEY, base_url=dead, environ={}, retry=fast) as api:
        with pytest.raises(WandbGaveUpError) as info:
            api.project(PROJECT, ENTITY)
        failures["connection refused"] = info.value
    assert "401" in str(failures["401 through Exporter"])
    assert "nobody" in str(failures["unknown entity through Exporter"])
    for where, exc in failures.items():
        assert_exception_clean(exc, where)
    assert_log_records_clean(caplog.records, "caplog")
    scan_tree(tmp_path)


# -- Dagster ----------------------------------------------------------------------------------------

RESOURCE_DETAILS = """query($s: ResourceSelector!) { topLevelResourceDetailsOrError(resourceSelector: $s) {
  __typename ... on ResourceDetails { name configuredValues { key value type } } ... on PythonError { message } } }"""
RUN_DETAILS = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { runId status runConfigYaml
  tags { key value } } } }"""
RUN_LOGS = """query($id: ID!) { logsForRun(runId: $id, limit: 10000) { __typename
  ... on EventConnection { events { __typename ... on MessageEvent { message level }
    ... on ExecutionStepFailureEvent { error { message stack cause { message stack } }
      failureMetadata { label description } }
    ... on RunFailureEvent { pipelineRunFailureError: error { message stack } }
    ... on MaterializationEvent { metadataEntries { label description ... on TextMetadataEntry { text }
      ... on JsonMetadataEntry { jsonString } ... on MarkdownMetadataEntry { mdStr } ... on PathMetadataEntry { path }
      ... on UrlMetadataEntry { url } } } } }
  ... on PythonError { message } } }"""


def test_dagster_event_log_run_config_and_ui_never_show_the_key(server, tmp_path, monkeypatch, caplog):
    """The real definitions (`dg.EnvVar("WANDB_API_KEY")`), a persistent instance under tmp_path
    that also records the client's and urllib3's DEBUG logs in the event log, two exports under
    faults, the catalog, one export with a wrong key that fails: then the event log, the runs'
    config, the UI's GraphQL for the resource, runs and logs, and every file of the Dagster home."""
    from dagster_graphql.test.utils import (
        define_out_of_process_context,
        execute_dagster_graphql,
        infer_resource_selector,
    )

    caplog.set_level(logging.DEBUG)
    wh = tmp_path / "wh"
    for name, value in {"WANDB_BASE_URL": server.base_url, "WANDB_API_KEY": KEY, "WANDB_ENTITY": ENTITY,
                        "WANDB_PROJECT": PROJECT, "RUN_PIPELINE_WAREHOUSE": str(wh)}.items():
        monkeypatch.setenv(name, value)
    definitions = Path(__file__).resolve().parents[2] / "run_pipeline" / "definitions.py"
    defs: dg.Definitions = runpy.run_path(str(definitions))["defs"]  # read the environment above, fresh
    keys = [encode_partition_key(RunKey(ENTITY, PROJECT, rid))
            for rid in dataset_run_ids(server.dataset_dir, PROJECT)[:3]]
    python_logs = {"python_logs": {"managed_python_loggers": ["run_pipeline", "urllib3", "requests"],
                                   "python_log_level": "DEBUG"}}
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(overrides=python_logs, temp_dir=str(tmp_path / "dagster_home")) as instance:
        # Resolved inside the instance's context: resolving reads the current instance's state, and
        # an earlier test's disposed instance can linger there (see the report on test_defs).
        export_job, catalog_job = defs.resolve_job_def("wandb_export_job"), defs.resolve_job_def("wandb_catalog_job")
        instance.add_dynamic_partitions(wandb_runs_partitions.name, keys)
        server.set_faults(**NOISY)
        for key in keys[:2]:
            assert export_job.execute_in_process(partition_key=key, instance=instance).success
        server.clear_faults()
        assert catalog_job.execute_in_process(instance=instance).success
        monkeypatch.setenv("WANDB_API_KEY", WRONG_KEY)  # EnvVar resolves when the run starts
        failed = export_job.execute_in_process(partition_key=keys[2], instance=instance, raise_on_error=False)
        assert not failed.success
        monkeypatch.setenv("WANDB_API_KEY", KEY)

        runs = instance.get_runs()
        assert len(runs) == 4
        events = [e for r in runs for e in instance.all_logs(r.run_id)]
        assert any("urllib3" in (e.user_message or "") or "POST /graphql" in (e.user_message or "") for e in events), \
            "the client's and urllib3's logs were meant to be in the event log"
        assert any("401" in dg.serialize_value(e) for e in instance.all_logs(failed.run_id))
        for r in runs:
            assert_clean(dg.serialize_value(r), f"run {r.run_id} (config, tags)")
            assert_clean(json.dumps(r.run_config, default=str), f"run config of {r.run_id}")
        for e in events:
            where = f"event record {e.dagster_event_type or 'log'}: {e.user_message[:80]!r}"
            assert_clean(dg.serialize_value(e), where)

        # What the UI shows, through its own GraphQL over the code location loaded from definitions.py.
        with define_out_of_process_context(str(definitions), "defs", instance) as ui:
            resource = execute_dagster_graphql(ui, RESOURCE_DETAILS, {"s": infer_resource_selector(ui, "wandb")})
            values = {v["key"]: v for v in resource.data["topLevelResourceDetailsOrError"]["configuredValues"]}
            assert values["api_key"]["type"] == "ENV_VAR" and values["api_key"]["value"] == "WANDB_API_KEY"
            shown = [json.dumps(resource.data)]
            for r in runs:
                details = execute_dagster_graphql(ui, RUN_DETAILS, {"id": r.run_id})
                logs = execute_dagster_graphql(ui, RUN_LOGS, {"id": r.run_id})
                assert details.errors is None and logs.errors is None, (details.errors, logs.errors)
                assert logs.data["logsForRun"]["__typename"] == "EventConnection"
                shown += [json.dumps(details.data), json.dumps(logs.data)]
            assert any("401" in s for s in shown)
            for text in shown:
                assert_clean(text, "the Dagster UI's GraphQL")
    assert_log_records_clean(caplog.records, "caplog")
    counts = scan_tree(tmp_path)  # the warehouse, and the Dagster home: SQLite runs, events, compute logs
    assert counts.get(".parquet", 0) >= 2 * 4 and counts.get(".db", 0) >= 1, counts
