"""Contact files -> validated calls: `open_contacts(stream, filename, options)`.

Two passes over the file (docs/contact-files.md: a file is never half-sent because of a parse
error at row N; whole-file rejections must come before any row is yielded):

1. ``open_contacts`` makes a *validation pre-pass* over the whole file: size limit, gzip
   integrity, text encoding (UTF-8 proven or Windows-1252 fallback), the CSV header, JSON
   syntax and shape, the JSON file's own ``flow-id`` (wherever it stands in the object), the
   number of data rows, and the digests needed for duplicate client-identifiers
   (see ``dedupe.py``). Every whole-file rejection is raised here as ``FileRejected``.
2. ``ContactFile.rows()`` reads the file again and yields one ``ValidRow`` or ``RejectedRow``
   per data row, in input order.

The second read uses ``stream_factory()`` when given (in Lambda: a fresh S3 GetObject of the
same version), else ``seek`` on a seekable stream, else a temporary copy spooled during the
first pass. Memory stays bounded: both passes stream, and the caps of ParseOptions
(docs/contact-files.md "Limits") bound what is held at once: a line is read at most
``max_line_bytes`` at a time (``_bounded_lines``; the csv module would buffer a whole record),
a JSON value at most ``max_cell_bytes`` (``_JsonValueGuard``), the decompressed bytes at most
``max_decompressed_bytes`` (``source.py``).

No cell value reaches a reason or a note: numbers are masked (``phones.masked``), header
names are shown only when they look like names (``headers.shown_header``), the csv module's
and the JSON decoder's messages carry positions only.

Choices made here (docs/contact-files.md states them for users):
- The JSON file's own ``flow-id`` is found wherever it stands in the object (the pre-pass
  reads it all), not only before ``"calls"``.
- A column or key named like the correlation key (``OutboundRef`` or ``$flow.key.OutboundRef``,
  any case) is the pipeline's own: it is dropped, each row that had a value for it carries a
  warning (and for CSV the summary notes the column). The row is still sent.
- CSV cells are trimmed; a whitespace-only cell or JSON value adds no variable. A record whose cells are all
  blank is a blank line. A stray NUL character is text; a file starting with NUL bytes or
  full of them is binary.
- ``max_bytes`` applies to the stored bytes (compressed size for ``.gz``).

Row numbers are 1-based data rows, contiguous from 1 to ``row_count``: for CSV the header
and blank lines are not rows; for a JSON array the element number; for JSON Lines the line
number counting non-blank lines only (as in CSV, a blank line is not a row; for a file without
blank lines this is the line number).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from itertools import chain
from typing import Any

import ijson

from .dedupe import ClaimTracker, DigestSpill
from .headers import (
    FLOW_KEY_PREFIX,
    PHONE_HEADER_HELP,
    Columns,
    MappingError,
    column_label,
    flow_key_name,
    header_words,
    is_phone_header,
    is_record_id_header,
    map_header,
    maybe_phone_columns,
    shown_header,
    summarize_columns,
)
from .model import FileRejected, ParseOptions, RejectedRow, ValidRow
from .phones import SCIENTIFIC_PROBLEM, PhoneNormalizer, masked
from .source import (
    GZIP_ERRORS,
    Opened,
    Source,
    TooCompressed,
    TooLarge,
    TooLargeDecompressed,
    detect_encoding,
    ensure_head,
    gzip_reason,
)
from .starttime import StartTimeParser

__all__ = ["ContactFile", "open_contacts"]

_CSV_EXT = (".csv", ".tsv", ".txt")
_JSON_EXT = (".json",)
_JSONL_EXT = (".jsonl", ".ndjson")
_SPLIT_NUMBERS = re.compile(r"[;|]|:::")  # ':::' is how Google Contacts' CSV joins a field's values
_SEP_LINE = re.compile(r'\s*"?sep=(.)"?[,;\t]*\s*', re.IGNORECASE)
_DATA_LIKE = re.compile(r"[+(]?\d[\d ()\-.]{5,}\d|\d+(?:[.,]\d+)?[eE]\+?\d+|[^@\s]+@[^@\s]+\.[^@\s]+")
_BLANK_LINE_CHARS = " \t\r\n,;\"'"
_JSON_LINE = json.JSONDecoder(parse_float=Decimal)  # numbers as written: 9.18E+11 stays recognisable
# "9876543210 / 9123456780", "+91-98765-43210, 022 2345 6789", "9876543210 or 9123456780": a
# cell that is not one valid number is read as several when ',' '/' '&' 'or' 'and' (else
# spaces) cut it into parts of at least 7 digits each (docs/contact-files.md "Phone columns");
# "022/23456789" is one valid number and stays one, "9,876,543,210" has parts too short to be
# numbers and stays one (invalid) value.
_SPLIT_FALLBACK = re.compile(r"\s*(?:[,/&]|\s(?:or|and)\s)\s*", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
_MIN_PART_DIGITS = 7
_MIN_SEVERAL = 2 * _MIN_PART_DIGITS  # a cell shorter than this cannot hold two numbers
# An identifier as a spreadsheet's General format shows a long number: 3.15208E+18.
_EXCEL_SCI_ID = re.compile(r"[+-]?\d(?:[.,]\d+)?[eE]\+\d{1,3}")
_SCI_ID = "is in spreadsheet scientific notation, so its digits are lost"
_SCI_FIX = "format the column as text in the spreadsheet and export the file again"
_HEAD_BYTES = 8192  # looked at before the pre-pass: BOM, binary signatures, format guess
_DISCARD = 1 << 16  # the rest of an over-long line is read and dropped in pieces of this size
# Lines are bounded before the csv module sees them (_bounded_lines) and cells are checked
# against max_cell_bytes after, so the csv module's own field limit (128 KiB, process-wide)
# is lifted: otherwise it would answer first, with its own message, whatever the setting.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
MAX_NOTES = 20
# A row's reason or warnings name at most this many unusable numbers (or warnings) and count the
# rest: a cell of 10,000 bad values would otherwise make a 600 kB reason, too big for the chunk
# message that carries an ACCEPTED row's warnings (SQS: 256 KB) and for the report.
MAX_ROW_PROBLEMS = 5
# A call object sits at most 2 levels down and its keys' values rarely nest; past this depth a
# JSON file is no contact file (and its parser's memory grows with the depth).
MAX_JSON_DEPTH = 64
MAX_NOTE_CHARS = 300

Row = ValidRow | RejectedRow



_NUMBER_ONLY = re.compile(r"[+-]?\d+(?:[.,]\d+)?")
_DIGIT_RUN = re.compile(r"\d(?:[ ()\-./]{0,2}\d){6,}")  # 7+ digits, separators between them
_EMAIL_IN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _looks_like_data(cell: str) -> bool:
    """Is a cell of the first line data rather than a column name? A phone number, an e-mail
    address or a number anywhere in it (a name next to a number is a contact's, not a header):
    then no cell of the line may be shown in the rejection reason."""
    text = cell.strip()
    return bool(_DATA_LIKE.fullmatch(text) or _NUMBER_ONLY.fullmatch(text) or _DIGIT_RUN.search(text)
                or _EMAIL_IN.search(text))


def _add_new(nums: list[str], seen: set[str], more: list[str]) -> None:
    """Append the numbers of ``more`` not in ``nums`` (whose set ``seen`` is) yet, in order."""
    for d in more:
        if d not in seen:
            seen.add(d)
            nums.append(d)


def _several_numbers(token: str) -> list[str] | None:
    """The parts of a cell holding several numbers, else None."""
    for sep in (_SPLIT_FALLBACK, _SPACES):
        parts = [p for p in sep.split(token.strip()) if p]
        if len(parts) >= 2 and all(sum(c.isdigit() for c in p) >= _MIN_PART_DIGITS for p in parts):
            return parts
    return None

def open_contacts(stream, filename: str, options: ParseOptions | None = None, *,
                  stream_factory: Callable[[], object] | None = None) -> ContactFile:
    """Validate the whole file, then return a ContactFile ready to yield its rows.

    ``stream``: binary file-like read sequentially (S3 StreamingBody, open file, BytesIO).
    ``filename``: the object key or path; its base name gives the format (extensions in any
    case, ``.gz`` of each) and the generated client-identifiers.
    ``stream_factory``: optional; returns a fresh stream of the same bytes for the second pass.
    Raises ``FileRejected`` for whole-file problems.
    """
    options = options or ParseOptions()
    name = os.path.basename(filename.rstrip("/")) or filename
    kind, gz_by_name, stem = _classify_name(name)
    source = Source(stream, gz_by_name, options.max_bytes, stream_factory,
                    max_decompressed=options.max_decompressed_bytes, max_ratio=options.max_compression_ratio,
                    min_ratio_check=options.min_ratio_check_bytes)
    cf = ContactFile(source, kind, stem, options)
    cf._prefer_tab = name.lower().removesuffix(".gz").endswith(".tsv")
    try:
        cf._prepass()
    except BaseException:
        cf.close()
        raise
    return cf


def _classify_name(name: str) -> tuple[str | None, bool, str]:
    lower = name.lower()
    gz = lower.endswith(".gz")
    base = name[:-3] if gz else name
    lower_base = base.lower()
    kind: str | None = None
    for exts, k in ((_CSV_EXT, "csv"), (_JSONL_EXT, "jsonl"), (_JSON_EXT, "json")):
        for ext in exts:
            if lower_base.endswith(ext):
                kind = k
                base = base[: -len(ext)]
                break
        if kind:
            break
    if kind is None and "." in base.strip("."):
        base = base.rsplit(".", 1)[0]
    return kind, gz, base or "file"


def _cid_text(value) -> str | None:
    """A JSON client-identifier as text (strings trimmed, numbers as written), else None."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, Decimal)):
        return str(value)
    return None


def _value_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


class _Utf8Check(io.RawIOBase):
    """Passes bytes through unchanged while proving they are UTF-8 (raises UnicodeDecodeError)."""

    def __init__(self, data) -> None:
        self._data = data
        self._dec = codecs.getincrementaldecoder("utf-8")("strict")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        chunk = self._data.read(len(b))
        self._dec.decode(chunk, final=not chunk)
        b[: len(chunk)] = chunk
        return len(chunk)


class _Transcode(io.RawIOBase):
    """UTF-8 bytes from a text stream (for JSON read in another encoding)."""

    def __init__(self, text: io.TextIOBase) -> None:
        self._text = text
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = len(b)
        while len(self._pending) < n:
            s = self._text.read(n)
            if not s:
                break
            self._pending += s.encode("utf-8")
        out, self._pending = self._pending[:n], self._pending[n:]
        b[: len(out)] = out
        return len(out)


class ContactFile:
    """A validated contact file. Create it with :func:`open_contacts`."""

    def __init__(self, source: Source, kind: str | None, stem: str, options: ParseOptions) -> None:
        self._source = source
        self._kind = kind
        self._stem = stem
        self._opts = options
        self._encoding = "utf-8-sig"
        self._errors = "strict"
        self._opened: Opened | None = None
        self._repeated: set[int] | None = None
        self._cols: Columns | None = None
        self._json_prefix = "item"
        self._rows_started = False
        self._prefer_tab = False
        self._header: list[str] = []
        self._roles = _JsonRoles(options)
        self.flow_id: str | None = None
        self.notes: list[str] = []
        self._notes_seen: set[str] = set()
        self._notes_dropped = 0
        self.format: str = kind or "csv"
        self.encoding: str = "utf-8"
        self.delimiter: str | None = None
        self.row_count: int = 0  # data rows: rows(0) yields exactly this many

    # -- public --------------------------------------------------------------------------
    @property
    def bytes_read(self) -> int:
        """Bytes of the stored (possibly compressed) file consumed so far by the row pass."""
        return self._opened.counting.count if self._opened is not None else 0

    def rows(self, start_row: int = 0) -> Iterator[Row]:
        """One ValidRow | RejectedRow per data row, in order; rows <= start_row are not yielded.

        May be called once per ContactFile.
        """
        if self._rows_started:
            raise RuntimeError("rows() can be iterated only once per ContactFile")
        self._rows_started = True
        return self._rows(start_row)

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> ContactFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _note(self, note: str) -> None:
        """Adds a summary note once; at most MAX_NOTES notes of at most MAX_NOTE_CHARS each
        (the notes go into the job's item and the summary: both must stay small)."""
        if len(note) > MAX_NOTE_CHARS:
            note = note[: MAX_NOTE_CHARS - 1] + "…"
        if note in self._notes_seen:
            return
        self._notes_seen.add(note)
        if len(self.notes) < MAX_NOTES - 1:
            self.notes.append(note)
            return
        self._notes_dropped += 1
        more = f"… and {self._notes_dropped:,} more note{'s' if self._notes_dropped > 1 else ''}"
        if len(self.notes) == MAX_NOTES:
            self.notes[-1] = more
        else:
            self.notes.append(more)

    # -- pass 1 ------------------------------------------------------------------------
    def _prepass(self) -> None:
        for attempt in (1, 2):
            try:
                opened = self._source.open()
                head = ensure_head(opened, _HEAD_BYTES)
                if attempt == 1:
                    self._encoding, bom = detect_encoding(head)
                    if len(head) < _HEAD_BYTES and not head[bom:].strip():
                        raise FileRejected("empty file")
                    if self._kind is None:
                        self._kind = self.format = self._guess_kind(head[bom:])
                self._scan(opened)
                break
            except UnicodeDecodeError as exc:
                if self._encoding != "utf-8-sig" or attempt == 2:
                    label = {"utf-8-sig": "UTF-8"}.get(self._encoding, self._encoding.upper())
                    raise FileRejected(f"not decodable as text: not valid {label} ({exc.reason})") from None
                self._encoding, self._errors = "cp1252", "phonon-cp1252"
                self._note("not valid UTF-8: read as Windows-1252")
            except TooCompressed:
                raise FileRejected(f"decompressed size is more than {self._opts.max_compression_ratio:g} times the "
                                   f"compressed size (max_compression_ratio): a gzip bomb, or rows of mostly empty "
                                   f"columns; remove the empty columns, or upload the file uncompressed") from None
            except TooLargeDecompressed:
                raise FileRejected(f"decompressed size over the limit of {self._opts.max_decompressed_bytes:,} "
                                   f"bytes (max_decompressed_bytes)") from None
            except _ValueTooLong:
                raise FileRejected(f"a JSON value is longer than the limit of {self._opts.max_cell_bytes:,} "
                                   f"bytes (max_cell_bytes)") from None
            except TooLarge:
                raise FileRejected(f"larger than the configured limit of {self._opts.max_bytes:,} bytes") from None
            except GZIP_ERRORS as exc:
                raise FileRejected(gzip_reason(exc)) from None
        self.encoding = {"utf-8-sig": "utf-8", "cp1252": "windows-1252"}.get(self._encoding, self._encoding)
        self.notes[:0] = self._source.notes
        self._notes_seen.update(self._source.notes)

    @staticmethod
    def _guess_kind(head: bytes) -> str:
        text = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
        if text.startswith("["):
            return "json"
        if text.startswith("{"):
            first_line = text.split("\n", 1)[0].strip()
            try:
                obj = json.loads(first_line)
            except ValueError:
                return "json"
            return "json" if isinstance(obj, dict) and "calls" in obj else "jsonl"
        return "csv"

    def _scan(self, opened: Opened) -> None:
        if self._kind == "csv":
            self._scan_csv(opened)
        elif self._kind == "jsonl":
            self._scan_jsonl(opened)
        else:
            self._scan_json(opened)
        while opened.data.read(1 << 20):  # the gzip trailer (CRC, length) is checked at the end
            pass

    def _text(self, opened: Opened) -> io.TextIOWrapper:
        text = io.TextIOWrapper(opened.data, encoding=self._encoding, errors=self._errors, newline="")
        opened.text = text  # keeps it alive: a collected TextIOWrapper closes the stream under it
        return text

    # CSV ---------------------------------------------------------------------------
    def _lines(self, text: io.TextIOBase, budget: list[int]) -> Iterator[str]:
        return _bounded_lines(text, self._opts.max_line_bytes, budget, self._opts.max_cell_bytes)

    def _open_csv(self, opened: Opened) -> tuple[Callable[[], Iterator[list[str]]], Iterator[list[str]],
                                                  Columns, list[int]]:
        """(new_reader, reader, columns, budget). ``reader`` yields the data records; after a
        ``_LineTooLong`` it is finished and ``new_reader()`` goes on with the next line.
        ``budget[0]``: characters of the record being read; the caller zeroes it per record."""
        opts = self._opts
        text = self._text(opened)
        budget = [0]
        lines = self._lines(text, budget)
        too_long = (f"no header: the first line is longer than the limit of {opts.max_line_bytes:,} bytes "
                    f"(max_line_bytes)")
        try:
            first = next((ln for ln in lines if ln.strip(_BLANK_LINE_CHARS)), None)
            if first is None:
                raise FileRejected("empty file")
            m = _SEP_LINE.fullmatch(first.rstrip("\r\n"))
            if m is not None:
                delimiter = m.group(1)
                if delimiter == '"':  # the csv module cannot split on its quote character
                    raise FileRejected("the 'sep=' line names the double quote, which cannot separate columns")
                budget[0] = 0
                first = next((ln for ln in lines if ln.strip(_BLANK_LINE_CHARS)), None)
                if first is None:
                    raise FileRejected("no header: the file has only a 'sep=' line")
            else:
                delimiter = _sniff_delimiter(first, self._prefer_tab)
            self.delimiter = delimiter
            reader = csv.reader(chain((first,), lines), delimiter=delimiter)
            try:
                header = next(reader)
            except csv.Error as exc:
                raise FileRejected(f"no header: the first line cannot be read as CSV ({exc})") from None
        except _LineTooLong:
            raise FileRejected(too_long) from None
        budget[0] = 0
        if len(header) > opts.max_columns:
            raise FileRejected(f"the header has {len(header):,} columns, more than the limit of "
                               f"{opts.max_columns:,} (max_columns)")
        try:
            cols = map_header(header, opts.reserved_key, phone_columns=opts.phone_columns, id_column=opts.id_column)
        except MappingError as exc:
            raise FileRejected(str(exc)) from None
        if not cols.phones:
            if any(_looks_like_data(h) for h in header):
                raise FileRejected("no header: the first line looks like data (it holds a phone number, a number "
                                   "or an e-mail address); the first line must name the columns, e.g. "
                                   "client-identifier,phone")
            names = [n for n in (shown_header(h) for h in header[:50]) if n]
            shown = ", ".join(names[:20]) + (", …" if len(header) > 20 and names else "")
            found = f"the header ({shown})" if shown else "the header"
            maybe = maybe_phone_columns(header[:50])[:3]
            hint = f" (e.g. phone-columns: {maybe[0]}, if that column holds the numbers)" if maybe else ""
            raise FileRejected(f"no phone column: {found} has no phone column; name one {PHONE_HEADER_HELP}, or "
                               f"give the phone-columns mapping{hint}")
        self._header = header

        def new_reader() -> Iterator[list[str]]:
            return csv.reader(self._lines(text, budget), delimiter=delimiter)

        return new_reader, reader, cols, budget

    def _too_long_reason(self, exc: _LineTooLong) -> str:
        if exc.what == "line":
            return (f"line is longer than the limit of {self._opts.max_line_bytes:,} bytes (max_line_bytes): "
                    f"not read")
        return (f"a quoted value runs over lines for more than {self._opts.max_cell_bytes:,} bytes "
                f"(max_cell_bytes), or its closing quote is missing: row not read; the lines after it are "
                f"read as rows again")

    def _scan_csv(self, opened: Opened) -> None:
        new_reader, reader, cols, budget = self._open_csv(opened)
        self._cols = cols
        ci = cols.client
        spill = DigestSpill() if ci is not None else None
        count = 0
        cells_of_ids: list[str] = []  # raw client-identifier cells, hashed in C every 64k rows
        keep = cells_of_ids.append
        strip = str.strip
        try:
            for cells in _csv_records(new_reader, reader, budget):
                count += 1
                if spill is not None and cells.__class__ is list:
                    try:  # noqa: SIM105 - cheaper than a length test per row
                        keep(cells[ci])  # type: ignore[index]
                    except IndexError:
                        pass
                    if not count & 0xFFFF:
                        spill.add_many(map(hash, filter(None, map(strip, cells_of_ids))))
                        cells_of_ids.clear()
            if spill is not None:
                spill.add_many(map(hash, filter(None, map(strip, cells_of_ids))))
                cells_of_ids.clear()
                self._repeated = spill.repeated()
            self.row_count = count
        finally:
            if spill is not None:
                spill.close()
        for note in cols.notes:
            self._note(note)
        for note in summarize_columns(cols, self._header, self._stem):
            self._note(note)

    # JSON Lines ------------------------------------------------------------------------
    def _json_lines(self, opened: Opened) -> Iterator[str | _LineTooLong]:
        """Non-blank lines of a JSON Lines file; an over-long line is a _LineTooLong in its place."""
        text = self._text(opened)
        budget = [0]
        while True:
            try:
                for line in self._lines(text, budget):
                    budget[0] = 0
                    if line.strip():
                        yield line
                return
            except _LineTooLong as exc:
                yield exc

    def _scan_jsonl(self, opened: Opened) -> None:
        spill = DigestSpill()
        count = 0
        loads = _JSON_LINE.decode
        roles = self._roles
        try:
            for line in self._json_lines(opened):
                count += 1
                if isinstance(line, _LineTooLong):
                    continue
                try:
                    obj = loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(obj, dict) and not _too_deep(line, obj):
                    roles.saw_keys(obj)
                    cid = _cid_text(roles.cid_value(obj)[1])
                    if cid:
                        spill.add(hash(cid))
            self.row_count = count
            self._repeated = spill.repeated()
        finally:
            spill.close()
        self._json_mapping_check()

    def _json_mapping_check(self) -> None:
        missing = self._roles.missing()
        if missing and self.row_count:
            shown = shown_header(missing) or "(a name that looks like data)"
            raise FileRejected(f"the column mapping names '{shown}', which no call object of this file has")
        for note in self._roles.notes():
            self._note(note)

    # JSON --------------------------------------------------------------------------
    def _json_bytes(self, opened: Opened, check: bool):
        if self._encoding == "utf-8-sig":
            data = opened.data
            if data.peek(3)[:3] == b"\xef\xbb\xbf":  # type: ignore[attr-defined]
                data.read(3)
            raw: Any = _Utf8Check(data) if check else data
        else:
            raw = _Transcode(self._text(opened))
        return io.BufferedReader(_JsonValueGuard(raw, self._opts.max_cell_bytes), 1 << 16)

    def _scan_json(self, opened: Opened) -> None:
        # ijson.basic_parse, not ijson.parse: parse() builds each event's path ("item.item…")
        # and keeps one per open level, so its memory grows with the square of the nesting
        # depth (250 MB at 10,000 levels of '[' in a 20 kB file). Here the depth is counted
        # and capped (MAX_JSON_DEPTH) and only the few places a contact file uses are watched.
        spill = DigestSpill()
        shape: str | None = None
        flow_id = None
        calls_seen = in_calls = item_is_map = False
        count = 0
        depth = 0  # containers open around the current event
        item_depth = -1  # the depth of the call objects, once the top-level shape is known
        top_key: Any = None
        key: Any = None  # the current key of the top-level object / of the call object
        roles = self._roles
        id_keys: dict = {}  # the current object's identifier candidates: key -> value
        is_id_key = roles.is_id_key
        try:
            try:
                for event, value in ijson.basic_parse(self._json_bytes(opened, check=True), use_float=False):
                    if event == "end_map" or event == "end_array":
                        depth -= 1
                        if depth == item_depth and item_is_map and event == "end_map":
                            item_is_map = False
                            cid = _cid_text(roles.cid_value(id_keys)[1])
                            if cid:
                                spill.add(hash(cid))
                        elif depth == 1 and in_calls and event == "end_array":
                            in_calls = False
                        continue
                    if depth >= MAX_JSON_DEPTH and (event == "start_map" or event == "start_array"):
                        raise FileRejected(f"not valid JSON for a contact file: nested more than "
                                           f"{MAX_JSON_DEPTH} levels deep")
                    if depth == item_depth and (in_calls or shape == "array"):
                        count += 1
                        if event == "start_map":
                            item_is_map, id_keys, key = True, {}, None
                    elif depth == item_depth + 1 and item_is_map:
                        if event == "map_key":
                            key = value
                            roles.saw_key(value)
                        elif (event == "string" or event == "number") and is_id_key(key):
                            id_keys[key] = value
                    elif depth == 0:
                        if event == "start_map":
                            shape, item_depth = "object", 2
                        elif event == "start_array":
                            shape, item_depth = "array", 1
                        else:
                            raise FileRejected("not valid JSON for a contact file: the top level must be an "
                                               "array of call objects or an object with a \"calls\" array")
                    elif depth == 1 and shape == "object":
                        if event == "map_key":
                            top_key = value
                        elif top_key == "calls":
                            if event != "start_array":
                                raise FileRejected("not valid JSON for a contact file: \"calls\" must be an array "
                                                   "of call objects")
                            calls_seen = in_calls = True
                        elif top_key == "flow-id" and (event == "string" or event == "number") and flow_id is None:
                            flow_id = str(value).strip() or None
                    if event == "start_map" or event == "start_array":
                        depth += 1
            except ijson.JSONError as exc:
                raise FileRejected(f"not valid JSON: {_ijson_reason(exc)}") from None
            if shape == "object" and not calls_seen:
                raise FileRejected("not valid JSON for a contact file: the object has no \"calls\" array")
            self._json_prefix = "calls.item" if shape == "object" else "item"
            self.flow_id = flow_id
            self.row_count = count
            self._repeated = spill.repeated()
        finally:
            spill.close()
        self._json_mapping_check()

    # -- pass 2 -------------------------------------------------------------------------
    def _rows(self, start_row: int) -> Iterator[Row]:
        opts = self._opts
        build = _RowBuilder(opts, self._roles)
        claims = ClaimTracker(self._repeated)
        try:
            opened = self._opened = self._source.open()
            if self._kind == "csv":
                yield from self._csv_rows(*self._open_csv(opened), build, claims, start_row)
            elif self._kind == "jsonl":
                yield from self._jsonl_rows(opened, build, claims, start_row)
            else:
                items = ijson.items(self._json_bytes(opened, check=False), self._json_prefix, use_float=False)
                for n, obj in enumerate(items, 1):
                    r = build.from_object(n, obj, claims, n <= start_row, "element")
                    if r is not None:
                        yield r
        except (TooLarge, _ValueTooLong, UnicodeDecodeError, ijson.JSONError, *GZIP_ERRORS) as exc:
            # Only possible when the bytes differ from the pre-pass: pin the object version.
            what = _ijson_reason(exc) if isinstance(exc, ijson.JSONError) else type(exc).__name__
            raise FileRejected(f"the file changed while it was being read ({what})") from None
        finally:
            self.close()

    def _jsonl_rows(self, opened: Opened, build: _RowBuilder, claims: ClaimTracker,
                    start_row: int) -> Iterator[Row]:
        loads = _JSON_LINE.decode
        lineno = 0
        for line in self._json_lines(opened):
            lineno += 1
            if isinstance(line, _LineTooLong):
                if lineno > start_row:
                    yield RejectedRow(lineno, "", self._too_long_reason(line))
                continue
            try:
                obj = loads(line)
            except RecursionError:
                obj = _TOO_DEEP
            except ValueError as exc:
                if lineno > start_row:
                    yield RejectedRow(lineno, "", f"line is not valid JSON ({exc})")
                continue
            if obj is _TOO_DEEP or _too_deep(line, obj):
                if lineno > start_row:
                    yield RejectedRow(lineno, "", f"line is not valid JSON for a contact file: nested more than "
                                                  f"{MAX_JSON_DEPTH} levels deep")
                continue
            r = build.from_object(lineno, obj, claims, lineno <= start_row, "line")
            if r is not None:
                yield r

    def _csv_rows(self, new_reader: Callable[[], Iterator[list[str]]], reader: Iterator[list[str]], cols: Columns,
                  budget: list[int], build: _RowBuilder, claims: ClaimTracker, start_row: int) -> Iterator[Row]:
        # The hot loop: ~1M rows a file, so locals only, and the common case inline.
        width = cols.width
        ci = cols.client
        # An implicit CRM record id may be empty on a row (the contact is still called, with a
        # generated identifier and a warning); client-identifier and an explicit id-column
        # mapping say "this is the identifier", so an empty cell rejects the row.
        cid_is_record_id = cols.client_from == "record id"
        cid_label = column_label(ci, self._header[ci], True) if ci is not None else ""
        empty_cid = ("client-identifier is empty" if cols.client_from != "mapping"
                     else f"client-identifier is empty ({cid_label}, the id-column mapping, is empty)")
        phones = cols.phones
        si = cols.start
        keys = cols.keys
        reserved = cols.reserved
        stem = self._stem
        claim = claims.claim
        repeated = claims.repeated
        numbers_of = build.numbers
        normalize = build.phones.normalize
        finish = build.finish
        max_cell = self._opts.max_cell_bytes
        header = self._header
        delim = "tab" if self.delimiter == "\t" else f"'{self.delimiter}'"
        rowno = 0
        for cells in _csv_records(new_reader, reader, budget):
            rowno += 1
            if cells.__class__ is not list:  # a record the reader could not read: still a row
                if rowno > start_row:
                    yield RejectedRow(rowno, "", self._bad_record_reason(cells))  # type: ignore[arg-type]
                continue
            n = len(cells)
            cid_warning = None
            if ci is not None:
                cid = cells[ci].strip() if ci < n else ""
                if not cid:
                    if cid_is_record_id:  # a CRM row without its record id is still a contact
                        cid = f"{stem}-{rowno}"
                        cid_warning = f"{cid_label} is empty: identifier generated as {cid}"
                    else:
                        if rowno > start_row:
                            yield RejectedRow(rowno, "", empty_cid)
                        continue
                elif ("E+" in cid or "e+" in cid) and _EXCEL_SCI_ID.fullmatch(cid):
                    # 3.15208E+18: a long numeric id (Zoho's record ids have 19 digits) as a
                    # spreadsheet showed it; every such row would look like the same id
                    if cid_is_record_id:
                        cid = f"{stem}-{rowno}"
                        cid_warning = f"{cid_label} {_SCI_ID}: identifier generated as {cid}"
                    else:
                        if rowno > start_row:
                            yield RejectedRow(rowno, "", f"client-identifier {_SCI_ID}; {_SCI_FIX}")
                        continue
                else:
                    # ClaimTracker.claim, with its first test inlined
                    first = claim(cid, rowno) if repeated is None or hash(cid) in repeated else None
                    if first is not None:
                        if rowno > start_row:
                            yield RejectedRow(rowno, cid[:max_cell],
                                              f"duplicate client-identifier, first seen in row {first}")
                        continue
            else:
                cid = f"{stem}-{rowno}"
            if rowno <= start_row:
                continue
            if n > width:
                yield RejectedRow(rowno, cid, f"row has {n} cells but the header has {width} (a value "
                                               f"that contains the delimiter {delim} must be in double "
                                               f"quotes)")
                continue
            if max(map(len, cells)) > max_cell:
                at = next(i for i, c in enumerate(cells) if len(c) > max_cell)
                name = column_label(at, header[at], True) if at < width else f"column {at + 1}"
                yield RejectedRow(rowno, "" if at == ci else cid,
                                  f"{name} has a value longer than the limit of {max_cell:,} bytes "
                                  f"(max_cell_bytes): row not read")
                continue
            nums: list[str] = []
            seen: set[str] = set()  # beside nums: a row may give thousands (16,384 phone columns)
            problems = []
            for i, col in phones:  # numbers_of() inlined for the usual one-number cells
                if i >= n:
                    continue
                cell = cells[i]
                if not cell:
                    continue
                if ";" in cell or "|" in cell:
                    more, more_problems = numbers_of([cell], 1, [(0, col)])
                    _add_new(nums, seen, more)
                    problems.extend(more_problems)
                    continue
                cell = cell.strip()
                if cell:
                    digits, problem = normalize(cell)
                    if digits is None:
                        if len(cell) >= _MIN_SEVERAL:  # several numbers? the slow path
                            more, more_problems = numbers_of([cell], 1, [(0, col)])
                            _add_new(nums, seen, more)
                            problems.extend(more_problems)
                        else:
                            problems.append(number_problem(cell, col, problem))
                    elif digits not in seen:
                        seen.add(digits)
                        nums.append(digits)
            if n >= width:
                kv = [{"name": name, "value": v} for i, name in keys if (v := cells[i].strip())]
            else:
                kv = [{"name": name, "value": v} for i, name in keys if i < n and (v := cells[i].strip())]
            warnings = None
            if reserved:
                for i, written in reserved:
                    if i < n and cells[i].strip():
                        warnings = [f"column '{written}' ignored: {build.reserved_key} is reserved for "
                                    f"the pipeline's own tracking reference"]
            if cid_warning is not None:
                warnings = [*warnings, cid_warning] if warnings else [cid_warning]
            start = cells[si].strip() if si is not None and si < n else ""
            if nums and not start and not problems and warnings is None:
                yield ValidRow(rowno, cid, {"client-identifier": cid, "contact-numbers": nums, "keys": kv}, [])
            else:
                yield finish(rowno, cid, nums, problems, phones, start, kv, warnings)

    def _bad_record_reason(self, err: csv.Error | _LineTooLong) -> str:
        if isinstance(err, _LineTooLong):
            return self._too_long_reason(err)
        return f"row cannot be read as CSV ({_csv_error(err)})"


def _csv_records(new_reader: Callable[[], Iterator[list[str]]], reader: Iterator[list[str]],
                 budget: list[int]) -> Iterator[list[str] | csv.Error | _LineTooLong]:
    """The records of a CSV file for both passes (the pre-pass and the rows): non-blank
    records as lists of cells, and in place of a record the reader could not read, its error
    (`csv.Error`: the reader goes on with the next record; `_LineTooLong`: the reader ended
    with it and a new one goes on with the next line). Blank records are skipped."""
    while True:
        try:
            for cells in reader:
                budget[0] = 0
                if not cells:
                    continue
                c0 = cells[0]
                if (not c0 or c0.isspace()) and not "".join(cells).strip():
                    continue
                yield cells
            return
        except csv.Error as exc:
            budget[0] = 0
            yield exc
        except _LineTooLong as exc:
            reader = new_reader()
            yield exc


class _LineTooLong(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what  # "line": one physical line; "record": a quoted record's lines together


class _ValueTooLong(Exception):
    """A JSON file holds a value (string or number) longer than max_cell_bytes."""


class _JsonValueGuard(io.RawIOBase):
    """Passes JSON bytes through, raising _ValueTooLong when more than ``cap`` bytes stand
    between two unescaped double quotes.

    Why: the JSON parser (ijson over yajl) holds a whole string or number before it hands it
    over, so one 200 MB value would be 200 MB+ in memory. Every string is quoted, and a number
    or a run of whitespace that long is no contact file either, so a long quote-free stretch
    is the cheap, safe test, made on each 64 KiB piece with ``bytes.split`` (in C); a piece
    with an escaped quote (``\\"``) takes the slower path that joins across it.
    """

    def __init__(self, data, cap: int) -> None:
        self._data = data
        self._cap = cap
        self._run = 0  # bytes since the last unescaped quote
        self._backslashes = 0  # trailing backslashes of the bytes read so far

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        chunk = self._data.read(len(b))
        n = len(chunk)
        if not n:
            return 0
        b[:n] = chunk
        pieces = chunk.split(b'"')
        if len(pieces) == 1:
            run = self._run + n
        elif b"\\" not in chunk and not self._backslashes:
            longest = max(self._run + len(pieces[0]), max(map(len, pieces[1:-1]), default=0))
            if longest > self._cap:
                raise _ValueTooLong()
            run = len(pieces[-1])
        else:
            run = self._run
            trailing = self._backslashes
            for k, piece in enumerate(pieces):
                if k:  # a quote stood before this piece: escaped when an odd run of backslashes precedes it
                    if trailing % 2:
                        run += 1
                    else:
                        if run > self._cap:
                            raise _ValueTooLong()
                        run = 0
                run += len(piece)
                stripped = len(piece) - len(piece.rstrip(b"\\"))
                # a piece of only backslashes continues the run before it only at the chunk's start
                trailing = stripped if (k or stripped < len(piece)) else trailing + stripped
        if run > self._cap:
            raise _ValueTooLong()
        self._run = run
        tail = len(chunk) - len(chunk.rstrip(b"\\"))
        self._backslashes = tail if tail < n else self._backslashes + tail
        return n


def _bounded_lines(text: io.TextIOBase, cap: int, budget: list[int], continued_cap: int) -> Iterator[str]:
    """The physical lines of ``text`` for csv.reader, never holding more than ``cap`` characters.

    Why not iterate the text stream: a line is read whole before anyone can look at it, and
    the csv module buffers a whole record, so a 10 GiB line (or a quote never closed) would
    be held in memory. ``readline(cap + 1)`` stops at the cap; the rest of an over-long line
    is read and dropped in 64 KiB pieces and ``_LineTooLong`` raised (which ends this
    generator and the csv reader's record; the caller starts new ones on the same stream).
    ``budget[0]`` counts the characters of the current record (the caller sets it to 0 after
    each record): a line asked for while it is not 0 continues a quoted value over lines,
    and those continuation lines together may hold at most ``continued_cap`` characters
    (max_cell_bytes: the value is one cell) -- so a quote that is never closed costs one
    rejected row of at most that much, not the rest of the file.
    """
    readline = text.readline
    limit = cap + 1
    first = 0  # length of the current record's first line
    while True:
        line = readline(limit)
        if not line:
            return
        n = len(line)
        if n > cap:
            while line and line[-1] not in "\n\r":
                line = readline(_DISCARD)
            budget[0] = 0
            raise _LineTooLong("line")
        used = budget[0]
        if not used:
            first = n
        elif used + n - first > continued_cap or used + n > cap:
            budget[0] = 0
            raise _LineTooLong("record")
        budget[0] = used + n
        yield line


_TOO_DEEP = object()


def _too_deep(line: str, obj) -> bool:
    """Is a decoded JSON Lines value nested more than MAX_JSON_DEPTH levels? (Only a line with
    that many brackets can be, so the walk is made for such lines only; it is iterative.)"""
    if line.count("[") + line.count("{") <= MAX_JSON_DEPTH:
        return False
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, (dict, list)))
    return False


