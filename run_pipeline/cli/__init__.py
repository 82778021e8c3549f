"""`run-pipeline`: the command line. Parses and checks arguments, reads the environment (and
`.env`), and calls the package's public objects; it holds no pipeline logic of its own.
Every failure ends in one line on stderr and an exit code from `codes.py`."""

from __future__ import annotations

import logging
import sys
import traceback

from .codes import EXIT_BUG, EXIT_INTERRUPTED, CliError
from .config import load_dotenv_file
from .parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    load_dotenv_file()
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    # Retries and other warnings stay visible; --debug adds the rest.
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="run-pipeline: %(message)s")
    try:
        return args.func(args)
    except CliError as exc:
        return _fail(exc.code, exc.message)
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted; nothing half-written is visible: run the same command "
                                       "again to resume")
    except BrokenPipeError:  # e.g. `run-pipeline query ... | head`
        sys.stderr.close()
        return 0
    except Exception as exc:  # the last net: no traceback unless asked for
        if debug:
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        return _fail(EXIT_BUG, f"unexpected {type(exc).__name__}: {first} (run with --debug for the traceback)")


def _fail(code: int, message: str) -> int:
    print(f"run-pipeline: error: {message}", file=sys.stderr, flush=True)
    return code
