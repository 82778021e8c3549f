"""`run-pipeline`: the command line. Parses arguments, reads the environment, and calls the
package's public objects; it holds no pipeline logic of its own."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

EXIT_OK = 0
EXIT_USAGE = 2


def _cmd_emulator(args: argparse.Namespace) -> int:
    from run_pipeline.emulator.server import DEFAULT_API_KEY, EmulatorServer

    server = EmulatorServer(args.dataset, api_key=args.api_key or DEFAULT_API_KEY, host=args.host, port=args.port,
                            parquet_mode=args.parquet_mode, rate_limit=args.rate_limit)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with server:
        print(server.base_url, flush=True)
        if not args.api_key:
            print(f"api key: {DEFAULT_API_KEY} (the built-in local key; pass --api-key to choose one)", file=sys.stderr, flush=True)
        stop.wait()
    return EXIT_OK


def _cmd_sample_data(args: argparse.Namespace) -> int:
    from run_pipeline.emulator.sample import generate

    summary = generate(Path(args.dir), entity=args.entity, projects=args.projects, runs=args.runs,
                       steps=args.steps, metrics=args.metrics, seed=args.seed)
    print(f"wrote {summary.runs} runs ({summary.history_rows} history rows) in {len(summary.projects)} projects "
          f"of entity {summary.entity!r} to {summary.root}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run-pipeline", description=(
        "Export Weights & Biases runs into Parquet and DuckDB. Run `run-pipeline demo` to try it with no account."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("emulator", help="serve a local W&B-compatible API over a dataset directory",
                       description="Serve a W&B-compatible API on a loopback port. Prints the base URL on one line "
                                   "once it answers; stops on SIGINT/SIGTERM.")
    p.add_argument("--dataset", type=Path, default=None,
                   help="dataset directory to serve (writes persist there); default: a fresh copy of the built-in sample")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to bind; 0 picks a free one (default 8080)")
    p.add_argument("--api-key", default=None, help="the API key clients must send (default: a built-in local key)")
    p.add_argument("--parquet-mode", choices=("auto", "live", "parquet"), default="auto",
                   help="serve history from exported Parquet for finished runs (auto), never (live) or always (parquet)")
    p.add_argument("--rate-limit", type=int, default=None, metavar="N", help="answer 429 past N requests per second")
    p.set_defaults(func=_cmd_emulator)

    p = sub.add_parser("sample-data", help="write a deterministic sample dataset in the emulator's format",
                       description="Write a deterministic, realistic W&B-like dataset (see README, 'Dataset format').")
    p.add_argument("dir", help="directory to write into")
    p.add_argument("--entity", default="demo", help="entity name (default demo)")
    p.add_argument("--projects", type=int, default=3, help="number of projects (default 3)")
    p.add_argument("--runs", type=int, default=12, help="runs per project (default 12)")
    p.add_argument("--steps", type=int, default=500, help="largest number of steps in a run (default 500)")
    p.add_argument("--metrics", type=int, default=8, help="dense train metrics per run (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_cmd_sample_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
