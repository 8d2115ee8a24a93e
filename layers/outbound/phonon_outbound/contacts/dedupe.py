"""Duplicate client-identifiers inside one file, in bounded memory.

SPEC: the first row with a client-identifier claims it (whatever that row's own fate); later
rows with the same one are REJECTED naming the first row. Remembering every identifier with
its row would cost ~100 bytes per row in Python objects, so it is done in two passes:

1. The validation pre-pass (`reader.open_contacts`) feeds a 64-bit digest of every claimed
   identifier (Python's ``hash()``, stable within one process) to :class:`DigestSpill`, which
   buffers at most ``FLUSH_EVERY`` digests in memory and appends them, partitioned by their
   low byte, to temporary files. :meth:`DigestSpill.repeated` then sorts one partition at a time
   and returns the set of digests seen more than once -- usually tiny.
2. During the row pass :class:`ClaimTracker` remembers identifier -> first row only for
   identifiers whose digest is in that set, keyed by the identifier itself, so the answer is
   exact: a digest collision only makes one more identifier tracked, never a false duplicate.

Memory: about 1 MB of buffers plus the repeated identifiers; disk: 8 bytes per row.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from array import array

__all__ = ["ClaimTracker", "DigestSpill"]

_PARTS = 256
FLUSH_EVERY = 1 << 17


class DigestSpill:
    def __init__(self) -> None:
        self._bufs = [array("q") for _ in range(_PARTS)]
        self._pending = 0
        self._dir: str | None = None

    def add(self, digest: int) -> None:
        self._bufs[digest & 0xFF].append(digest)
        self._pending += 1
        if self._pending >= FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="phonon-ids-")
        for i, buf in enumerate(self._bufs):
            if buf:
                with open(os.path.join(self._dir, f"{i:03d}"), "ab") as f:
                    buf.tofile(f)
                self._bufs[i] = array("q")
        self._pending = 0

    def repeated(self) -> set[int]:
        """Digests added more than once. Frees the buffers and the temporary files."""
        out: set[int] = set()
        try:
            for i in range(_PARTS):
                part = self._bufs[i]
                self._bufs[i] = array("q")
                if self._dir is not None:
                    path = os.path.join(self._dir, f"{i:03d}")
                    if os.path.exists(path):
                        spilled = array("q")
                        with open(path, "rb") as f:
                            spilled.frombytes(f.read())
                        spilled.extend(part)
                        part = spilled
                if len(part) < 2:
                    continue
                ordered = sorted(part)
                prev = ordered[0]
                for d in ordered[1:]:
                    if d == prev:
                        out.add(d)
                    prev = d
        finally:
            self.close()
        return out

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class ClaimTracker:
    """``claim(client_id, row)`` -> the first row that claimed it, or None when this row is first.

    ``repeated`` is the set of digests from :meth:`DigestSpill.repeated`; ``None`` means
    "no pre-pass was made": every identifier is then remembered (fine for small inputs).
    """

    __slots__ = ("_first", "_repeated")

    def __init__(self, repeated: set[int] | None) -> None:
        self._repeated = repeated
        self._first: dict[str, int] = {}

    def claim(self, client_id: str, row: int) -> int | None:
        if self._repeated is not None and hash(client_id) not in self._repeated:
            return None
        first = self._first.get(client_id)
        if first is None:
            self._first[client_id] = row
        return first
