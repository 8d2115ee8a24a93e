"""Bytes of a contact file: counting, size limit, gzip, re-reading for the validation pre-pass,
and the text encoding (docs/contact-files.md "Formats": UTF-8 with or without BOM, UTF-16 with BOM,
otherwise Windows-1252, which the summary notes).

Nothing here reads a whole file into memory: streams are read in 64 KiB pieces.
"""

from __future__ import annotations

import codecs
import gzip
import io
import tempfile
import zlib
from collections.abc import Callable
from typing import BinaryIO

from .model import FileRejected

__all__ = ["GZIP_ERRORS", "Source", "TooCompressed", "TooLarge", "TooLargeDecompressed", "detect_encoding", "gzip_reason"]

_CHUNK = 1 << 16
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def _cp1252_undefined(err: UnicodeError) -> tuple[str, int]:
    # Python's cp1252 leaves 0x81 0x8D 0x8F 0x90 0x9D undefined; Excel and browsers map
    # them to the C1 control with the same number. Decoding Windows-1252 never fails.
    if isinstance(err, UnicodeDecodeError):
        return err.object[err.start:err.end].decode("latin-1"), err.end
    raise err


codecs.register_error("phonon-cp1252", _cp1252_undefined)


class TooLarge(Exception):
    pass


class TooLargeDecompressed(TooLarge):
    """The decompressed bytes passed ``max_decompressed_bytes`` (a gzip bomb, or just too big)."""


class TooCompressed(TooLarge):
    """The decompressed bytes passed ``max_compression_ratio`` times the compressed bytes."""


class _Counting(io.RawIOBase):
    """Raw stream over any object with ``read(n)``; counts bytes, enforces a limit, may tee.

    ``ratio``: (the compressed stream's counter, the highest ratio, the count from which it is
    checked): this stream's bytes may not pass ratio times the other's."""

    def __init__(self, stream, limit: int | None, tee: BinaryIO | None = None,
                 too_large: type[TooLarge] = TooLarge,
                 ratio: tuple[_Counting, float, int] | None = None) -> None:
        self._stream = stream
        self._limit = limit
        self._tee = tee
        self._too_large = too_large
        self._ratio = ratio
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._stream.read(len(b))
        if not data:
            return 0
        n = len(data)
        b[:n] = data
        self.count += n
        if self._tee is not None:
            self._tee.write(data)
        if self._limit is not None and self.count > self._limit:
            raise self._too_large()
        if self._ratio is not None:
            compressed, ratio, floor = self._ratio
            if self.count > floor and self.count > ratio * compressed.count:
                raise TooCompressed()
        return n


class _Prefixed(io.RawIOBase):
    def __init__(self, prefix: bytes, rest) -> None:
        self._prefix = memoryview(prefix)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._rest.read(len(b))
        b[: len(data)] = data
        return len(data)


class Opened:
    """One pass over the file: ``data`` is the decompressed byte stream."""

    def __init__(self, counting: _Counting, data: BinaryIO) -> None:
        self.counting = counting
        self.data = data
        self.text: io.TextIOBase | None = None


