"""A lazy, sized, indexable sequence over a cursor-paged GraphQL connection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from run_pipeline.client.errors import WandbIncompleteDataError

T = TypeVar("T")

#: Empty pages in a row that still say `hasNextPage` before the listing is given up on.
MAX_EMPTY_PAGES = 25


class Paginator(Generic[T]):
    """Pages are fetched only when iteration or indexing needs them.

    Subclasses implement `_fetch(cursor)` returning `(objects, next_cursor, has_next, total)`.
    `len()` is the server's total (`runCount`, `fileCount`, `totalCount`), fetched with the
    first page.
    """

    def __init__(self, per_page: int):
        if per_page < 1:
            raise ValueError("per_page must be >= 1")
        self.per_page = per_page
        self.objects: list[T] = []
        self._cursor: str | None = None
        self._more = True
        self._total: int | None = None
        self._pages = 0
        self._empty_in_a_row = 0

    def _fetch(self, cursor: str | None) -> tuple[list[T], str | None, bool, int | None]:
        raise NotImplementedError

    def _load_next(self) -> bool:
        if not self._more:
            return False
        objects, cursor, has_next, total = self._fetch(self._cursor)
        self._pages += 1
        if total is not None:
            self._total = total
        self.objects.extend(objects)
        # W&B can answer an empty page that still has a next one (runs filtered out or deleted
        # behind the cursor): keep following its cursor, a bounded number of times.
        self._empty_in_a_row = 0 if objects else self._empty_in_a_row + 1
        if has_next and not objects and self._empty_in_a_row >= MAX_EMPTY_PAGES:
            raise WandbIncompleteDataError(
                f"{self!r}: {MAX_EMPTY_PAGES} empty pages in a row that each said another page "
                f"follows; {len(self.objects)} items read so far")
        self._cursor = cursor or self._cursor
        self._more = bool(has_next and (cursor or self._cursor))
        return bool(objects)

    @property
    def more(self) -> bool:
        return self._more

    def __iter__(self) -> Iterator[T]:
        i = 0
        while True:
            while i >= len(self.objects):
                if not self._more:
                    return
                self._load_next()
            yield self.objects[i]
            i += 1

    def __len__(self) -> int:
        if self._total is None and self._pages == 0:
            self._load_next()
        if self._total is None:
            while self._more:
                self._load_next()
            return len(self.objects)
        return self._total

    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            if (index.start or 0) < 0 or (index.stop is not None and index.stop < 0) \
                    or index.stop is None:
                self._load_all()
            else:
                while len(self.objects) < index.stop and self._more:
                    self._load_next()
            return self.objects[index]
        if index < 0:
            self._load_all()
        else:
            while len(self.objects) <= index and self._more:
                self._load_next()
        return self.objects[index]

    def _load_all(self) -> None:
        while self._more:
            self._load_next()
