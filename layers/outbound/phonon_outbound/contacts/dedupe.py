"""Duplicate client-identifiers inside one file, in bounded memory.

docs/contact-files.md "Identifiers": the first row with a client-identifier claims it
(whatever that row's own fate); later rows with the same one are REJECTED naming the first row. Remembering every identifier with
its row would cost ~100 bytes per row in Python objects, so it is done in two passes:

1. The validation pre-pass (`reader.open_contacts`) feeds a 64-bit digest of every claimed
   identifier (Python's ``hash()``, stable within one process) to :class:`DigestSpill`, which
   keeps at most ``FLUSH_EVERY`` digests in memory and writes them as sorted runs to a
   temporary file. :meth:`DigestSpill.repeated` then counts one 1/256 value range at a time
   and returns the set of digests seen more than once -- usually tiny.
2. During the row pass :class:`ClaimTracker` remembers identifier -> first row only for
   identifiers whose digest is in that set, keyed by the identifier itself, so the answer is
   exact: a digest collision only makes one more identifier tracked, never a false duplicate.

Memory: a few MB of buffers plus the repeated identifiers; disk: at most 8 bytes per row (a
run keeps each digest once).
"""

from __future__ import annotations

import os
import tempfile
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from itertools import islice
from operator import eq
from typing import IO

__all__ = ["ClaimTracker", "DigestSpill"]

FLUSH_EVERY = 1 << 16
_PARTS = 256
# Range partitions of the signed 64-bit digest space: a sorted run splits into them by bisection.
_BOUNDS = [-(1 << 63) + (k << 56) for k in range(_PARTS)] + [1 << 63]


class DigestSpill:
    """Finds the digests added more than once, holding at most ``FLUSH_EVERY`` of them in memory.

    Every ``FLUSH_EVERY`` digests are sorted (in C) and appended to one temporary file as a
    run, remembering where each of 256 value ranges starts in it. ``repeated()`` then reads
    one range of every run at a time (1/256 of the digests) and counts it.
    """

    def __init__(self) -> None:
        self._pending: list[int] = []
        self._file: IO[bytes] | None = None
        self._runs: list[tuple[int, list[int]]] = []  # (byte offset, 257 indexes into the run)
        self._within: set[int] = set()  # digests already seen twice inside one run

    def add(self, digest: int) -> None:
        self._pending.append(digest)
        if len(self._pending) >= FLUSH_EVERY:
            self._flush()

    def add_many(self, digests: Iterable[int]) -> None:
        self._pending.extend(digests)
        if len(self._pending) >= FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        run = sorted(self._pending)
        self._pending = []
        # A run is written with each digest once (its repeats are noted here): otherwise one
        # identifier on every row puts all the rows' digests in one of the 256 ranges that
        # repeated() loads at a time (25 M rows of "a": 200 MB; a 2 GB file of them: 4 GB).
        if any(map(eq, run, islice(run, 1, None))):  # adjacent equal digests, compared in C
            self._within.update(d for d, n in Counter(run).items() if n > 1)
            run = sorted(set(run))
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="phonon-ids-")  # noqa: SIM115 - closed by close()
        spool = self._file
        offset = spool.seek(0, os.SEEK_END)
        array("q", run).tofile(spool)
        spool.flush()
        self._runs.append((offset, [bisect_left(run, b) for b in _BOUNDS]))

    def repeated(self) -> set[int]:
        """Digests added more than once. Frees the buffers and the temporary file."""
        try:
            if self._file is None:
                return _repeats(self._pending)
            if self._pending:
                self._flush()
            out: set[int] = set(self._within)
            fd = self._file.fileno()
            for p in range(_PARTS):
                part = array("q")
                for offset, idx in self._runs:
                    lo, hi = idx[p], idx[p + 1]
                    if hi > lo:
                        part.frombytes(os.pread(fd, (hi - lo) * 8, offset + lo * 8))
                out |= _repeats(part)
            return out
        finally:
            self.close()

    def close(self) -> None:
        self._pending = []
        self._runs = []
        self._within = set()
        if self._file is not None:
            self._file.close()
            self._file = None


def _repeats(digests) -> set[int]:
    if len(digests) < 2 or len(set(digests)) == len(digests):
        return set()
    return {d for d, n in Counter(digests).items() if n > 1}


class ClaimTracker:
    """``claim(client_id, row)`` -> the first row that claimed it, or None when this row is first.

    ``repeated`` is the set of digests from :meth:`DigestSpill.repeated`; ``None`` means
    "no pre-pass was made": every identifier is then remembered (fine for small inputs).
    """

    __slots__ = ("_first", "_repeated")

    def __init__(self, repeated: set[int] | None) -> None:
        self._repeated = repeated
        self._first: dict[str, int] = {}

    @property
    def repeated(self) -> set[int] | None:
        return self._repeated

    def claim(self, client_id: str, row: int) -> int | None:
        if self._repeated is not None and hash(client_id) not in self._repeated:
            return None
        first = self._first.get(client_id)
        if first is None:
            self._first[client_id] = row
        return first
