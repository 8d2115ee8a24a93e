"""Contact files -> validated calls: `open_contacts(stream, filename, options)`.

Two passes over the file (SPEC.md: "a file is never half-sent because of a parse error at
row N"; whole-file rejections must come before any row is yielded):

1. ``open_contacts`` makes a *validation pre-pass* over the whole file: size limit, gzip
   integrity, text encoding (UTF-8 proven or Windows-1252 fallback), the CSV header, JSON
   syntax and shape, the JSON file's own ``flow-id`` (wherever it stands in the object), the
   number of data rows, and the digests needed for duplicate client-identifiers
   (see ``dedupe.py``). Every whole-file rejection is raised here as ``FileRejected``.
2. ``ContactFile.rows()`` reads the file again and yields one ``ValidRow`` or ``RejectedRow``
   per data row, in input order.

The second read uses ``stream_factory()`` when given (in Lambda: a fresh S3 GetObject of the
same version), else ``seek`` on a seekable stream, else a temporary copy spooled during the
first pass. Memory stays bounded: both passes stream.

Choices where SPEC.md is silent:
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

import ijson

from .dedupe import ClaimTracker, DigestSpill
from .headers import FLOW_KEY_PREFIX, PHONE_HEADER_HELP, Columns, flow_key_name, map_header
from .model import FileRejected, ParseOptions, RejectedRow, ValidRow
from .phones import PhoneNormalizer
from .source import GZIP_ERRORS, Opened, Source, TooLarge, detect_encoding, ensure_head, gzip_reason
from .starttime import StartTimeParser

__all__ = ["ContactFile", "open_contacts"]

_CSV_EXT = (".csv", ".tsv", ".txt")
_JSON_EXT = (".json",)
_JSONL_EXT = (".jsonl", ".ndjson")
_SPLIT_NUMBERS = re.compile(r"[;|]")
_SEP_LINE = re.compile(r'\s*"?sep=(.)"?[,;\t]*\s*', re.IGNORECASE)
_DATA_LIKE = re.compile(r"[+(]?\d[\d ()\-.]{5,}\d|\d+(?:[.,]\d+)?[eE]\+?\d+")
_BLANK_LINE_CHARS = " \t\r\n,;\"'"
_JSON_LINE = json.JSONDecoder(parse_float=Decimal)  # numbers as written: 9.18E+11 stays recognisable
_HEAD_BYTES = 8192  # looked at before the pre-pass: BOM, binary signatures, format guess

Row = ValidRow | RejectedRow


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
    source = Source(stream, gz_by_name, options.max_bytes, stream_factory)
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
        self.flow_id: str | None = None
        self.notes: list[str] = []
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
                self.notes.append("not valid UTF-8: read as Windows-1252")
            except TooLarge:
                raise FileRejected(f"larger than the configured limit of {self._opts.max_bytes:,} bytes") from None
            except GZIP_ERRORS as exc:
                raise FileRejected(gzip_reason(exc)) from None
        self.encoding = {"utf-8-sig": "utf-8", "cp1252": "windows-1252"}.get(self._encoding, self._encoding)
        self.notes[:0] = self._source.notes

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
    def _open_csv(self, opened: Opened) -> tuple[Iterator[list[str]], Columns]:
        lines = iter(self._text(opened))
        first = next((ln for ln in lines if ln.strip(_BLANK_LINE_CHARS)), None)
        if first is None:
            raise FileRejected("empty file")
        m = _SEP_LINE.fullmatch(first.rstrip("\r\n"))
        if m is not None:
            delimiter = m.group(1)
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
        cols = map_header(header, self._opts.reserved_key)
        if not cols.phones:
            shown = ", ".join(h.strip() for h in header if h.strip())[:200]
            if any(_DATA_LIKE.fullmatch(h.strip()) for h in header):
                raise FileRejected(f"no header: the first line ({shown}) looks like data; the first line must "
                                   f"name the columns, e.g. client-identifier,phone")
            raise FileRejected(f"no phone column: the header ({shown}) has none of {PHONE_HEADER_HELP}")
        return reader, cols

    def _scan_csv(self, opened: Opened) -> None:
        reader, cols = self._open_csv(opened)
        self._cols = cols
        ci = cols.client
        spill = DigestSpill() if ci is not None else None
        count = 0
        cells_of_ids: list[str] = []  # raw client-identifier cells, hashed in C every 64k rows
        keep = cells_of_ids.append
        strip = str.strip
        try:
            while True:
                try:
                    for cells in reader:
                        if not cells:
                            continue
                        c0 = cells[0]
                        if (not c0 or c0.isspace()) and not "".join(cells).strip():
                            continue
                        count += 1
                        if spill is not None:
                            try:  # noqa: SIM105 - cheaper than a length test per row
                                keep(cells[ci])  # type: ignore[index]
                            except IndexError:
                                pass
                            if not count & 0xFFFF:
                                spill.add_many(map(hash, filter(None, map(strip, cells_of_ids))))
                                cells_of_ids.clear()
                    break
                except csv.Error:  # the reader goes on with the next record; the bad one is a row
                    count += 1
            if spill is not None:
                spill.add_many(map(hash, filter(None, map(strip, cells_of_ids))))
                cells_of_ids.clear()
                self._repeated = spill.repeated()
            self.row_count = count
        finally:
            if spill is not None:
                spill.close()
        notes = list(cols.notes)
        if ci is None:
            notes.append(f"no client-identifier column: identifiers generated as {self._stem}-<row>")
        self.notes.extend(n for n in notes if n not in self.notes)

    # JSON Lines ------------------------------------------------------------------------
    def _scan_jsonl(self, opened: Opened) -> None:
        spill = DigestSpill()
        count = 0
        loads = _JSON_LINE.decode
        try:
            for line in self._text(opened):
                if not line.strip():
                    continue
                count += 1
                try:
                    obj = loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    cid = _cid_text(obj.get("client-identifier"))
                    if cid:
                        spill.add(hash(cid))
            self.row_count = count
            self._repeated = spill.repeated()
        finally:
            spill.close()

    # JSON --------------------------------------------------------------------------
    def _json_bytes(self, opened: Opened, check: bool):
        if self._encoding == "utf-8-sig":
            data = opened.data
            if data.peek(3)[:3] == b"\xef\xbb\xbf":  # type: ignore[attr-defined]
                data.read(3)
            return io.BufferedReader(_Utf8Check(data), 1 << 16) if check else data
        return io.BufferedReader(_Transcode(self._text(opened)), 1 << 16)

    def _scan_json(self, opened: Opened) -> None:
        spill = DigestSpill()
        shape: str | None = None
        flow_id = None
        calls_seen = False
        count = 0
        item = cid_prefix = "\0"  # set once the top-level shape is known
        try:
            try:
                for prefix, event, value in ijson.parse(self._json_bytes(opened, check=True), use_float=False):
                    if prefix == item:
                        if event in ("start_map", "start_array", "string", "number", "boolean", "null"):
                            count += 1
                    elif prefix == cid_prefix:
                        if event in ("string", "number"):
                            cid = _cid_text(value)
                            if cid:
                                spill.add(hash(cid))
                    elif prefix == "":
                        if shape is None:
                            if event == "start_map":
                                shape, item, cid_prefix = "object", "calls.item", "calls.item.client-identifier"
                            elif event == "start_array":
                                shape, item, cid_prefix = "array", "item", "item.client-identifier"
                            else:
                                raise FileRejected("not valid JSON for a contact file: the top level must be an "
                                                   "array of call objects or an object with a \"calls\" array")
                    elif shape == "object":
                        if prefix == "calls":
                            if event == "start_array":
                                calls_seen = True
                            elif event not in ("end_array",):
                                raise FileRejected("not valid JSON for a contact file: \"calls\" must be an array "
                                                   "of call objects")
                        elif prefix == "flow-id" and event in ("string", "number") and flow_id is None:
                            flow_id = str(value).strip() or None
            except ijson.JSONError as exc:
                raise FileRejected(f"not valid JSON: {_ijson_reason(exc)}") from None
            if shape == "object" and not calls_seen:
                raise FileRejected("not valid JSON for a contact file: the object has no \"calls\" array")
            self._json_prefix = item
            self.flow_id = flow_id
            self.row_count = count
            self._repeated = spill.repeated()
        finally:
            spill.close()

    # -- pass 2 -------------------------------------------------------------------------
    def _rows(self, start_row: int) -> Iterator[Row]:
        opts = self._opts
        build = _RowBuilder(opts)
        claims = ClaimTracker(self._repeated)
        try:
            opened = self._opened = self._source.open()
            if self._kind == "csv":
                reader, cols = self._open_csv(opened)
                yield from self._csv_rows(reader, cols, build, claims, start_row)
            elif self._kind == "jsonl":
                yield from self._jsonl_rows(opened, build, claims, start_row)
            else:
                items = ijson.items(self._json_bytes(opened, check=False), self._json_prefix, use_float=False)
                for n, obj in enumerate(items, 1):
                    r = build.from_object(n, obj, claims, n <= start_row, "element")
                    if r is not None:
                        yield r
        except (TooLarge, UnicodeDecodeError, ijson.JSONError, *GZIP_ERRORS) as exc:
            # Only possible when the bytes differ from the pre-pass: pin the object version.
            raise FileRejected(f"the file changed while it was being read ({exc})") from None
        finally:
            self.close()

    def _jsonl_rows(self, opened: Opened, build: _RowBuilder, claims: ClaimTracker,
                    start_row: int) -> Iterator[Row]:
        loads = _JSON_LINE.decode
        lineno = 0
        for line in self._text(opened):
            if not line.strip():
                continue
            lineno += 1
            try:
                obj = loads(line)
            except ValueError as exc:
                if lineno > start_row:
                    yield RejectedRow(lineno, "", f"line is not valid JSON ({exc})")
                continue
            r = build.from_object(lineno, obj, claims, lineno <= start_row, "line")
            if r is not None:
                yield r

    def _csv_rows(self, reader: Iterator[list[str]], cols: Columns, build: _RowBuilder,
                  claims: ClaimTracker, start_row: int) -> Iterator[Row]:
        # The hot loop: ~1M rows a file, so locals only, and the common case inline.
        width = cols.width
        ci = cols.client
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
        delim = "tab" if self.delimiter == "\t" else f"'{self.delimiter}'"
        rowno = 0
        while True:
            try:
                for cells in reader:
                    if not cells:
                        continue
                    c0 = cells[0]
                    if (not c0 or c0.isspace()) and not "".join(cells).strip():
                        continue
                    rowno += 1
                    n = len(cells)
                    if ci is not None:
                        cid = cells[ci].strip() if ci < n else ""
                        if not cid:
                            if rowno > start_row:
                                yield RejectedRow(rowno, "", "client-identifier is empty")
                            continue
                        # ClaimTracker.claim, with its first test inlined
                        first = claim(cid, rowno) if repeated is None or hash(cid) in repeated else None
                        if first is not None:
                            if rowno > start_row:
                                yield RejectedRow(rowno, cid, f"duplicate client-identifier, first seen in row {first}")
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
                    nums = []
                    problems = []
                    for i, col in phones:  # numbers_of() inlined for the usual one-number cells
                        if i >= n:
                            continue
                        cell = cells[i]
                        if not cell:
                            continue
                        if ";" in cell or "|" in cell:
                            more, more_problems = numbers_of([cell], 1, [(0, col)])
                            nums.extend(d for d in more if d not in nums)
                            problems.extend(more_problems)
                            continue
                        cell = cell.strip()
                        if cell:
                            digits, problem = normalize(cell)
                            if digits is None:
                                problems.append(f"contact number '{cell}' in {col} {problem}")
                            elif digits not in nums:
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
                    start = cells[si].strip() if si is not None and si < n else ""
                    if nums and not start and not problems and warnings is None:
                        yield ValidRow(rowno, cid, {"client-identifier": cid, "contact-numbers": nums, "keys": kv}, [])
                    else:
                        yield finish(rowno, cid, nums, problems, phones, start, kv, warnings)
                return
            except csv.Error as exc:  # the reader goes on with the next record; the bad one is a row
                rowno += 1
                if rowno > start_row:
                    yield RejectedRow(rowno, "", f"row cannot be read as CSV ({exc})")


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


class _RowBuilder:
    """Turns the parts of one row into a ValidRow or RejectedRow (shared by CSV and JSON)."""

    def __init__(self, opts: ParseOptions) -> None:
        self.phones = PhoneNormalizer(opts.default_region)
        self.times = StartTimeParser(opts.time_zone, opts.now)
        self.reserved_key = opts.reserved_key
        self._reserved_lower = opts.reserved_key.lower()
        self._key_names: dict[str, str | None] = {}

    def numbers(self, cells: list[str], n: int, phones: list[tuple[int, str]]) -> tuple[list[str], list[str]]:
        normalize = self.phones.normalize
        nums: list[str] = []
        problems: list[str] = []
        for i, col in phones:
            if i >= n:
                continue
            cell = cells[i]
            if not cell:
                continue
            tokens = _SPLIT_NUMBERS.split(cell) if (";" in cell or "|" in cell) else (cell,)
            for tok in tokens:
                tok = tok.strip()
                if not tok:
                    continue
                digits, problem = normalize(tok)
                if digits is not None:
                    if digits not in nums:
                        nums.append(digits)
                else:
                    problems.append(f"contact number '{tok}' in {col} {problem}")
        return nums, problems

    def finish(self, rowno: int, cid: str, nums: list[str], problems: list[str],
               phones: list[tuple[int, str]], start: str, keys: list[dict],
               warnings: list[str] | None) -> Row:
        start_value = None
        start_problem = None
        if start:
            start_value, start_problem = self.times.parse(start)
        if not nums or start_problem is not None:
            reasons = list(problems)
            if not nums and not problems:
                cols = ", ".join(c for _, c in phones)
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
        raw_cid = obj.get("client-identifier")
        cid = _cid_text(raw_cid)
        if not cid:
            if skip:
                return None
            if raw_cid is None or cid == "":
                return RejectedRow(rowno, "", "client-identifier is missing or empty")
            return RejectedRow(rowno, "", "client-identifier must be text or a number")
        first = claims.claim(cid, rowno)
        if skip:
            return None
        if first is not None:
            return RejectedRow(rowno, cid, f"duplicate client-identifier, first seen in row {first}")
        nums: list[str] = []
        problems: list[str] = []
        raw_numbers = obj.get("contact-numbers")
        items = raw_numbers if isinstance(raw_numbers, list) else [] if raw_numbers is None else [raw_numbers]
        cells = []
        for v in items:
            if isinstance(v, str):
                cells.append(v)
            elif isinstance(v, (int, Decimal)) and not isinstance(v, bool):
                cells.append(str(v))
            elif v is not None:
                problems.append(f"contact number {_value_text(v)} in contact-numbers is not text or a number")
        more, more_problems = self.numbers(cells, len(cells), [(i, "contact-numbers") for i in range(len(cells))])
        nums.extend(more)
        problems.extend(more_problems)
        raw_start = obj.get("start-time")
        start = ""
        if isinstance(raw_start, str):
            start = raw_start.strip()
        elif raw_start is not None:
            problems_start = f"start-time {_value_text(raw_start)} must be text such as 2026-06-29T09:30:00+05:30"
            return RejectedRow(rowno, cid, "; ".join([*problems, problems_start]))
        keys, warnings = self._json_keys(obj.get("keys"))
        return self.finish(rowno, cid, nums, problems, [(0, "contact-numbers")], start, keys, warnings or None)

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
        for name, value, n in pairs:
            key = self._key_name(name)
            if key is None:
                warnings.append(f"keys entry {n} has an empty name: ignored")
                continue
            if key.lower() == self._reserved_lower:
                warnings.append(f"key '{name}' ignored: {self.reserved_key} is reserved for the pipeline's own "
                                f"tracking reference")
                continue
            text = _value_text(value)
            if text is None or not text.strip():
                continue
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

