"""Whole files: rejections, gzip, size limit, the streams a file can come from, dedupe memory."""

from __future__ import annotations

import gzip
import io
from datetime import UTC, datetime

import pytest

from phonon_outbound.contacts import FileRejected, ParseOptions, RejectedRow, ValidRow, dedupe, open_contacts
from phonon_outbound.contacts.dedupe import ClaimTracker, DigestSpill

NOW = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
OPTS = ParseOptions(now=NOW)
CSV = b"client-identifier,phone\nC1,9876543210\nC2,9876543211\n"


class OneShot:
    """Like an S3 StreamingBody: read(n) only, no seek, and it hands out small pieces."""

    def __init__(self, data: bytes, piece: int = 7) -> None:
        self._buf = io.BytesIO(data)
        self._piece = piece
        self.reads = 0

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        return self._buf.read(min(n, self._piece) if n and n > 0 else self._piece)


def reject_reason(data: bytes, name: str = "f.csv", opts: ParseOptions = OPTS) -> str:
    with pytest.raises(FileRejected) as exc:
        open_contacts(io.BytesIO(data), name, opts)
    return exc.value.reason


# -- whole-file rejections ----------------------------------------------------------------

@pytest.mark.parametrize("data", [b"", b"\n\n  \r\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n,,,\n"])
def test_an_empty_file_is_rejected(data):
    assert reject_reason(data) == "empty file"


def test_an_empty_gzip_file_is_rejected_as_empty():
    assert reject_reason(gzip.compress(b""), "f.csv.gz") == "empty file"


def test_a_file_without_header_is_rejected():
    reason = reject_reason(b"9876543210,John,john@example.com\n9876543211,Jane,j@example.com\n")
    assert reason.startswith("no header: the first line looks like data")
    # the first line is data: none of it is echoed (issue 10 #6)
    assert "987" not in reason and "John" not in reason and "example" not in reason


def test_a_file_without_a_phone_column_is_rejected_naming_what_it_found():
    assert reject_reason(b"client-identifier,name\nC1,x\n").startswith(
        "no phone column: the header (client-identifier, name) has no phone column; name one phone, mobile, ")


def test_only_a_sep_line_is_no_header():
    assert reject_reason(b"sep=;\n") == "no header: the file has only a 'sep=' line"


