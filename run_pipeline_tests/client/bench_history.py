"""Benchmark: export one large run with `iter_history_batches` from live pages and from exported
Parquet (and, with --sdk, the real wandb SDK's scan_history for comparison). Prints figures.

    python -m run_pipeline_tests.client.bench_history [--steps 50000] [--metrics 50] [--sdk]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import requests

from run_pipeline.client import Api
from run_pipeline.client.batches import parse_rows, rows_to_batch, strings_to_batch
from run_pipeline.emulator.sample import generate_run
from run_pipeline.emulator.server import EmulatorServer

RUN_ID = "bench001"


def _serve(root: str, conn) -> None:
    with EmulatorServer(root) as server:
        conn.send((server.base_url, server.api_key))
        conn.recv()  # block until the parent is done


class ServerProcess:
    """The emulator in its own process, so its CPU does not share this process's GIL."""

    def __init__(self, root: Path):
        self._conn, child = multiprocessing.Pipe()
        self._proc = multiprocessing.Process(target=_serve, args=(str(root), child), daemon=True)
        self._proc.start()
        self.base_url, self.api_key = self._conn.recv()

    def set_parquet_mode(self, mode: str) -> None:
        requests.post(f"{self.base_url}/_control/parquet-mode", json={"mode": mode},
                      auth=("api", self.api_key), timeout=30).raise_for_status()

    def close(self) -> None:
        self._conn.send("stop")
        self._proc.join(timeout=20)


def timed_export(api: Api, path: str, **kw) -> tuple[int, int, float]:
    start = time.perf_counter()
    rows = cols = 0
    for batch in api.run(path).iter_history_batches(**kw):
        rows += batch.num_rows
        cols = max(cols, batch.num_columns)
    return rows, cols, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--metrics", type=int, default=50)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--sdk", action="store_true", help="also time the wandb SDK")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "dataset"
        generate_run(root / "demo" / "bench" / RUN_ID, steps=args.steps, metrics=args.metrics,
                     state="finished", non_finite=True, extras=True)
        server = ServerProcess(root)
        try:
            api = Api(api_key=server.api_key, base_url=server.base_url, environ={})
            path = f"demo/bench/{RUN_ID}"
            server.set_parquet_mode("parquet")
            timed_export(api, path)  # warm the server's export cache
            for mode, page_size in (("parquet", args.page_size), ("live", args.page_size),
                                    ("live", 5 * args.page_size)):
                server.set_parquet_mode(mode)
                before = api._transport.stats["requests"]
                rows, cols, secs = timed_export(api, path, page_size=page_size)
                reqs = api._transport.stats["requests"] - before
                print(f"{mode:8s} page {page_size:5d}: {rows} rows x {cols} cols in {secs:.2f}s = "
                      f"{rows / secs:,.0f} rows/s ({reqs} requests)")

            # Parsing alone, one page of live rows: the pyarrow.json fast path vs exact dicts.
            page = api.run(path)._history().fetch_history_page(0, 5000, 10_000)
            for name, fn in (("pyarrow.json", lambda: strings_to_batch(page)),
                             ("orjson+dicts", lambda: rows_to_batch(parse_rows(page)))):
                start = time.perf_counter()
                for _ in range(3):
                    fn()
                secs = (time.perf_counter() - start) / 3
                print(f"parse {name:13s} {len(page) / secs:,.0f} rows/s")

            if args.sdk:
                import wandb

                os.environ.update({"WANDB_CACHE_DIR": f"{tmp}/c", "WANDB_DIR": f"{tmp}/d",
                                   "WANDB_SILENT": "true", "WANDB_BASE_URL": server.base_url,
                                   "WANDB_API_KEY": server.api_key})
                sdk = wandb.Api(api_key=server.api_key, overrides={"base_url": server.base_url},
                                timeout=120)
                for mode in ("parquet", "live"):
                    server.set_parquet_mode(mode)
                    start = time.perf_counter()
                    n = sum(1 for _ in sdk.run(path).scan_history(page_size=args.page_size))
                    secs = time.perf_counter() - start
                    print(f"sdk {mode:8s} {n} rows in {secs:.2f}s = {n / secs:,.0f} rows/s")
        finally:
            server.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (client only): {peak:.0f} MiB")


if __name__ == "__main__":
    main()
