"""CSV contact files: docs/contact-files.md rule by rule (Given a file / When it is read / Then …)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from phonon_outbound.contacts import FileRejected, ParseOptions, RejectedRow, ValidRow, open_contacts

NOW = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)  # 11:30 in Asia/Kolkata
OPTS = ParseOptions(now=NOW)


def read(data: bytes | str, name: str = "incoming/camp/leads.csv", opts: ParseOptions = OPTS, start_row: int = 0):
    if isinstance(data, str):
        data = data.encode("utf-8")
    cf = open_contacts(io.BytesIO(data), name, opts)
    return cf, list(cf.rows(start_row=start_row))


def only(rows):
    assert len(rows) == 1, rows
    return rows[0]


# -- header names -------------------------------------------------------------------------

@pytest.mark.parametrize("header", [
    "client-identifier", "Client Identifier", "CLIENT_IDENTIFIER", " client - identifier ", "client__identifier",
])
def test_client_identifier_header_is_matched_trimmed_case_insensitive_with_separators_alike(header):
    # Given a header spelled in any of the accepted ways
    _, rows = read(f"{header},phone\nC1,9876543210\n")
    # Then its column is the client-identifier
    assert only(rows).client_id == "C1"
    assert only(rows).call["client-identifier"] == "C1"


@pytest.mark.parametrize("header", [
    "contact-numbers", "contact-number", "Contact Number 2", "contact_number_3", "phone", "Phone Number",
    "mobile", "MOBILE_NUMBER", "tel1", "TEL10", "Tel 4",
])
def test_every_phone_header_alias_adds_numbers(header):
    _, rows = read(f"client-identifier,{header}\nC1,9876543210\n")
    assert only(rows).call["contact-numbers"] == ["919876543210"]


def test_phone_columns_add_numbers_in_column_order_and_duplicates_are_sent_once():
    # Given Phonon's own upload template with tel1..tel3 and a repeated number
    _, rows = read("client-identifier,tel1,tel2,tel3\nC1,9876543210,+91 98765 43211,919876543210\n")
    # Then the numbers follow the columns and the duplicate is dropped silently
    row = only(rows)
    assert row.call["contact-numbers"] == ["919876543210", "919876543211"]
    assert row.warnings == []


def test_other_columns_become_flow_variables_named_as_written_and_empty_cells_add_none():
    _, rows = read("client-identifier,phone,Lead ID,$flow.key.Amount,city\nC1,9876543210,L-1,,Pune\n")
    assert only(rows).call["keys"] == [
        {"name": "$flow.key.Lead ID", "value": "L-1"},
        {"name": "$flow.key.city", "value": "Pune"},
    ]


def test_a_header_already_starting_with_flow_key_is_kept_as_it_is():
    _, rows = read("client-identifier,phone,$flow.key.LeadID\nC1,9876543210,130586000000165414\n")
    assert only(rows).call["keys"] == [{"name": "$flow.key.LeadID", "value": "130586000000165414"}]


def test_the_call_has_the_api_keys_in_order_and_no_security_id_nor_correlation_key():
    _, rows = read("client-identifier,phone,start-time,LeadID\nC1,9876543210,2026-06-29 09:42,7\n")
    call = only(rows).call
    assert list(call) == ["client-identifier", "start-time", "contact-numbers", "keys"]
    assert call == {"client-identifier": "C1", "start-time": "2026-06-29T09:42:00+05:30",
                    "contact-numbers": ["919876543210"], "keys": [{"name": "$flow.key.LeadID", "value": "7"}]}


def test_no_start_time_means_no_start_time_field():
    _, rows = read("client-identifier,phone,starttime\nC1,9876543210,\n")
    assert list(only(rows).call) == ["client-identifier", "contact-numbers", "keys"]


@pytest.mark.parametrize("header", ["OutboundRef", "$flow.key.OutboundRef", "outboundref"])
def test_a_column_named_like_the_correlation_key_is_dropped_with_a_warning_and_a_note(header):
    # Given a file that carries its own OutboundRef column
    cf, rows = read(f"client-identifier,phone,{header}\nC1,9876543210,abc\nC2,9876543211,\n")
    # Then the value is never sent (the pipeline adds its own), the row says so, the summary notes it
    first, second = rows
    assert first.call["keys"] == [] and second.call["keys"] == []
    assert first.warnings == ["column '" + header + "' ignored: $flow.key.OutboundRef is reserved for the "
                              "pipeline's own tracking reference"]
    assert second.warnings == []
    assert any("reserved" in n for n in cf.notes)


def test_the_correlation_key_name_is_configurable():
    opts = ParseOptions(now=NOW, correlation_key="Ref")
    _, rows = read("client-identifier,phone,OutboundRef,Ref\nC1,9876543210,a,b\n", opts=opts)
    assert only(rows).call["keys"] == [{"name": "$flow.key.OutboundRef", "value": "a"}]


def test_a_column_without_header_name_is_ignored_and_noted():
    cf, rows = read("client-identifier,phone,\nC1,9876543210,x\n")
    assert only(rows).call["keys"] == []
    assert any("column 3 has no header name" in n for n in cf.notes)


# -- client-identifier ---------------------------------------------------------------------

def test_client_identifier_is_trimmed():
    _, rows = read("client-identifier,phone\n  C1 \t,9876543210\n")
    assert only(rows).client_id == "C1"


def test_an_empty_client_identifier_is_rejected():
    _, rows = read("client-identifier,phone\n ,9876543210\n")
    assert only(rows) == RejectedRow(1, "", "client-identifier is empty")


def test_without_client_identifier_column_identifiers_are_generated_from_the_file_name():
    # Given Phonon's upload template (no client-identifier) in a gzip-less CSV with two extensions
    cf, rows = read("tel1,name\n9876543210,A\n\n9876543211,B\n", name="incoming/x/Leads.June.csv")
    # Then identifiers are <file name without extensions>-<row>, rows counted without blank lines
    assert [r.client_id for r in rows] == ["Leads.June-1", "Leads.June-2"]
    assert rows[1].call["client-identifier"] == "Leads.June-2"
    assert any("identifiers generated as Leads.June-<row>" in n for n in cf.notes)


def test_a_repeated_client_identifier_is_rejected_naming_the_first_row_whatever_its_fate():
    # Given C1 first on a row that is itself rejected (no valid number), then twice more
    _, rows = read("client-identifier,phone\nC1,123\nC2,9876543210\nC1,9876543211\nC1,9876543212\n")
    assert isinstance(rows[0], RejectedRow) and "not a valid number" in rows[0].reason
    assert isinstance(rows[1], ValidRow)
    assert rows[2] == RejectedRow(3, "C1", "duplicate client-identifier, first seen in row 1")
    assert rows[3] == RejectedRow(4, "C1", "duplicate client-identifier, first seen in row 1")


def test_client_identifiers_differing_only_in_case_are_different():
    _, rows = read("client-identifier,phone\nab,9876543210\nAB,9876543211\n")
    assert all(isinstance(r, ValidRow) for r in rows)


# -- numbers -----------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["9876543210", "+919876543210", "919876543210", "09876543210",
                                  "+91 98765 43210", "98765-43210", "(+91) 98765 43210", "0091 98765 43210"])
def test_numbers_are_normalised_to_e164_digits_without_plus(cell):
    _, rows = read(f'client-identifier,phone\nC1,"{cell}"\n')
    assert only(rows).call["contact-numbers"] == ["919876543210"]


@pytest.mark.parametrize("cell", ["9876543210;9876543211", "9876543210|9876543211", "9876543210 ; 9876543211|"])
def test_one_cell_may_hold_several_numbers_separated_by_semicolon_or_bar(cell):
    _, rows = read(f'client-identifier,phone\nC1,"{cell}"\n')
    assert only(rows).call["contact-numbers"] == ["919876543210", "919876543211"]


def test_an_invalid_number_is_dropped_and_the_accepted_row_says_so():
    _, rows = read("client-identifier,tel1,tel2\nC1,9876543210,12345\n")
    row = only(rows)
    assert isinstance(row, ValidRow)
    assert row.call["contact-numbers"] == ["919876543210"]
    assert row.warnings == ["contact number '••345' in tel2 is not a valid number for region IN "
                            "(number dropped, the row's other numbers are sent)"]


def test_a_row_left_without_a_valid_number_is_rejected_naming_each_value_and_column():
    _, rows = read("client-identifier,tel1,tel2\nC1,12345,+1 555\n")
    # (the values masked: a reason never carries a whole number)
    assert only(rows) == RejectedRow(1, "C1", "contact number '••345' in tel1 is not a valid number for region IN; "
                                              "contact number '•555' in tel2 is not a valid phone number")


def test_a_row_without_any_number_is_rejected_naming_the_empty_columns():
    _, rows = read("client-identifier,tel1,tel2,name\nC1,,,x\n")
    assert only(rows).reason == "no contact number (tel1, tel2 are empty)"
    _, rows = read("client-identifier,phone\nC1,\n")
    assert only(rows).reason == "no contact number (phone is empty)"


@pytest.mark.parametrize("cell", ["9.18E+11", "9,18E+11", "9.18e11"])
def test_spreadsheet_scientific_notation_is_invalid_and_named(cell):
    _, rows = read(f'client-identifier,phone\nC1,"{cell}"\n')
    assert only(rows).reason == ("a contact number in phone is in spreadsheet scientific notation, so its "
                                 "digits are lost; format the column as text in the spreadsheet and export the "
                                 "file again")


def test_the_default_region_is_configurable():
    opts = ParseOptions(now=NOW, default_region="GB")
    _, rows = read("client-identifier,phone\nC1,07400 123456\nC2,9876543210\n", opts=opts)
    assert rows[0].call["contact-numbers"] == ["447400123456"]
    assert rows[1].reason == "contact number '•••••••210' in phone is not a valid number for region GB"


def test_a_foreign_number_with_plus_is_accepted():
    _, rows = read("client-identifier,phone\nC1,+1 650 253 0000\n")
    assert only(rows).call["contact-numbers"] == ["16502530000"]


# -- start-time (details in test_contacts_starttime.py) -----------------------------------

def test_a_bad_start_time_rejects_the_row_and_reasons_are_combined():
    _, rows = read("client-identifier,phone,start-time\nC1,123,29/06/2026 10:00\n")
    reason = only(rows).reason
    assert reason.startswith("contact number '•••' in phone is not a valid number for region IN; ")
    assert "start-time '29/06/2026 10:00' is day-first" in reason  # a date is shown: it is no personal data
    assert "2026-06-29 10:00" in reason


# -- shape of the file ----------------------------------------------------------------------

def test_many_blank_lines_before_the_header_are_skipped():
    cf, rows = read("\r\n" * 20_000 + "client-identifier,phone\nC1,9876543210\n")
    assert [r.client_id for r in rows] == ["C1"]


def test_blank_lines_are_skipped_and_are_not_rows():
    cf, rows = read("\n\nclient-identifier,phone\n\nC1,9876543210\n   \n,,\nC2,9876543211\n\n")
    assert [(r.row, r.client_id) for r in rows] == [(1, "C1"), (2, "C2")]
    assert cf.row_count == 2


def test_a_row_with_more_cells_than_the_header_is_rejected():
    _, rows = read("client-identifier,phone,name\nC1,9876543210,Doe, John\n")
    assert only(rows) == RejectedRow(1, "C1", "row has 4 cells but the header has 3 (a value that contains the "
                                              "delimiter ',' must be in double quotes)")


def test_missing_trailing_cells_are_empty():
    _, rows = read("client-identifier,phone,name,start-time\nC1,9876543210\n")
    assert only(rows).call == {"client-identifier": "C1", "contact-numbers": ["919876543210"], "keys": []}


def test_quoted_fields_keep_embedded_delimiters_quotes_and_newlines():
    _, rows = read('client-identifier,phone,note\r\nC1,9876543210,"a, ""b""\r\nline 2"\r\nC2,9876543211,x\r\n')
    assert rows[0].call["keys"] == [{"name": "$flow.key.note", "value": 'a, "b"\r\nline 2'}]
    assert (rows[1].row, rows[1].client_id) == (2, "C2")


def test_crlf_line_endings():
    _, rows = read("client-identifier,phone\r\nC1,9876543210\r\nC2,9876543211\r\n")
    assert [r.client_id for r in rows] == ["C1", "C2"]


@pytest.mark.parametrize(("text", "delimiter"), [
    ("client-identifier;phone;name\nC1;9876543210;a,b\n", ";"),
    ("client-identifier\tphone\tname\nC1\t9876543210\ta;b\n", "\t"),
    ("client-identifier,phone\nC1,9876543210\n", ","),
    ('"client-identifier";"phone";"note, with comma"\nC1;9876543210;x\n', ";"),
])
def test_the_delimiter_is_sniffed(text, delimiter):
    cf, rows = read(text)
    assert cf.delimiter == delimiter
    assert isinstance(rows[0], ValidRow)


def test_an_excel_sep_line_is_honoured():
    cf, rows = read("sep=;\nclient-identifier;phone;note\nC1;9876543210;a,b,c\n")
    assert cf.delimiter == ";"
    assert only(rows).call["keys"] == [{"name": "$flow.key.note", "value": "a,b,c"}]


def test_a_tsv_file_prefers_tab():
    cf, _ = read("client-identifier\tphone\tnote, with comma, and more\nC1\t9876543210\tx\n", name="a.TSV")
    assert cf.delimiter == "\t"


# -- encodings --------------------------------------------------------------------------

def test_utf8_with_bom():
    cf, rows = read(b"\xef\xbb\xbfclient-identifier,phone,Nom\nC1,9876543210,Jos\xc3\xa9\n")
    assert only(rows).call["keys"] == [{"name": "$flow.key.Nom", "value": "José"}]
    assert cf.encoding == "utf-8" and not any("Windows-1252" in n for n in cf.notes)


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_bom(codec):
    text = "client-identifier,phone,Nom\r\nC1,9876543210,José\r\n"
    bom = {"utf-16": b"", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}[codec]
    cf, rows = read(bom + text.encode(codec))
    assert only(rows).call["keys"] == [{"name": "$flow.key.Nom", "value": "José"}]
    assert cf.encoding == "utf-16"


def test_a_file_that_is_not_utf8_is_read_as_windows_1252_and_noted():
    cf, rows = read("client-identifier,phone,Nom\nC1,9876543210,José – “x”\n".encode("cp1252"))
    assert only(rows).call["keys"] == [{"name": "$flow.key.Nom", "value": "José – “x”"}]
    assert cf.notes[:1] == ["not valid UTF-8: read as Windows-1252"]
    assert cf.encoding == "windows-1252"


def test_windows_1252_detected_late_in_a_big_file_still_decodes_every_row_the_same_way():
    # Given 400 KB of ASCII rows (many reads in) and then one Windows-1252 byte
    body = "".join(f"C{i},9876543210,x\n" for i in range(25_000))
    data = ("client-identifier,phone,name\n" + body + "Z,9876543211,Zoë\n").encode("cp1252")
    cf, rows = read(data)
    assert cf.notes[:1] == ["not valid UTF-8: read as Windows-1252"]
    assert rows[-1].call["keys"] == [{"name": "$flow.key.name", "value": "Zoë"}]
    assert len(rows) == 25_001


def test_undefined_windows_1252_bytes_do_not_fail():
    _, rows = read(b"client-identifier,phone,x\nC1,9876543210,a\x81b\n")
    assert only(rows).call["keys"] == [{"name": "$flow.key.x", "value": "a\x81b"}]


# -- resume, progress -----------------------------------------------------------------------

def test_rows_up_to_start_row_are_not_yielded_but_still_claim_client_identifiers():
    # Given a checkpoint after row 2, where row 1 claimed C1
    text = "client-identifier,phone\nC1,9876543210\nC2,123\nC1,9876543211\nC3,9876543212\n"
    _, rows = read(text, start_row=2)
    # Then rows 3 and 4 are yielded and row 3 is still a duplicate of row 1
    assert [r.row for r in rows] == [3, 4]
    assert rows[0] == RejectedRow(3, "C1", "duplicate client-identifier, first seen in row 1")


def test_bytes_read_and_row_count():
    data = b"client-identifier,phone\nC1,9876543210\nC2,9876543211\n"
    cf = open_contacts(io.BytesIO(data), "a.csv", OPTS)
    assert cf.row_count == 2 and cf.bytes_read == 0
    rows = list(cf.rows())
    assert len(rows) == 2 and cf.bytes_read == len(data)


def test_rows_can_be_iterated_only_once():
    cf = open_contacts(io.BytesIO(b"phone\n9876543210\n"), "a.csv", OPTS)
    list(cf.rows())
    with pytest.raises(RuntimeError):
        cf.rows()


def test_a_header_with_no_rows_is_zero_rows_not_an_error():
    cf, rows = read("client-identifier,phone\n\n")
    assert rows == [] and cf.row_count == 0


def test_a_cell_over_the_default_cell_limit_is_one_rejected_row_and_the_rest_go_on():
    big = "x" * 200_000
    cf, rows = read(f"client-identifier,phone,note\nC1,9876543210,{big}\nC2,9876543211,y\n")
    assert cf.row_count == len(rows)
    assert isinstance(rows[0], RejectedRow)
    assert rows[0].reason == "'note' has a value longer than the limit of 131,072 bytes (max_cell_bytes): row not read"
    assert rows[-1].client_id == "C2" and isinstance(rows[-1], ValidRow)


def test_file_rejected_is_an_exception_with_a_reason():
    with pytest.raises(FileRejected) as exc:
        read("name\nx\n")
    assert exc.value.reason.startswith("no phone column")
