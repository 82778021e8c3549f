"""`run-pipeline query`: SQL (argument, --file or a named --example) over the warehouse views,
printed as a table that fits the terminal, CSV, JSON, JSON lines or Parquet."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import config
from .checks import check_sql
from .codes import EXIT_OK, EXIT_QUERY, EXIT_USAGE, EXIT_WAREHOUSE, CliError
from .output import format_table, write_csv, write_json


def list_examples() -> str:
    from run_pipeline.warehouse import EXAMPLES

    lines = ["examples (run-pipeline query --example NAME [--param key=value ...]):"]
    for name, example in EXAMPLES.items():
        params = " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in example.params.items())
        lines += [f"  {name}", f"      {example.describe()}", f"      parameters: {params}"]
    return "\n".join(lines) + "\n"


def _sql_and_params(args: argparse.Namespace) -> tuple[str, dict, str | None]:
    from run_pipeline.warehouse import EXAMPLES

    given = [flag for flag, value in (("SQL", args.sql), ("--file", args.file), ("--example", args.example)) if value]
    if len(given) != 1:
        what = "give one of" if not given else f"give only one of ({', '.join(given)} given):"
        raise CliError(EXIT_USAGE, f"{what} the SQL text, --file FILE or --example NAME (--example list shows them)")
    params = dict(args.param or [])
    if args.example:
        example = EXAMPLES.get(args.example)
        if example is None:
            raise CliError(EXIT_USAGE, f"no example {args.example!r}: one of {', '.join(EXAMPLES)} "
                                       "(--example list describes them)")
        extra = sorted(set(params) - set(example.params))
        if extra:
            raise CliError(EXIT_USAGE, f"example {args.example} takes no parameter {', '.join(extra)} "
                                       f"(it takes {', '.join(example.params)})")
        values = {k: _typed(v, example.params[k]) for k, v in params.items()}
        return example.sql, {**example.params, **values}, example.describe(values)
    if params:
        raise CliError(EXIT_USAGE, "--param goes with --example; in your own SQL write the values in")
    if args.file:
        if args.file == "-":
            return check_sql(sys.stdin.read(), "standard input"), {}, None
        path = Path(args.file)
        try:
            text = path.read_text(encoding="utf-8")
        except IsADirectoryError:
            raise CliError(EXIT_USAGE, f"--file {path} is a directory, not a SQL file") from None
        except OSError as exc:
            raise CliError(EXIT_USAGE, f"--file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CliError(EXIT_USAGE, f"--file {path} is not UTF-8 text") from None
        return check_sql(text, f"--file {path}"), {}, None
    return check_sql(args.sql, "the SQL text"), {}, None


def _typed(text: str, default):
    """An example parameter given on the command line, typed like its default."""
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise CliError(EXIT_USAGE, f"parameter value {text!r} must be true or false")
        return text.lower() == "true"
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise CliError(EXIT_USAGE, f"parameter value {text!r} must be a whole number") from None
    return text


def _check_output(path: str) -> None:
    if os.path.isdir(path):
        raise CliError(EXIT_USAGE, f"--output {path} is a directory, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CliError(EXIT_USAGE, f"--output {path}: No such file or directory")
    if not os.access(folder, os.W_OK):
        raise CliError(EXIT_USAGE, f"--output {path}: {folder} is not writable")


def param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    return key, value


def cmd_query(args: argparse.Namespace) -> int:
    import duckdb

    from run_pipeline.warehouse import Warehouse, WarehouseError
    from run_pipeline.warehouse.reading import execute

    if args.example == "list":
        sys.stdout.write(list_examples())
        return EXIT_OK
    sql, params, title = _sql_and_params(args)
    if args.format == "parquet" and not args.output:
        raise CliError(EXIT_USAGE, "--format parquet writes a file: add --output FILE")
    if args.output:
        _check_output(args.output)
    root, source = config.warehouse_root(args.warehouse)
    local = "://" not in root
    if local and not os.path.isfile(os.path.join(root, "warehouse.duckdb")):
        raise CliError(EXIT_WAREHOUSE, f"no warehouse catalog at {root}/warehouse.duckdb ({source}): run "
                                       "`run-pipeline demo` or `run-pipeline export` first, or pass --warehouse")
    try:
        opts = None if local else config.s3_options()
        warehouse = Warehouse(root, filesystem=None if local else config.pyarrow_s3(opts))
        con = warehouse.connect(s3_secret=opts)
    except (WarehouseError, OSError, duckdb.Error) as exc:
        raise CliError(EXIT_WAREHOUSE, f"warehouse {root} ({source}) cannot be opened: "
                                       f"{str(exc).splitlines()[0]}") from None
    with con:
        try:
            if args.format == "parquet":
                import pyarrow.parquet as pq

                # Streamed from a relation: a result larger than memory still lands.
                relation = con.sql(sql, params=params or None)
                if relation is None:
                    raise CliError(EXIT_USAGE, "--format parquet needs SQL that returns rows")
                reader = relation.to_arrow_reader() if hasattr(relation, "to_arrow_reader") else relation.record_batch()
                written = 0
                with pq.ParquetWriter(args.output, reader.schema) as writer:
                    for batch in reader:
                        writer.write_batch(batch)
                        written += batch.num_rows
                print(f"wrote {written:,} rows to {args.output}", file=sys.stderr)
                return EXIT_OK
            cursor = execute(con, sql, params or None)  # again if an export replaced a file under it
            if cursor.description is None:
                print("(no result)")
                return EXIT_OK
            columns = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        except duckdb.Error as exc:
            raise CliError(EXIT_QUERY, f"query failed: {str(exc).strip().splitlines()[0]}") from None
    out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
    try:
        if args.format == "table":
            if title:
                out.write(title + "\n")
            out.write(format_table(columns, rows, width=None if out is sys.stdout else 10**9))
        elif args.format == "csv":
            write_csv(columns, rows, out)
        else:
            write_json(columns, rows, out, lines=args.format == "jsonl")
    finally:
        if out is not sys.stdout:
            out.close()
    return EXIT_OK
