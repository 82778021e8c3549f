"""Exit codes of `run-pipeline`, the same for every subcommand, and the error that carries one."""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_UNREACHABLE = 5
EXIT_PARTIAL = 6
EXIT_QUERY = 7
EXIT_WAREHOUSE = 8
EXIT_REFUSED = 9
EXIT_INTERRUPTED = 130

#: (code, meaning), as printed by `--help` and listed in the README.
EXIT_CODES = (
    (EXIT_OK, "done"),
    (EXIT_BUG, "unexpected error (a bug: --debug shows the traceback)"),
    (EXIT_USAGE, "bad input: a flag, a value, a file or the SQL text"),
    (EXIT_AUTH, "no W&B API key, or the server refused it"),
    (EXIT_NOT_FOUND, "unknown entity, project or run"),
    (EXIT_UNREACHABLE, "W&B server unreachable, or not a W&B server"),
    (EXIT_PARTIAL, "some runs failed or were not found (listed; re-running resumes)"),
    (EXIT_QUERY, "the query failed"),
    (EXIT_WAREHOUSE, "warehouse not usable: no catalog yet, not a directory, not writable"),
    (EXIT_REFUSED, "the W&B server refused the project lookup or the runs listing (GraphQL errors, HTTP 400)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C); re-running resumes"),
)


def exit_code_table() -> str:
    return "exit codes (every command):\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES)


class CliError(Exception):
    """One line for the user and the exit code that goes with it."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
