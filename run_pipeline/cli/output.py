"""How results reach the user: progress while exporting, and query results as a table that
fits the terminal, CSV, JSON, JSON lines or Parquet."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from typing import Any, Sequence, TextIO

ELLIPSIS = "…"


class Progress:
    """Progress bars on a terminal, plain log lines otherwise, nothing with --quiet."""

    def __init__(self, total: int, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty() and not quiet
        self.done = self.rows = 0
        self.total = total
        if self.tty:
            from tqdm import tqdm

            self.runs_bar = tqdm(total=total, desc="runs", unit="run", position=0, file=sys.stderr)
            self.rows_bar = tqdm(desc="rows", unit="row", unit_scale=True, position=1, file=sys.stderr)

    def update(self, label: str, rows: int, message: str) -> None:
        self.done += 1
        self.rows += rows
        if self.tty:
            self.runs_bar.update(1)
            self.rows_bar.update(rows)
        elif not self.quiet:
            # One write (print makes two): a Ctrl-C between them would glue the next line to this one.
            sys.stderr.write(f"[{self.done}/{self.total}] {label}: {message}\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            self.runs_bar.close()
            self.rows_bar.close()


def cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text.replace("\n", " ").replace("\t", " ")


#: Narrowest a cut column gets (a few characters and the ellipsis).
FLOOR = 6


def fit_widths(widths: list[int], total: int, gap: int = 2, floor: int = FLOOR) -> list[int]:
    """Shrink the widest columns until the row fits `total` characters (never below `floor`,
    or a column's own width when that is smaller)."""
    widths = list(widths)
    while widths and sum(widths) + gap * (len(widths) - 1) > total:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= floor:
            break
        widths[widest] -= 1
    return widths


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + ELLIPSIS


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, limit: int | None = None,
                 width: int | None = None) -> str:
    """An aligned table of at most `limit` rows, no wider than `width` (default: the terminal):
    wide cells are cut with an ellipsis, and columns that still do not fit are left out and
    counted at the end."""
    shown = [[cell(v) for v in row] for row in rows[:limit]]
    natural = [max([len(c)] + [len(r[i]) for r in shown]) for i, c in enumerate(columns)]
    total = width if width is not None else shutil.get_terminal_size((100, 24)).columns
    keep = len(columns)
    while keep > 1 and sum(min(w, FLOOR) for w in natural[:keep]) + 2 * (keep - 1) > total:
        keep -= 1
    widths = fit_widths(natural[:keep], total)
    line = lambda values: "  ".join(clip(v, w).ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in shown]
    notes = [f"{len(rows)} row{'s' if len(rows) != 1 else ''}"]
    if len(shown) < len(rows):
        notes.append(f"first {len(shown)} shown")
    if keep < len(columns):
        notes.append(f"{len(columns) - keep} more columns not shown")
    out.append(f"({', '.join(notes)})")
    return "\n".join(out) + "\n"


def write_csv(columns, rows, out: TextIO) -> None:
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows(rows)


def write_json(columns, rows, out: TextIO, *, lines: bool) -> None:
    records = (dict(zip(columns, row)) for row in rows)
    if lines:
        for record in records:
            out.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
    else:
        json.dump(list(records), out, default=str, ensure_ascii=False, indent=1)
        out.write("\n")
