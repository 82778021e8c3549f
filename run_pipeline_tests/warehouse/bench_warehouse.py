"""Benchmark: export one 1M-step × 50-float-metric run to a local warehouse, refresh the catalog,
run two queries. Prints figures; not collected by pytest.

    .venv/bin/python -m run_pipeline_tests.warehouse.bench_warehouse [--rows N] [--cols K] [--batch B]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from run_pipeline.warehouse import export_run, refresh_catalog


def batches(rows: int, cols: int, batch_rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    names = ["_step"] + [f"train/metric_{i}" for i in range(cols)]
    for start in range(0, rows, batch_rows):
        n = min(batch_rows, rows - start)
        arrays = [pa.array(np.arange(start, start + n, dtype=np.int64))]
        # Smooth-ish curves with noise, like training metrics (compress like real data).
        base = np.linspace(start, start + n, n, endpoint=False) / rows
        arrays += [pa.array(np.exp(-base * (i + 1)) + rng.normal(0, 0.01, n)) for i in range(cols)]
        yield pa.record_batch(arrays, names=names)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=50)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--stream", action="store_true",
                        help="generate batches lazily (peak RSS then shows the export's own memory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "wh"
        run = {"entity": "bench", "project": "p", "run_id": "r1", "history_line_count": args.rows,
               "last_step": args.rows - 1}
        # Generation cost measured apart, so the export figure is the warehouse's own.
        t0 = time.perf_counter()
        data = batches(args.rows, args.cols, args.batch)
        if not args.stream:
            data = list(data)
        gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = export_run(root, run, data)
        export_s = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        data_mb = 0 if args.stream else sum(b.nbytes for b in data) / 2**20
        hist_mb = sum(p.stat().st_size for p in (root / "history").rglob("*.parquet")) / 2**20
        long_mb = sum(p.stat().st_size for p in (root / "metrics").rglob("*.parquet")) / 2**20
        if args.stream:
            print(f"input: {args.rows:,} rows × {args.cols} float columns, generated lazily "
                  "(export time includes generation)")
        else:
            print(f"input: {args.rows:,} rows × {args.cols} float columns in {len(data)} batches "
                  f"({data_mb:.0f} MiB in memory, generated in {gen:.1f} s)")
        print(f"export_run: {export_s:.2f} s = {args.rows / export_s:,.0f} rows/s "
              f"({args.rows * args.cols / export_s / 1e6:.1f} M values/s); history {hist_mb:.0f} MiB, "
              f"long-form metrics {long_mb:.0f} MiB; {result.history.parts} part(s); peak RSS {rss:.0f} MiB "
              f"({'streamed input' if args.stream else 'input held in memory included'})")
        t0 = time.perf_counter()
        refresh_catalog(root)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        info = refresh_catalog(root)
        print(f"refresh_catalog: {first:.3f} s first, {time.perf_counter() - t0:.3f} s again ({info['runs']} run)")
        con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
        for sql in ('SELECT avg("train/metric_7") FROM history',
                    "SELECT key, avg(value) FROM metrics GROUP BY key ORDER BY key LIMIT 1"):
            t0 = time.perf_counter()
            con.execute(sql).fetchall()
            print(f"{time.perf_counter() - t0:.3f} s  {sql}")
        con.close()


if __name__ == "__main__":
    main()
