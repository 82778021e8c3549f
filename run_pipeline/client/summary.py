"""`Summary`: a run's summary metrics as a mutable mapping whose writes go through the run."""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from run_pipeline.client import queries
from run_pipeline.client.errors import WandbClientError

if TYPE_CHECKING:
    from run_pipeline.client.run import Run
    from run_pipeline.client.transport import Transport


class Summary(MutableMapping):
    """The run summary as a mutable mapping.

    `summary[k] = v` and `del summary[k]` change local state; `summary.update({...})` merges
    and persists at once; `run.update()` persists whatever was changed locally.
    """

    def __init__(self, run: Run, values: dict[str, Any], transport: Transport):
        self._run = run
        self._values = dict(values)
        self._transport = transport

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._values[key] = value

    def __delitem__(self, key: str) -> None:
        del self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def update(self, other: Any = None, /, **kwargs: Any) -> None:  # type: ignore[override]
        if other:
            self._values.update(other)
        if kwargs:
            self._values.update(kwargs)
        self.save()

    def save(self) -> None:
        """Persist the summary as it is now (all of it)."""
        data = self._transport.graphql(queries.UPSERT_SUMMARY, {
            "id": self._run.storage_id,
            "summaryMetrics": json.dumps(self._values, default=str),
        })
        bucket = (data.get("upsertBucket") or {}).get("bucket") or {}
        if not bucket.get("id"):
            raise WandbClientError(f"summary update of {'/'.join(self._run.path)} returned no run")

    def to_dict(self) -> dict[str, Any]:
        """A plain copy of the values."""
        return dict(self._values)

    def __repr__(self) -> str:
        return repr(self._values)
