"""`Run`'s history methods, as W&B names them: `history` (sampled), `scan_history` (every row,
W&B's key semantics), `lastHistoryStep`, and the bulk-export readers `iter_history_batches`
and `iter_system_metrics_batches`. The reading itself is `history.HistoryReader`'s."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from run_pipeline.client import queries
from run_pipeline.client.batches import parse_rows
from run_pipeline.client.history import HistoryReader, HistoryScan
from run_pipeline.client.windows import downsample

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from run_pipeline.client.transport import Transport


class RunHistory:
    """The history method group of `Run` (mixed into it)."""

    _transport: Transport
    _history_reader: HistoryReader | None
    _run_field: Callable[..., dict[str, Any]]
    entity: str
    project: str
    id: str

    @property
    def lastHistoryStep(self) -> int:  # noqa: N802 - W&B's name
        """The last logged step, read fresh from the server (-1 when there is none)."""
        return self._history().last_step()

    def _history(self) -> HistoryReader:
        """The run's history reader (one per run: it keeps what the last plan learned)."""
        reader = self._history_reader
        if reader is None or reader.run_id != self.id:
            reader = self._history_reader = HistoryReader(
                self._transport, self.entity, self.project, self.id)
        return reader

    def history(self, samples: int = 500, keys: list[str] | None = None, x_axis: str = "_step",
                pandas: bool = True, stream: str = "default") -> pd.DataFrame | list[dict]:
        """Sampled history (at most `samples` rows): a pandas DataFrame when `pandas`, else a
        list of dicts. `stream="system"` gives system metrics. With `keys`, only rows that
        have all of them (W&B's `sampledHistory`).

        When the server lists the run's exported Parquet, the rows are read from it (and the
        live tail above it) and sampled here: a server that moved the run's steps to Parquet
        may no longer answer for them live."""
        if keys is not None and not isinstance(keys, list):
            raise ValueError("keys must be a list of strings")
        if keys and stream != "default":
            raise ValueError("stream must be 'default' when specifying keys")
        reader = self._history()
        plan = reader.plan() if stream == "default" else None
        if plan is not None and plan.parquet_urls:
            wanted = ([x_axis] + [k for k in keys if k != x_axis]) if keys else None
            rows = downsample(list(reader.scan_rows(wanted, 1000, None, None, plan=plan)), samples)
        elif keys:
            spec = json.dumps({"keys": [x_axis] + list(keys), "samples": samples})
            run = self._run_field(queries.RUN_SAMPLED_HISTORY, specs=[spec])
            rows = (run.get("sampledHistory") or [[]])[0] or []
        else:
            field = "history" if stream == "default" else "events"
            query = queries.RUN_FULL_HISTORY if field == "history" else queries.RUN_FULL_EVENTS
            rows = parse_rows(self._run_field(query, samples=samples).get(field) or [])
        if pandas:
            try:
                import pandas as pd  # the optional `pandas` extra, needed only here
            except ImportError:
                raise ImportError("Run.history() returns a pandas DataFrame: install pandas "
                                  "(pip install 'run_pipeline[pandas]'), or pass pandas=False for a list "
                                  "of dicts") from None
            return pd.DataFrame.from_records(rows)
        return rows

    def scan_history(self, keys: list[str] | None = None, page_size: int = 1000,
                     min_step: int | None = None, max_step: int | None = None) -> HistoryScan:
        """Every history row (a dict per step) in [min_step, max_step), paged by step windows.

        W&B's documented meaning: with `keys`, only rows that have **all** of those keys
        are returned (sparse metrics logged at other steps vanish), and each row holds just
        `_step` and those keys. Rows come from the run's exported Parquet when the server lists
        it, then from live pages above its last step. For a complete export use
        `iter_history_batches()`.
        """
        if keys is not None and not isinstance(keys, list):
            raise ValueError("keys must be a list of strings")
        return HistoryScan(self._history(), keys, page_size, min_step, max_step)

    def iter_history_batches(self, min_step: int | None = None, max_step: int | None = None,
                             page_size: int = 1000, *, parquet_batch_rows: int = 8_192,
                             use_parquet: bool = True,
                             tmp_dir: str | os.PathLike | None = None,
                             with_system_metrics: bool = False) -> Iterator[pa.RecordBatch]:
        """The run's full history as Arrow record batches, steps in [min_step, max_step).

        Reads W&B's exported Parquet (`parquetHistory`) when offered, then pages the live tail
        above the last exported step; otherwise pages `history(minStep, maxStep)`. Nothing is
        sampled or dropped; see `run_pipeline.client.history` for the column/type contract.
        `with_system_metrics`: the first request also fetches the system metrics, which the
        next `iter_system_metrics_batches()` then reads without a request of its own.
        """
        return self._history().iter_batches(
            min_step, max_step, page_size, parquet_batch_rows, tmp_dir, use_parquet, with_system_metrics)

    def iter_system_metrics_batches(self, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
        """Every system-metric row (`events`, not a sample) as record batches; the row count is
        checked against the server's `eventsLineCount`."""
        return self._history().iter_system_batches(batch_rows)
