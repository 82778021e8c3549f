"""Several hosts, one warehouse: Dagster's instance storage on PostgreSQL, the queued run
coordinator with a tag concurrency limit per block of W&B runs and the `wandb` pool, two code
servers standing for two hosts (their run workers are their children), one daemon, and an
s3:// warehouse on the loopback S3 server. Both hosts' sensors find the same finished runs and
export them at once; the warehouse must equal a single-host export, and no two Dagster runs
of the same W&B runs may have run at the same time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import dagster as dg
import pyarrow.fs as pafs
import pytest
import yaml

from run_pipeline.client import Api
from run_pipeline.defs.batching import BLOCK_TAG, RANGE_END_TAG, RANGE_START_TAG
from run_pipeline.defs.partitions import encode_partition_key, wandb_runs_partitions
from run_pipeline.discovery import discover_runs
from run_pipeline.pool import export_runs
from run_pipeline.settings import TERMINAL_STATES
from run_pipeline.warehouse import Warehouse
from run_pipeline_tests.reliability.digest import explain_difference, warehouse_digest

from .postgres import postgres_bin, postgres_server

pytestmark = [pytest.mark.slow, pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is not installed")]

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("dagster_postgres")

PROJECT = "image-classification"
BATCH = 4
POOL_LIMIT = 2
HOSTS = ("host_a", "host_b")
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    # A session of its own: stopping it stops its children (run workers) too.
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_for(what: str, probe, timeout: float, logs: list[Path], procs: list[subprocess.Popen]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        value = probe()
        if value:
            return value
        time.sleep(1.0)
    tails = "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text().splitlines()[-40:]) for p in logs if p.exists())
    raise AssertionError(f"gave up waiting for {what} (a process exited, or time ran out)\n{tails}")


def test_two_hosts_export_overlapping_runs_into_one_s3_warehouse(emulator, tmp_path):
    s3 = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    procs: list[subprocess.Popen] = []
    try:
        host, port = s3.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        bucket = f"wh-{uuid.uuid4().hex[:10]}"
        fs = pafs.S3FileSystem(endpoint_override=endpoint, access_key="test", secret_key="test",
                               region="us-east-1", allow_bucket_creation=True)
        fs.create_dir(bucket)
        with postgres_server() as db:
            home = tmp_path / "dagster_home"
            home.mkdir()
            (home / "dagster.yaml").write_text(yaml.safe_dump({
                "telemetry": {"enabled": False},
                "storage": {"postgres": {"postgres_db": db}},
                "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                                    "config": {"dequeue_interval_seconds": 1}},
                "concurrency": {
                    "runs": {"max_concurrent_runs": 6,
                             "tag_concurrency_limits": [{"key": BLOCK_TAG, "limit": 1,
                                                         "value": {"applyLimitPerUniqueValue": True}}]},
                    "pools": {"default_limit": POOL_LIMIT},
                },
            }))
            with Api(api_key=emulator.api_key, base_url=emulator.base_url) as api:
                runs = discover_runs(api, "demo", PROJECT)
            order = sorted(encode_partition_key(r.key) for r in runs)
            finished = {encode_partition_key(r.key) for r in runs if r.state in TERMINAL_STATES}
            with dg.DagsterInstance.from_config(str(home)) as instance:
                # Registered up front, as the discovery sensor does, so both hosts see one order.
                instance.add_dynamic_partitions(wandb_runs_partitions.name, order)

            env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO_ROOT),
                   "WANDB_BASE_URL": emulator.base_url, "WANDB_API_KEY": emulator.api_key, "WANDB_PROJECT": PROJECT,
                   "RUN_PIPELINE_WAREHOUSE": f"s3://{bucket}/wh", "RUN_PIPELINE_TEST_BATCH": str(BATCH),
                   "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
            workspace, logs = [], []
            for name in HOSTS:
                grpc_port = free_port()
                logs.append(tmp_path / f"{name}.log")
                procs.append(start([sys.executable, "-m", "dagster", "api", "grpc", "--host", "127.0.0.1",
                                    "--port", str(grpc_port), "--python-file",
                                    str(Path(__file__).with_name("multi_host_defs.py")), "--location-name", name],
                                   {**env, "RUN_PIPELINE_TEST_HOST": name}, logs[-1]))
                workspace.append({"grpc_server": {"host": "127.0.0.1", "port": grpc_port, "location_name": name}})
            (tmp_path / "workspace.yaml").write_text(yaml.safe_dump({"load_from": workspace}))
            logs.append(tmp_path / "daemon.log")
            procs.append(start([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w",
                                str(tmp_path / "workspace.yaml")], env, logs[-1]))

            with dg.DagsterInstance.from_config(str(home)) as instance:
                def all_done():
                    records = instance.get_run_records()
                    by_host = {name: [r for r in records if r.dagster_run.remote_job_origin
                                      and r.dagster_run.remote_job_origin.location_name == name] for name in HOSTS}
                    covered = {name: {k for r in rs for k in partitions_of(r.dagster_run, order)}
                               for name, rs in by_host.items()}
                    done = all(r.dagster_run.is_finished for r in records)
                    return records if done and all(finished <= c for c in covered.values()) else None

                waited = time.monotonic()
                records = wait_for("both hosts to export every finished run", all_done, 240, logs, procs)
                assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records), \
                    [(r.dagster_run.run_id, r.dagster_run.status) for r in records]
                # Batched: fewer Dagster runs than W&B runs per host.
                for name in HOSTS:
                    mine = [r for r in records if r.dagster_run.remote_job_origin.location_name == name]
                    assert 0 < len(mine) < len(finished), name
                # The tag limit: two Dagster runs of the same block never ran at once, across hosts.
                by_block = defaultdict(list)
                for r in records:
                    by_block[r.dagster_run.tags[BLOCK_TAG]].append((r.start_time, r.end_time, r))
                overlapping_blocks = 0
                for spans in by_block.values():
                    spans.sort(key=lambda s: s[0])
                    hosts = {s[2].dagster_run.remote_job_origin.location_name for s in spans}
                    overlapping_blocks += len(hosts) == 2
                    for (_, end, _), (start_next, _, _) in zip(spans, spans[1:]):
                        assert end <= start_next
                assert overlapping_blocks > 0  # the hosts did export the same W&B runs
                # The pool: never more than POOL_LIMIT export steps at once across the deployment.
                peak = max_concurrent_steps(instance, [r.dagster_run.run_id for r in records])
                assert peak <= POOL_LIMIT
                per_host = ", ".join(f"{h}: {sum(r.dagster_run.remote_job_origin.location_name == h for r in records)}"
                                     for h in HOSTS)
                print(f"multi-host: {len(finished)} finished W&B runs, {len(records)} Dagster runs ({per_host}), "
                      f"{overlapping_blocks} blocks exported by both hosts, peak {peak} export steps at once, "
                      f"{time.monotonic() - waited:.0f} s from daemon start to the last run's end")
                exported = sorted({k for r in records for k in partitions_of(r.dagster_run, order)})

        # The shared warehouse equals one host exporting the same runs alone; no lock is left.
        assert not [i for i in fs.get_file_info(pafs.FileSelector(f"{bucket}/wh/_staging/locks",
                                                                  allow_not_found=True))
                    if i.type == pafs.FileType.File]
        mirror = tmp_path / "mirror"
        pafs.copy_files(f"{bucket}/wh", str(mirror), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        Warehouse(str(mirror)).refresh_catalog()
        single = tmp_path / "single"
        by_key = {encode_partition_key(r.key): r for r in runs}
        with Api(api_key=emulator.api_key, base_url=emulator.base_url) as api:
            assert all(o.result for o in export_runs(api, Warehouse(str(single)), [by_key[k] for k in exported]))
        Warehouse(str(single)).refresh_catalog()
        assert warehouse_digest(mirror) == warehouse_digest(single), explain_difference(mirror, single)
    finally:
        for p in reversed(procs):
            stop(p)
        s3.stop()


def partitions_of(run: dg.DagsterRun, order: list[str]) -> list[str]:
    if RANGE_START_TAG in run.tags:
        return order[order.index(run.tags[RANGE_START_TAG]):order.index(run.tags[RANGE_END_TAG]) + 1]
    return [run.tags["dagster/partition"]] if "dagster/partition" in run.tags else []


def max_concurrent_steps(instance: dg.DagsterInstance, run_ids: list[str]) -> int:
    """The most export steps running at one moment, from the runs' step events."""
    moments = []
    for run_id in run_ids:
        for record in instance.get_records_for_run(run_id).records:
            event = record.event_log_entry.dagster_event
            if event is None:
                continue
            if event.event_type_value == "STEP_START":
                moments.append((record.event_log_entry.timestamp, 1))
            elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                moments.append((record.event_log_entry.timestamp, -1))
    running = peak = 0
    for _, delta in sorted(moments, key=lambda m: (m[0], m[1])):
        running += delta
        peak = max(peak, running)
    return peak
