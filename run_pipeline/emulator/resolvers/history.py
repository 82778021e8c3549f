"""A run's history and system-metric fields: sampled and windowed `history`, `events`,
`sampledHistory`, `parquetHistory` (exported files and the live rows above them) and the
keys and line counts."""

from __future__ import annotations

from graphql import GraphQLError

from ..dataset import parse_row
from ..records import RunRecord
from .base import store_of, urls_of

DEFAULT_SAMPLES = 500


def downsample(items: list, samples: int | None) -> list:
    """Evenly spaced items, keeping the first and the last."""
    n = len(items)
    if samples is None or samples >= n:
        return items
    if samples <= 0:
        return []
    if samples == 1:
        return [items[0]]
    return [items[round(i * (n - 1) / (samples - 1))] for i in range(samples)]


class RunHistoryFields:
    """The history fields of the Run node (mixed into `RunNode`)."""

    rec: RunRecord

    def historyLineCount(self, info):
        return len(self.rec.history)

    def eventsLineCount(self, info):
        return len(self.rec.events)

    def historyKeys(self, info, format=None):
        return self.rec.history.history_keys()

    def history(self, info, samples=None, minStep=None, maxStep=None):
        log = self.rec.history
        if minStep is None and maxStep is None:
            idx = downsample(log.window(None, None), DEFAULT_SAMPLES if samples is None else samples)
        else:
            store = store_of(info)
            floor = store.profiles.live_floor(store, self.rec)  # exported steps are Parquet only
            if floor is not None:
                minStep = floor + 1 if minStep is None else max(minStep, floor + 1)
            idx = log.window(minStep, maxStep)
            if samples is not None:
                idx = idx[: max(samples, 0)]
        return log.read_lines(idx)

    def events(self, info, samples=None):
        log = self.rec.events
        return log.read_lines(downsample(log.window(None, None), DEFAULT_SAMPLES if samples is None else samples))

    def sampledHistory(self, info, specs):
        out = []
        for spec in specs:
            if not isinstance(spec, dict) or not isinstance(spec.get("keys"), list):
                raise GraphQLError("each sampledHistory spec must be a JSON object with a 'keys' list")
            keys = list(dict.fromkeys(spec["keys"]))
            inclusive = "exclusive-maxstep" not in store_of(info).profiles
            idx = self.rec.history.window(spec.get("minStep"), spec.get("maxStep"), inclusive_max=inclusive)
            rows = []
            for line in self.rec.history.read_lines(idx):
                row = parse_row(line)
                if all(k in row for k in keys):
                    rows.append({k: row[k] for k in keys})
            out.append(downsample(rows, spec.get("samples", DEFAULT_SAMPLES)))
        return out

    def parquetHistory(self, info, liveKeys):
        store = store_of(info)
        rec = self.rec
        if store.profiles.serves_snapshots:
            snap = store.profiles.snapshot(store, rec)
            urls = [urls_of(info).parquet_url(snap.path.name, rec.run_id)] if snap else []
            floor = None if snap is None else snap.last_step + 1
            return {"parquetUrls": urls, "liveData": lambda info: self._live_data(liveKeys, floor)}
        if store.served_from_parquet(rec):
            path = store.parquet_export(rec)
            return {"parquetUrls": [urls_of(info).parquet_url(path.name, rec.run_id)], "liveData": []}
        # Built only when the query selects liveData: exporters ask for parquetUrls alone.
        return {"parquetUrls": [], "liveData": lambda info: self._live_data(liveKeys)}

    def _live_data(self, live_keys: list[str], min_step: int | None = None) -> list[dict]:
        log = self.rec.history
        idx = log.window(min_step, None)
        if list(live_keys) == ["_step"]:
            return [{"_step": log.steps[i]} for i in idx]
        return [{k: r[k] for k in live_keys if k in r} for r in log.read_rows(idx)]