class Source:
    """Opens the file as many times as the reader needs (a pre-pass, then the row pass).

    The first pass reads ``stream``. Later passes use, in this order of preference,
    ``stream_factory()`` (e.g. a new S3 GetObject), ``stream.seek(start)`` when the stream is
    seekable, or a spooled temporary copy written while the first pass read (the fallback
    for one-shot streams such as an S3 StreamingBody without a factory).
    """

    def __init__(self, stream, gz_by_name: bool, max_bytes: int | None,
                 stream_factory: Callable[[], object] | None = None, max_decompressed: int | None = None,
                 max_ratio: float | None = None, min_ratio_check: int = 0) -> None:
        self._stream = stream
        self._max_decompressed = max_decompressed
        self._max_ratio = max_ratio
        self._min_ratio_check = min_ratio_check
        self._factory = stream_factory
        self._limit = max_bytes
        self._gz_by_name = gz_by_name
        self._spool: BinaryIO | None = None
        self._start: int | None = None
        self._first: _Counting | None = None
        self._drained = False
        self._opened_streams: list = []  # from stream_factory: ours to close
        self.gz = gz_by_name
        self.notes: list[str] = []
        if stream_factory is None:
            try:
                if stream.seekable():
                    self._start = stream.tell()
            except (AttributeError, OSError, ValueError):
                self._start = None
            if self._start is None:
                self._spool = tempfile.TemporaryFile(prefix="phonon-contacts-")  # noqa: SIM115 - closed by close()

    def open(self) -> Opened:
        if self._first is None:
            counting = self._first = _Counting(self._stream, self._limit, self._spool)
        else:
            if self._factory is not None:
                raw = self._factory()
                self._opened_streams.append(raw)
            elif self._start is not None:
                self._stream.seek(self._start)
                raw = self._stream
            else:
                assert self._spool is not None
                self._drain_first()
                self._spool.seek(0)
                raw = self._spool
            counting = _Counting(raw, self._limit)
        buffered = io.BufferedReader(counting, _CHUNK)
        magic = buffered.peek(2)[:2]
        is_gzip = magic == b"\x1f\x8b"
        if self._first is counting:
            if self._gz_by_name and not is_gzip and magic:
                raise FileRejected("not valid gzip: the file name ends in .gz but the content is not "
                                   "gzip-compressed")
            if is_gzip and not self._gz_by_name:
                self.notes.append("gzip-compressed although the name does not end in .gz: decompressed")
            self.gz = is_gzip
        data: BinaryIO = gzip.GzipFile(fileobj=buffered, mode="rb") if self.gz else buffered  # type: ignore[assignment]
        if self.gz and (self._max_decompressed is not None or self._max_ratio is not None):
            # Counted after decompression: a small gzip may hold gigabytes (10 MB of gzip -> 10 GiB),
            # and the ratio to the compressed bytes read so far stops a bomb early.
            ratio = (counting, self._max_ratio, self._min_ratio_check) if self._max_ratio is not None else None
            data = io.BufferedReader(_Counting(data, self._max_decompressed, too_large=TooLargeDecompressed,
                                               ratio=ratio), _CHUNK)  # type: ignore[assignment]
        return Opened(counting, data)

    def _drain_first(self) -> None:
        """Spool mode: copy what the first pass left unread, so the spool is the whole file."""
        first = self._first
        assert first is not None
        if self._drained:
            return
        buf = bytearray(_CHUNK)
        while first.readinto(buf):
            pass
        self._drained = True

    def close(self) -> None:
        for s in self._opened_streams:
            close = getattr(s, "close", None)
            if close is not None:
                close()
        self._opened_streams.clear()
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def gzip_reason(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "not valid gzip: the compressed file is truncated"
    if isinstance(exc, gzip.BadGzipFile) and str(exc).startswith("Not a gzipped file"):
        # the gzip module's message quotes the two bytes it found: file content, left out
        return "not valid gzip: bytes after the compressed content are not gzip-compressed"
    return f"not valid gzip: {exc}"


def detect_encoding(head: bytes) -> tuple[str, int]:
    """(codec, BOM length) from the first bytes; raises FileRejected for binary content.

    UTF-8 is the first guess for a file without BOM; the pre-pass proves it or falls back to
    Windows-1252.
    """
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", 3
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32", 4
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", 2
    if head.startswith(b"PK\x03\x04"):
        raise FileRejected("not decodable as text: this is a zip archive or an Excel workbook (.xlsx); "
                           "save the sheet as CSV UTF-8 and upload that")
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise FileRejected("not decodable as text: this is an old Excel workbook (.xls); save the sheet as "
                           "CSV UTF-8 and upload that")
    if head.startswith(b"%PDF"):
        raise FileRejected("not decodable as text: this is a PDF document")
    nul = head.count(0)
    if 0 in head[:4] or (nul >= 4 and nul * 16 >= len(head)):  # binary or BOM-less UTF-16; a stray NUL is text
        raise FileRejected("not decodable as text: it contains NUL bytes (binary data, or UTF-16 without "
                           "a byte-order mark); save it as CSV UTF-8")
    return "utf-8-sig", 0


def ensure_head(opened: Opened, n: int = 8192) -> bytes:
    """Read up to ``n`` bytes and put them back in front of ``opened.data``."""
    chunks = []
    got = 0
    while got < n:
        b = opened.data.read(n - got)
        if not b:
            break
        chunks.append(b)
        got += len(b)
    head = b"".join(chunks)
    opened.data = io.BufferedReader(_Prefixed(head, opened.data), _CHUNK)  # type: ignore[assignment]
    return head