def _csv_error(exc: csv.Error) -> str:
    """The csv module's message, which never holds a cell's value."""
    return str(exc).split(":", 1)[0][:120]


def number_problem(token: str, col: str, problem: str | None) -> str:
    """A reason for a number that cannot be used, naming its column; the value masked."""
    if problem == SCIENTIFIC_PROBLEM:
        return f"a contact number in {col} {problem}"
    return f"contact number {masked(token)} in {col} {problem}"


def _sniff_delimiter(line: str, prefer_tab: bool) -> str:
    counts = {",": 0, ";": 0, "\t": 0}
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    if prefer_tab and counts["\t"]:
        return "\t"
    best = max((counts[","], 2, ","), (counts[";"], 1, ";"), (counts["\t"], 0, "\t"))
    return best[2] if best[0] else ","


def _ijson_reason(exc: Exception) -> str:
    msg = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0].strip()
    if "premature EOF" in msg:
        return f"{msg} (the file is truncated or a bracket is not closed)"
    if "trailing garbage" in msg:
        return f"{msg} (more than one JSON value; for one call object per line, name the file .jsonl)"
    return msg


def _kind(value) -> str:
    """What a JSON value is, without its content."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, Decimal, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "an array" if isinstance(value, list) else "an object"


class _JsonRoles:
    """Which keys of a JSON call object give its numbers and its identifier: the CSV header
    rules (headers.py) applied to key names, and the same explicit mapping."""

    _CACHE_MAX = 10_000

    def __init__(self, opts: ParseOptions) -> None:
        self._mapped_phones = {header_words(n) or (n.strip().lower(),): n.strip()
                               for n in (opts.phone_columns or ()) if n.strip()}
        id_name = (opts.id_column or "").strip()
        self._mapped_id = (header_words(id_name) or (id_name.lower(),)) if id_name else None
        self._mapped_names = dict(self._mapped_phones)
        if self._mapped_id is not None:
            self._mapped_names[self._mapped_id] = id_name
        self._seen_mapped: set[tuple[str, ...]] = set()
        self._roles: dict[str, str] = {}
        self._phone_keys: dict[str, None] = {}
        self._record_keys_used: dict[str, None] = {}

    def role(self, key: str) -> str:
        """"phone", "id" (mapped), "client", "record" or ""."""
        r = self._roles.get(key)
        if r is not None:
            return r
        words = header_words(key) or (key.strip().lower(),)
        if words in self._mapped_names:
            self._seen_mapped.add(words)
        if key[: len(FLOW_KEY_PREFIX)].lower() == FLOW_KEY_PREFIX or key == "keys":
            r = ""
        elif self._mapped_id is not None and words == self._mapped_id:
            r = "id"
        elif (words in self._mapped_phones) if self._mapped_phones else (key == "contact-numbers"
                                                                         or is_phone_header(words)):
            r = "phone"
            if len(self._phone_keys) < 10:
                self._phone_keys[key] = None
        elif self._mapped_id is None and (key == "client-identifier" or words == ("client", "identifier")):
            r = "client"
        elif self._mapped_id is None and is_record_id_header(words):
            r = "record"
        else:
            r = ""
        if len(self._roles) < self._CACHE_MAX:
            self._roles[key] = r
        return r

    saw_key = role

    def saw_keys(self, obj: dict) -> None:
        for key in obj:
            self.role(key)

    def is_id_key(self, key: str) -> bool:
        return self.role(key) in ("id", "client", "record")

    def cid_value(self, obj: dict) -> tuple[str | None, object]:
        """(key, value) of the object's identifier: the mapped id key, else client-identifier,
        else its one record-id key; (None, None) when there is none."""
        if "client-identifier" in obj and self._mapped_id is None:
            return "client-identifier", obj["client-identifier"]
        found: list[str] = []
        for key in obj:
            r = self.role(key)
            if r in ("id", "client"):
                return key, obj[key]
            if r == "record":
                found.append(key)
        if len(found) == 1:
            if len(self._record_keys_used) < 10:
                self._record_keys_used[found[0]] = None
            return found[0], obj[found[0]]
        return None, None

    @staticmethod
    def label(key: str) -> str:
        return shown_header(key) or "a key"

    def missing(self) -> str | None:
        for words, name in self._mapped_names.items():
            if words not in self._seen_mapped:
                return name
        return None

    def notes(self) -> list[str]:
        notes = []
        aliases = [k for k in self._phone_keys if k != "contact-numbers"]
        if aliases:
            notes.append("phone numbers also from the keys " + ", ".join(f"'{self.label(k)}'" for k in aliases))
        if self._record_keys_used:
            notes.append("client-identifier from the record-id key " +
                         ", ".join(f"'{self.label(k)}'" for k in self._record_keys_used) +
                         " where an object has no client-identifier")
        return notes


class _RowBuilder:
    """Turns the parts of one row into a ValidRow or RejectedRow (shared by CSV and JSON)."""

    def __init__(self, opts: ParseOptions, roles: _JsonRoles | None = None) -> None:
        self.roles = roles or _JsonRoles(opts)
        self.phones = PhoneNormalizer(opts.default_region)
        self.times = StartTimeParser(opts.time_zone, opts.now)
        self.reserved_key = opts.reserved_key
        self.max_cell = opts.max_cell_bytes
        self._reserved_lower = opts.reserved_key.lower()
        self._key_names: dict[str, str | None] = {}

    def numbers(self, cells: list[str], n: int, phones: list[tuple[int, str]]) -> tuple[list[str], list[str]]:
        normalize = self.phones.normalize
        nums: list[str] = []
        seen: set[str] = set()  # a set beside the list: a cell may hold ~10,000 numbers
        problems: list[str] = []
        for i, col in phones:
            if i >= n:
                continue
            cell = cells[i]
            if not cell:
                continue
            tokens = _SPLIT_NUMBERS.split(cell) if (";" in cell or "|" in cell or ":::" in cell) else (cell,)
            for tok in tokens:
                tok = tok.strip()
                if not tok:
                    continue
                digits, problem = normalize(tok)
                if digits is not None:
                    if digits not in seen:
                        seen.add(digits)
                        nums.append(digits)
                    continue
                parts = _several_numbers(tok) if len(tok) >= _MIN_SEVERAL else None
                if parts is None:
                    problems.append(number_problem(tok, col, problem))
                    continue
                for part in parts:
                    digits, problem = normalize(part)
                    if digits is None:
                        problems.append(number_problem(part, col, problem))
                    elif digits not in seen:
                        seen.add(digits)
                        nums.append(digits)
        return nums, problems

    def finish(self, rowno: int, cid: str, nums: list[str], problems: list[str],
               phones: list[tuple[int, str]], start: str, keys: list[dict],
               warnings: list[str] | None) -> Row:
        start_value = None
        start_problem = None
        if start:
            start_value, start_problem = self.times.parse(start)
        if len(problems) > MAX_ROW_PROBLEMS:
            problems = [*problems[:MAX_ROW_PROBLEMS],
                        f"… and {len(problems) - MAX_ROW_PROBLEMS:,} more numbers that cannot be used"]
        if warnings is not None and len(warnings) > MAX_ROW_PROBLEMS:
            warnings = [*warnings[:MAX_ROW_PROBLEMS], f"… and {len(warnings) - MAX_ROW_PROBLEMS:,} more warnings"]
        if not nums or start_problem is not None:
            reasons = list(problems)
            if not nums and not problems:
                cols = ", ".join(c for _, c in phones[:10]) + (f", … ({len(phones):,} columns)" if len(phones) > 10 else "")
                reasons.append(f"no contact number ({cols} {'is' if len(phones) == 1 else 'are'} empty)")
            if start_problem is not None:
                reasons.append(start_problem)
            return RejectedRow(rowno, cid, "; ".join(reasons))
        if start_value is not None:
            call = {"client-identifier": cid, "start-time": start_value, "contact-numbers": nums, "keys": keys}
        else:
            call = {"client-identifier": cid, "contact-numbers": nums, "keys": keys}
        if problems:
            dropped = [f"{p} (number dropped, the row's other numbers are sent)" for p in problems]
            warnings = dropped + warnings if warnings else dropped
        return ValidRow(rowno, cid, call, warnings if warnings is not None else [])

    # JSON -----------------------------------------------------------------------------
    def from_object(self, rowno: int, obj, claims: ClaimTracker, skip: bool, what: str) -> Row | None:
        if not isinstance(obj, dict):
            if skip:
                return None
            found = "an array" if isinstance(obj, list) else "null" if obj is None else type(obj).__name__
            return RejectedRow(rowno, "", f"{what} is not a call object (found {found})")
        roles = self.roles
        id_key, raw_cid = roles.cid_value(obj)
        cid = _cid_text(raw_cid)
        id_name = "client-identifier" if id_key in (None, "client-identifier") else roles.label(id_key)
        if not cid:
            if skip:
                return None
            if raw_cid is None or cid == "":
                return RejectedRow(rowno, "", f"{id_name} is missing or empty")
            return RejectedRow(rowno, "", f"{id_name} must be text or a number")
        if len(cid) > self.max_cell:  # JSON Lines: only the line limit bounded it; it is kept with the row
            return None if skip else RejectedRow(rowno, "", f"{id_name} is longer than the limit of "
                                                            f"{self.max_cell:,} bytes (max_cell_bytes)")
        first = claims.claim(cid, rowno)
        if skip:
            return None
        if first is not None:
            return RejectedRow(rowno, cid, f"duplicate client-identifier, first seen in row {first}")
        problems: list[str] = []
        cells: list[str] = []
        labels: list[tuple[int, str]] = []
        used: list[tuple[int, str]] = []
        role = roles.role
        for key, raw_numbers in obj.items():
            if role(key) != "phone":
                continue
            label = roles.label(key)
            used.append((0, label))
            items = raw_numbers if isinstance(raw_numbers, list) else [] if raw_numbers is None else [raw_numbers]
            for v in items:
                if isinstance(v, str):
                    cells.append(v)
                    labels.append((len(cells) - 1, label))
                elif isinstance(v, (int, Decimal)) and not isinstance(v, bool):
                    cells.append(str(v))
                    labels.append((len(cells) - 1, label))
                elif v is not None:
                    problems.append(f"a contact number in {label} is not text or a number (found {_kind(v)})")
        nums, more_problems = self.numbers(cells, len(cells), labels)
        problems.extend(more_problems)
        raw_start = obj.get("start-time")
        start = ""
        if isinstance(raw_start, str):
            start = raw_start.strip()
        elif raw_start is not None:
            problems_start = (f"start-time must be text such as 2026-06-29T09:30:00+05:30 "
                              f"(found {_kind(raw_start)})")
            return RejectedRow(rowno, cid, "; ".join([*problems, problems_start]))
        keys, warnings = self._json_keys(obj.get("keys"))
        return self.finish(rowno, cid, nums, problems, used or [(0, "contact-numbers")], start, keys,
                           warnings or None)

    def _json_keys(self, raw) -> tuple[list[dict], list[str]]:
        keys: list[dict] = []
        warnings: list[str] = []
        if raw is None:
            return keys, warnings
        if isinstance(raw, dict):
            pairs = [(k, v, n) for n, (k, v) in enumerate(raw.items(), 1)]
        elif isinstance(raw, list):
            pairs = []
            for n, entry in enumerate(raw, 1):
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    pairs.append((entry["name"], entry.get("value"), n))
                else:
                    warnings.append(f"keys entry {n} is not {{\"name\": ..., \"value\": ...}}: ignored")
        else:
            return keys, ["keys is not a list of {\"name\": ..., \"value\": ...}: ignored"]
        first_entry: dict[str, int] = {}
        for name, value, n in pairs:
            key = self._key_name(name)
            if key is None:
                warnings.append(f"keys entry {n} has an empty name: ignored")
                continue
            if key in first_entry:  # one variable, one value: as for a CSV header given twice
                warnings.append(f"keys entry {n} repeats the flow variable {shown_header(key) or 'of an earlier entry'}"
                                f" of entry {first_entry[key]}: ignored")
                continue
            if key.lower() == self._reserved_lower:
                warnings.append(f"key '{name}' ignored: {self.reserved_key} is reserved for the pipeline's own "
                                f"tracking reference")
                continue
            text = _value_text(value)
            if text is None or not text.strip():
                continue
            first_entry[key] = n
            keys.append({"name": key, "value": text})
        return keys, warnings

    def _key_name(self, name: str) -> str | None:
        key = self._key_names.get(name, "")
        if key == "":
            stripped = name.strip()
            key = flow_key_name(stripped) if stripped and stripped.lower() != FLOW_KEY_PREFIX else None
            if len(self._key_names) < 10_000:
                self._key_names[name] = key
        return key

