"""The library floor of an export: CPU seconds that the libraries alone spend on the work any
export of these runs into this warehouse layout must do, measured on the same data after
run_pipeline's export (untimed there). With the HTTP client's CPU (the `wire` contender) and
the emulator's serving, it bounds from below what the machine must do at the target speed.

- parsing (live pages only): each 1,000-row page of the runs' history, as served, read by the
  cheaper of pyarrow.json (the NDJSON reader run_pipeline uses, a key of mixed kinds split by
  kind in the bytes first, as `read_page` does) and orjson (rows as Python dicts, no columns
  built yet, so a lower bound), plus decoding the page's GraphQL answer;
- writing: every Parquet file the export wrote, written again from memory with the
  warehouse's own settings (`write_options`), each file once.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

PAGE_ROWS = 1000
TABLES = ("history", "metrics", "system_metrics", "runs", "run_config", "run_summary")


def parse_floor(history_files: list[str]) -> float:
    """CPU seconds to decode and parse every page of these history.jsonl files (see above)."""
    import orjson

    from run_pipeline.client.ndjson_page import read_page

    total = 0.0
    for path in history_files:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
        for i in range(0, len(lines), PAGE_ROWS):
            page = lines[i:i + PAGE_ROWS]
            answer = orjson.dumps({"data": {"project": {"run": {"history": [s.decode() for s in page]}}}})
            start = time.process_time()
            strings = orjson.loads(answer)["data"]["project"]["run"]["history"]
            decoded = time.process_time() - start
            data = "\n".join(strings).encode()
            start = time.process_time()
            read = read_page(data)
            arrow = time.process_time() - start if read is not None else float("inf")
            start = time.process_time()
            try:
                orjson.loads(b"[" + b",".join(page) + b"]")
                plain = time.process_time() - start
            except orjson.JSONDecodeError:  # NaN/Infinity tokens: orjson cannot read the page
                plain = float("inf")
            if min(arrow, plain) == float("inf"):
                raise SystemExit(f"{path}: neither pyarrow.json nor orjson reads page {i // PAGE_ROWS}")
            total += decoded + min(arrow, plain)
    return total


def write_floor(warehouse: str) -> tuple[float, int]:
    """CPU seconds to write every Parquet file of the warehouse's tables again, and how many."""
    import pyarrow.parquet as pq

    from run_pipeline.warehouse.parquet import write_options

    total, files = 0.0, 0
    with tempfile.TemporaryDirectory(prefix="run_pipeline-floor-") as scratch:
        target = os.path.join(scratch, "again.parquet")
        for table in TABLES:
            for path in sorted((Path(warehouse) / table).rglob("*.parquet")):
                data = pq.ParquetFile(path).read()
                start = time.process_time()
                pq.write_table(data, target, **write_options(data.schema))
                total += time.process_time() - start
                files += 1
    return total, files
