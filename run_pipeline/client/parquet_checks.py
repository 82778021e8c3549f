"""What an exported history Parquet file's own bytes say about it, read without downloading
or decoding it whole: whether a download is a whole Parquet file (magic bytes at both ends, a
footer that parses), and the highest `_step` its footer's statistics state."""

from __future__ import annotations

import os
import struct

import pyarrow as pa
import pyarrow.parquet as pq

from run_pipeline.client.batches import STEP


def parquet_problem(source: str | bytes, size: int) -> str:
    """Why the file at `source` (a path, or the downloaded bytes) is not a whole Parquet file
    ("" when it is)."""
    if size < 12:
        return f"{size} bytes"
    if isinstance(source, bytes):
        head, tail = source[:4], source[-4:]
    else:
        with open(source, "rb") as fh:
            head = fh.read(4)
            fh.seek(-4, os.SEEK_END)
            tail = fh.read(4)
    if head != b"PAR1" or tail != b"PAR1":
        return "no Parquet magic bytes at both ends: cut short or not Parquet"
    try:
        pq.read_metadata(pa.BufferReader(source) if isinstance(source, bytes) else source)
    except (pa.ArrowInvalid, OSError) as exc:
        return f"unreadable footer: {exc}"
    return ""


def footer_max_step(tail: bytes | None) -> int | None:
    """The highest `_step` stated by the footer in `tail` (a file's last bytes); None when the
    tail does not hold the whole footer or a row group has no `_step` statistics."""
    if not tail or len(tail) < 12 or tail[-4:] != b"PAR1":
        return None
    footer_len = struct.unpack("<I", tail[-8:-4])[0]
    if footer_len + 8 > len(tail):
        return None
    try:
        metadata = pq.read_metadata(pa.BufferReader(b"PAR1" + tail[-(footer_len + 8):]))
        index = metadata.schema.names.index(STEP)
        tops = [metadata.row_group(i).column(index).statistics for i in range(metadata.num_row_groups)]
    except (pa.ArrowException, ValueError, OSError):
        return None
    if not tops or any(t is None or not t.has_min_max for t in tops):
        return None
    return max(int(t.max) for t in tops)
