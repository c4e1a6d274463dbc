"""A compact in-memory index of the spool's chunks: four int64 arrays (32 bytes per chunk, not ~170)."""
from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass
from typing import Iterator


@dataclass(slots=True)
class Chunk:
    """One stored append: sequence range, append time (ns) and encoded size."""

    first: int
    last: int
    t_ns: int
    nbytes: int


class ChunkIndex:
    """Chunks in sequence order; ``last`` is strictly increasing, so lookups are binary searches."""

    __slots__ = ("_first", "_last", "_t", "_n")

    def __init__(self) -> None:
        self._first = array("q")
        self._last = array("q")
        self._t = array("q")
        self._n = array("q")

    def __len__(self) -> int:
        return len(self._last)

    def __bool__(self) -> bool:
        return len(self._last) > 0

    def __getitem__(self, i: int) -> Chunk:
        return Chunk(self._first[i], self._last[i], self._t[i], self._n[i])

    def __iter__(self) -> Iterator[Chunk]:
        for i in range(len(self._last)):
            yield Chunk(self._first[i], self._last[i], self._t[i], self._n[i])

    def append(self, ch: Chunk) -> None:
        """Add the newest chunk."""
        self._first.append(ch.first)
        self._last.append(ch.last)
        self._t.append(ch.t_ns)
        self._n.append(ch.nbytes)

    def pop(self, i: int) -> Chunk:
        """Remove and return the chunk at index i."""
        ch = self[i]
        for a in (self._first, self._last, self._t, self._n):
            del a[i]
        return ch

    def del_prefix(self, n: int) -> None:
        """Remove the n oldest chunks."""
        for a in (self._first, self._last, self._t, self._n):
            del a[:n]

    def after(self, seq: int) -> int:
        """Index of the first chunk whose last sequence number is above seq."""
        return bisect.bisect_right(self._last, seq)
