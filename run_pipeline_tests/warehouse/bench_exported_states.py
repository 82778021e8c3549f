"""Benchmark: what the nightly refresh reads from the warehouse to learn the state and heartbeat
every run of a project was exported with (`Warehouse.exported_states`), on N runs, on a local
root and on an `s3://` root served by moto on a loopback port, whose requests are counted.
Prints figures; not collected by pytest.

    .venv/bin/python -m run_pipeline_tests.warehouse.bench_exported_states [--runs N] [--repeat R]
"""

from __future__ import annotations

import argparse
import collections
import logging
import statistics
import tempfile
import threading
import time
import uuid

import pyarrow.fs as pafs
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

from run_pipeline.warehouse import Warehouse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    requests: collections.Counter[str] = collections.Counter()
    app = DomainDispatcherApplication(create_backend_app)

    def counting(environ, start_response):
        requests[environ["REQUEST_METHOD"]] += 1
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, counting, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    s3 = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{server.server_port}", scheme="http", access_key="test",
                           secret_key="test", region="us-east-1", allow_bucket_creation=True)
    bucket = f"wh-{uuid.uuid4().hex[:12]}"
    s3.create_dir(bucket)
    try:
        with tempfile.TemporaryDirectory() as local:
            for name, wh in (("local", Warehouse(local)), ("s3 (moto, loopback)", Warehouse(f"s3://{bucket}", s3))):
                for i in range(args.runs):
                    wh.export_run({"entity": "team", "project": "proj", "run_id": f"run{i:05d}", "state": "finished",
                                   "heartbeat_at": "2026-11-01T00:00:00Z"})
                seconds = []
                for _ in range(args.repeat):
                    requests.clear()
                    start = time.perf_counter()
                    states = wh.exported_states("team", "proj")
                    seconds.append(time.perf_counter() - start)
                    assert len(states) == args.runs
                counted = f", {sum(requests.values())} requests {dict(requests)}" if wh.root.fs is s3 else ""
                print(f"{name}: {args.runs} runs, median {statistics.median(seconds) * 1000:.0f} ms "
                      f"(min {min(seconds) * 1000:.0f}){counted}")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
