"""`run-pipeline emulator` and `run-pipeline sample-data`: the local W&B-compatible server and
the dataset generator."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .checks import check_dataset, check_output_dir, check_port_free
from .codes import EXIT_OK, EXIT_USAGE, CliError


def cmd_emulator(args: argparse.Namespace) -> int:
    from run_pipeline.emulator.server import DEFAULT_API_KEY, EmulatorServer

    if args.dataset is not None and not check_dataset(args.dataset):
        print(f"run-pipeline: warning: --dataset {args.dataset} holds no runs: the server starts empty",
              file=sys.stderr, flush=True)
    from run_pipeline.emulator.profiles import check_profiles

    options = {}
    for item in args.profile_option or []:
        key, _, value = item.partition("=")
        try:
            options[key] = float(value)
        except ValueError:
            raise CliError(EXIT_USAGE, f"--profile-option {item!r}: expected NAME=SECONDS") from None
    try:
        check_profiles(args.profile or [], options)
    except ValueError as exc:
        raise CliError(EXIT_USAGE, str(exc)) from None
    check_port_free(args.host, args.port)
    try:
        server = EmulatorServer(args.dataset, api_key=args.api_key or DEFAULT_API_KEY, host=args.host,
                                port=args.port, parquet_mode=args.parquet_mode, rate_limit=args.rate_limit,
                                profiles=args.profile or [], profile_options=options)
    except (ValueError, OSError) as exc:
        raise CliError(EXIT_USAGE, f"--dataset {args.dataset}: {exc}") from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.start()
    except RuntimeError:
        server.stop()
        raise CliError(EXIT_USAGE, f"the emulator could not listen on {args.host}:{args.port} "
                                   "(--port 0 takes a free one)") from None
    try:
        print(server.base_url, flush=True)
        if not args.api_key:
            print(f"api key: {DEFAULT_API_KEY} (the built-in local key; pass --api-key to choose one)",
                  file=sys.stderr, flush=True)
        stop.wait()
    finally:
        server.stop()
    return EXIT_OK


def cmd_sample_data(args: argparse.Namespace) -> int:
    from run_pipeline.emulator.hostile import generate_hostile
    from run_pipeline.emulator.sample import generate

    check_output_dir(Path(args.dir), "DIR")
    if args.messy or args.wide:
        from run_pipeline.emulator.messy import generate_shaped_run

        for shape in [s for s in ("messy", "wide") if getattr(args, s)]:
            run = generate_shaped_run(Path(args.dir) / args.entity / shape / f"{shape[:4]}run1",
                                      shape=shape, steps=args.steps, seed=args.seed)
            print(f"wrote the {shape} run {run.run_id} ({run.history_rows} history rows, {run.keys} keys) "
                  f"to {run.run_dir}")
        return EXIT_OK
    if args.hostile:
        hostile = generate_hostile(Path(args.dir), seed=args.seed)
        refused = sum(1 for r in hostile.runs if r.refused)
        print(f"wrote the hostile corpus: {len(hostile.runs)} runs ({hostile.history_rows} history rows; "
              f"{refused} must be refused by an exporter) to {hostile.root}")
        return EXIT_OK
    summary = generate(Path(args.dir), entity=args.entity, projects=args.projects, runs=args.runs,
                       steps=args.steps, metrics=args.metrics, seed=args.seed)
    print(f"wrote {summary.runs} runs ({summary.history_rows} history rows) in {len(summary.projects)} projects "
          f"of entity {summary.entity!r} to {summary.root}")
    return EXIT_OK