@pytest.mark.parametrize(("data", "words"), [
    (b"PK\x03\x04\x14\x00\x06\x00", "Excel workbook (.xlsx)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "old Excel workbook (.xls)"),
    (b"%PDF-1.7\n", "PDF"),
    (b"phone\n" + b"\x00\x01\x02\x00" * 10, "NUL bytes"),
    ("phone\n".encode("utf-16-le"), "UTF-16 without a byte-order mark"),
])
def test_binary_content_is_not_decodable_as_text(data, words):
    reason = reject_reason(data)
    assert reason.startswith("not decodable as text: ") and words in reason


def test_a_stray_nul_in_a_text_file_is_just_a_character():
    cf = open_contacts(io.BytesIO(b"client-identifier,phone,x\nC1,9876543210,a\x00b\n"), "f.csv", OPTS)
    assert [r.call["keys"] for r in cf.rows()] == [[{"name": "$flow.key.x", "value": "a\x00b"}]]


def test_invalid_utf16_is_not_decodable():
    assert reject_reason(b"\xff\xfe" + "phone\n".encode("utf-16-le") + b"\x00\xd8\x41\x00") \
        .startswith("not decodable as text: not valid UTF-16")


def test_a_gz_name_without_gzip_content_is_not_valid_gzip():
    assert reject_reason(CSV, "f.csv.gz") == ("not valid gzip: the file name ends in .gz but the content is not "
                                              "gzip-compressed")


def test_a_truncated_gzip_is_rejected_before_any_row():
    data = gzip.compress(CSV * 1000)[:-40]
    assert reject_reason(data, "f.csv.gz") == "not valid gzip: the compressed file is truncated"


def test_a_corrupt_gzip_is_rejected():
    data = bytearray(gzip.compress(CSV * 50))
    data[len(data) // 2] ^= 0xFF
    assert reject_reason(bytes(data), "f.csv.gz").startswith("not valid gzip: ")


def test_gzip_content_without_gz_name_is_decompressed_and_noted():
    cf = open_contacts(io.BytesIO(gzip.compress(CSV)), "f.csv", OPTS)
    assert len(list(cf.rows())) == 2
    assert cf.notes[:1] == ["gzip-compressed although the name does not end in .gz: decompressed"]


def test_multi_member_gzip_is_read_whole():
    data = gzip.compress(b"client-identifier,phone\nC1,9876543210\n") + gzip.compress(b"C2,9876543211\n")
    cf = open_contacts(io.BytesIO(data), "f.CSV.GZ", OPTS)
    assert [r.client_id for r in cf.rows()] == ["C1", "C2"]


def test_a_file_larger_than_the_limit_is_rejected_before_any_row():
    opts = ParseOptions(now=NOW, max_bytes=len(CSV) - 1)
    assert reject_reason(CSV, opts=opts) == f"larger than the configured limit of {len(CSV) - 1:,} bytes"
    # the limit applies to the stored (compressed) bytes
    plain = b"phone\n" + b"9876543210\n" * 1000
    packed = gzip.compress(plain)
    assert len(packed) < len(plain) // 10
    cf = open_contacts(io.BytesIO(packed), "f.csv.gz", ParseOptions(now=NOW, max_bytes=len(packed)))
    assert cf.row_count == 1000


def test_a_file_exactly_at_the_limit_is_accepted():
    cf = open_contacts(io.BytesIO(CSV), "f.csv", ParseOptions(now=NOW, max_bytes=len(CSV)))
    assert cf.row_count == 2


# -- formats by name and by content ------------------------------------------------------

@pytest.mark.parametrize("name", ["a.CSV", "a.Txt", "a.tsv", "a.csv.GZ", "a.TXT.gz"])
def test_csv_extensions_in_any_case(name):
    data = gzip.compress(CSV) if name.lower().endswith(".gz") else CSV
    cf = open_contacts(io.BytesIO(data), f"incoming/x/{name}", OPTS)
    assert cf.format == "csv" and cf.row_count == 2


@pytest.mark.parametrize(("data", "fmt"), [
    (CSV, "csv"),
    (b'[{"client-identifier": "a", "contact-numbers": "9876543210"}]', "json"),
    (b'{"calls": []}', "json"),
    (b'{"client-identifier": "a", "contact-numbers": "9876543210"}\n', "jsonl"),
])
def test_an_unknown_extension_is_recognised_by_content(data, fmt):
    cf = open_contacts(io.BytesIO(data), "upload.dat", OPTS)
    assert cf.format == fmt


# -- where the bytes come from --------------------------------------------------------------

def test_a_one_shot_stream_is_spooled_for_the_second_pass():
    data = CSV + CSV.split(b"\n", 1)[1] * 2
    stream = OneShot(data)
    cf = open_contacts(stream, "f.csv", OPTS)
    rows = list(cf.rows())
    assert [r.row for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [type(r) for r in rows[2:4]] == [RejectedRow, RejectedRow]  # C1, C2 repeated
    assert cf.bytes_read == len(data)


def test_a_one_shot_stream_that_turns_out_windows_1252_is_reread_whole():
    data = b"client-identifier,phone,n\n" + b"".join(b"C%d,9876543210,x\n" % i for i in range(20_000)) \
        + b"Z,9876543211,\xe9\n"
    cf = open_contacts(OneShot(data, piece=4096), "f.csv", OPTS)
    rows = list(cf.rows())
    assert len(rows) == 20_001 and rows[-1].call["keys"] == [{"name": "$flow.key.n", "value": "é"}]


def test_stream_factory_is_used_for_the_second_pass():
    opened = []

    def factory():
        opened.append(1)
        return OneShot(CSV)

    first = OneShot(CSV)
    cf = open_contacts(first, "f.csv", OPTS, stream_factory=factory)
    assert opened == []
    rows = list(cf.rows())
    assert opened == [1] and len(rows) == 2 and all(isinstance(r, ValidRow) for r in rows)


def test_streams_from_the_factory_are_closed_when_the_rows_are_done():
    made = []

    def factory():
        made.append(io.BytesIO(CSV))
        return made[-1]

    cf = open_contacts(io.BytesIO(CSV), "f.csv", OPTS, stream_factory=factory)
    list(cf.rows())
    assert made and all(s.closed for s in made)


def test_a_seekable_stream_is_rewound_to_where_it_started():
    buf = io.BytesIO(b"JUNK" + CSV)
    buf.seek(4)
    cf = open_contacts(buf, "f.csv", OPTS)
    assert [r.client_id for r in cf.rows()] == ["C1", "C2"]


def test_an_open_file(tmp_path):
    path = tmp_path / "leads.csv.gz"
    path.write_bytes(gzip.compress(CSV))
    with path.open("rb") as f:
        cf = open_contacts(f, str(path), OPTS)
        assert [r.client_id for r in cf.rows()] == ["C1", "C2"]
        assert cf.bytes_read == path.stat().st_size


def test_a_file_changed_between_the_passes_is_reported_not_half_read():
    # Given a factory that returns other (corrupt) bytes than the first pass saw
    cf = open_contacts(io.BytesIO(gzip.compress(CSV)), "f.csv.gz", OPTS,
                       stream_factory=lambda: io.BytesIO(gzip.compress(CSV)[:-10]))
    with pytest.raises(FileRejected) as exc:
        list(cf.rows())
    assert exc.value.reason.startswith("the file changed while it was being read")


# -- duplicate detection in bounded memory -------------------------------------------------

def test_digest_spill_finds_repeats_across_runs(monkeypatch):
    # Given runs of 1,000 digests written to disk
    monkeypatch.setattr(dedupe, "FLUSH_EVERY", 1000)
    spill = DigestSpill()
    values = list(range(-5000, 5000, 3)) + [-(1 << 63), (1 << 63) - 1]
    spill.add_many(values)
    spill.add_many([-5000 + 3 * 10, (1 << 63) - 1])  # two repeats, far apart
    for v in (42_000_000, 42_000_000):
        spill.add(v)
    assert spill.repeated() == {-5000 + 3 * 10, (1 << 63) - 1, 42_000_000}


def test_duplicates_are_found_in_a_file_bigger_than_one_run(monkeypatch):
    monkeypatch.setattr(dedupe, "FLUSH_EVERY", 64)
    lines = [f"C{i},9876543210" for i in range(500)] + ["C3,9876543211", "C499,9876543212"]
    cf = open_contacts(io.BytesIO(("client-identifier,phone\n" + "\n".join(lines)).encode()), "f.csv", OPTS)
    rows = list(cf.rows())
    assert rows[-2] == RejectedRow(501, "C3", "duplicate client-identifier, first seen in row 4")
    assert rows[-1] == RejectedRow(502, "C499", "duplicate client-identifier, first seen in row 500")


def test_claim_tracker_only_remembers_repeated_digests():
    tracker = ClaimTracker({hash("b")})
    assert tracker.claim("a", 1) is None and tracker.claim("a", 2) is None  # not a repeat: not tracked
    assert tracker.claim("b", 3) is None and tracker.claim("b", 4) == 3
    everything = ClaimTracker(None)
    assert everything.claim("a", 1) is None and everything.claim("a", 2) == 1


def test_a_one_shot_gzip_stream_read_three_times_spool_and_all():
    # Given a one-shot gzip stream whose late Windows-1252 byte forces a second pre-pass
    text = b"client-identifier,phone,n\n" + b"".join(b"C%d,9876543210,x\n" % i for i in range(30_000)) \
        + b"C1,9876543211,\xe9\n"
    cf = open_contacts(OneShot(gzip.compress(text), piece=5000), "f.csv.gz", OPTS)
    rows = list(cf.rows())
    # Then every pass saw the whole file: the late duplicate names row 2
    assert cf.notes[:1] == ["not valid UTF-8: read as Windows-1252"]
    assert rows[-1] == RejectedRow(30_001, "C1", "duplicate client-identifier, first seen in row 2")
