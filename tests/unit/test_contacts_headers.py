"""Header roles by rule (issue 9 #1): phone columns of CRM and spreadsheet exports, record-id
columns, the explicit mapping (ParseOptions, S3 metadata, check_file), the same rules for
JSON keys, masked values in reasons and bounded, aggregated notes (issue 10 #3, #6)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from phonon_outbound.contacts import FileRejected, ParseOptions, RejectedRow, ValidRow, open_contacts
from phonon_outbound.contacts.headers import header_words, is_phone_header, is_record_id_header
from phonon_outbound.contacts.mapping import mapping_from_metadata, parse_options
from phonon_outbound.contacts.phones import masked
from phonon_outbound.settings import Settings

NOW = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
OPTS = ParseOptions(now=NOW)


def read(data: str | bytes, name: str = "leads.csv", opts: ParseOptions = OPTS):
    if isinstance(data, str):
        data = data.encode("utf-8")
    cf = open_contacts(io.BytesIO(data), name, opts)
    return cf, list(cf.rows())


PHONE_HEADERS = [
    # HubSpot
    "Phone Number", "Mobile Phone Number",
    # Salesforce API names and report labels
    "Phone", "MobilePhone", "HomePhone", "OtherPhone", "AssistantPhone", "Mobile", "Business Phone", "Asst. Phone",
    # Zoho
    "Home Phone", "Other Phone",
    # Pipedrive (with and without the object prefix), Freshworks
    "Phone - Work", "Phone - Mobile", "Phone - Home", "Phone - Other", "Person - Phone - Mobile",
    "Work phone", "Mobile phone", "Work Number", "Mobile Number",
    # everyday Indian sheets
    "Mobile No", "Mobile No.", "Mob", "Mob. No.", "MobNo", "Phone No", "Ph. No.", "Contact No", "Contact #",
    "Contact Number", "Telephone", "Tel", "Tel.", "Cell", "Cell #", "WhatsApp Number", "Whatsapp No",
    "Alternate Mobile", "Landline", "Mobile (Primary)", "Father Mobile No",
    # Phonon's own and the earlier aliases
    "contact-numbers", "contact_number", "Contact Number 2", "tel1", "TEL10", "Tel 4", "phone-number",
    "MOBILE_NUMBER",
]
NOT_PHONE_HEADERS = [
    "Phone Type", "Phone Number Type", "Phone Verified", "Mobile Opt Out", "Do Not Call", "DoNotCall",
    "DND Status", "Country Code", "Phone Country Code", "Phone Ext", "Extension", "Owner Phone", "Contact Owner",
    "Agent Mobile", "Phone ID", "Fax", "Business Fax", "Fax Number", "HasOptedOutOfFax", "Contact", "Contact ID",
    "Contact Name", "Last Call Date", "Mobile App", "SMS Opt In", "WhatsApp Name", "Preferred Phone", "Number",
    "Account Number", "Order No", "S.No.", "Email", "Mobile Banking", "Phone Active",
]


@pytest.mark.parametrize("header", PHONE_HEADERS)
def test_phone_columns_of_crm_and_spreadsheet_exports_are_phone_columns(header):
    assert is_phone_header(header_words(header)), header_words(header)
    cf, rows = read(f"client-identifier,{header},city\nC1,9876543210,Pune\n")
    assert rows[0].call["contact-numbers"] == ["919876543210"]
    assert rows[0].call["keys"] == [{"name": "$flow.key.city", "value": "Pune"}]  # not a flow variable


@pytest.mark.parametrize("header", NOT_PHONE_HEADERS)
def test_headers_about_a_phone_or_of_other_things_are_not_phone_columns(header):
    assert not is_phone_header(header_words(header)), header_words(header)


def test_a_flow_key_header_stays_a_flow_variable_even_when_it_names_a_phone():
    _, rows = read("client-identifier,phone,$flow.key.Mobile\nC1,9876543210,x\n")
    assert rows[0].call["keys"] == [{"name": "$flow.key.Mobile", "value": "x"}]


def test_header_words_normalise_case_punctuation_and_camel_case():
    assert header_words(" Mob. No. ") == header_words("mob_no") == header_words("MobNo") == ("mob", "no")
    assert header_words("MobilePhone") == ("mobile", "phone")
    assert header_words("Cell #") == ("cell", "no")
    assert header_words("Phone (Work)/Home: x") == ("phone", "work", "home", "x")
    assert header_words("tel1") == ("tel", "1")


@pytest.mark.parametrize("header", ["Record ID", "Id", "ID", "Contact ID", "Lead ID", "Customer ID", "Client ID",
                                    "Person - ID", "Record Id", "LeadId"])
def test_record_id_headers(header):
    assert is_record_id_header(header_words(header))


@pytest.mark.parametrize("header", ["AccountId", "OwnerId", "CreatedById", "Account ID", "MasterRecordId",
                                    "Jigsaw Contact Id", "Deal ID", "Email ID"])
def test_other_records_ids_are_not_record_ids(header):
    assert not is_record_id_header(header_words(header))


def test_a_file_with_one_record_id_column_uses_it_and_says_so():
    cf, rows = read("Id,AccountId,MobilePhone\n0035g01,0015g01,9876543210\n0035g02,0015g01,9876543211\n")
    assert [r.client_id for r in rows] == ["0035g01", "0035g02"]
    assert "client-identifier from 'Id' (the file's record id; no client-identifier column)" in cf.notes


def test_client_identifier_wins_over_a_record_id():
    cf, rows = read("Lead ID,client-identifier,phone\nL1,C1,9876543210\n")
    assert rows[0].client_id == "C1"
    assert {"name": "$flow.key.Lead ID", "value": "L1"} in rows[0].call["keys"]
    assert "client-identifier from 'client-identifier'" in cf.notes


def test_two_record_id_columns_are_ambiguous_identifiers_are_generated_and_the_notes_say_why():
    cf, rows = read("Record ID,Contact ID,phone\nR1,C1,9876543210\n")
    assert rows[0].client_id == "leads-1"
    assert any(n.startswith("2 columns could be the record id ('Record ID', 'Contact ID')") for n in cf.notes)


def test_a_row_with_an_empty_record_id_is_still_called_with_a_generated_identifier():
    _, rows = read("Record ID,phone\n,9876543210\n")
    assert isinstance(rows[0], ValidRow) and rows[0].client_id == "leads-1"
    assert rows[0].warnings == ["'Record ID' is empty: identifier generated as leads-1"]


# -- the explicit mapping ------------------------------------------------------------------

def test_an_explicit_phone_mapping_replaces_the_rule_matched_as_headers_are():
    opts = ParseOptions(now=NOW, phone_columns=("alt mobile", "Primary Contact"))
    cf, rows = read("Primary Contact,Phone,Alt-Mobile\n9876543210,9876543211,9876543212\n", opts=opts)
    assert rows[0].call["contact-numbers"] == ["919876543210", "919876543212"]  # column order
    assert rows[0].call["keys"] == [{"name": "$flow.key.Phone", "value": "9876543211"}]
    assert "phone numbers from 'Primary Contact', 'Alt-Mobile'" in cf.notes


def test_an_explicit_id_mapping_wins():
    opts = ParseOptions(now=NOW, id_column="Loan Account")
    cf, rows = read("client-identifier,Loan Account,phone\nC1,LA-7,9876543210\n", opts=opts)
    assert rows[0].client_id == "LA-7"
    assert "client-identifier from 'Loan Account' (the id-column mapping)" in cf.notes


@pytest.mark.parametrize("opts", [ParseOptions(phone_columns=("Mobile",)), ParseOptions(id_column="Cust No")])
def test_a_mapping_naming_a_column_the_file_does_not_have_rejects_the_file(opts):
    with pytest.raises(FileRejected) as exc:
        read("client-identifier,phone\nC1,9876543210\n", opts=opts)
    assert "the column mapping names" in exc.value.reason and "not a column of this file's header" in exc.value.reason


def test_mapping_from_s3_metadata():
    assert mapping_from_metadata({"Phone-Columns": "Mobile No., Alt Mobile ,", "id-column": " Cust ID "}) == {
        "phone_columns": ("Mobile No.", "Alt Mobile"), "id_column": "Cust ID"}
    assert mapping_from_metadata({"flow-id": "AB12CD34", "phone-columns": " "}) == {}
    assert mapping_from_metadata(None) == {}


def test_parse_options_from_settings_carry_the_caps_and_the_mapping():
    s = Settings(max_line_bytes=4096, max_columns=50, max_cell_bytes=100, max_decompressed_bytes=10_000)
    opts = parse_options(s, phone_columns="A, B", id_column="C")
    assert (opts.max_line_bytes, opts.max_columns, opts.max_cell_bytes, opts.max_decompressed_bytes) == (
        4096, 50, 100, 10_000)
    assert opts.phone_columns == ("A", "B") and opts.id_column == "C"
    assert Settings.from_env({"MAX_LINE_BYTES": "2048"}).max_line_bytes == 2048


def test_check_file_takes_the_mapping(tmp_path):
    from phonon_outbound_dev.check import check_file
    f = tmp_path / "sheet.csv"
    f.write_text("Cust No,Primary Contact\nK1,9876543210\n")
    s = Settings(default_flow_id="AB12CD34")
    assert check_file(f, s, tmp_path / "out")["error"].startswith("no phone column")
    summary = check_file(f, s, tmp_path / "out2", phone_columns="Primary Contact", id_column="Cust No")
    assert summary["accepted"] == 1
    bad = check_file(f, s, tmp_path / "out3", phone_columns=["Mobile"])
    assert bad["error"].startswith("the column mapping names 'Mobile'")


# -- JSON and JSON Lines ---------------------------------------------------------------

def test_json_objects_take_phone_keys_by_the_same_rule_in_key_order():
    objs = [{"client-identifier": "a", "Mobile Phone Number": "9876543210", "phone": "9876543211",
             "contact-numbers": ["9876543212"], "Phone Type": "mobile"}]
    cf, rows = read(json.dumps(objs), "calls.json")
    assert rows[0].call["contact-numbers"] == ["919876543210", "919876543211", "919876543212"]


def test_json_lines_with_only_a_mobile_key_and_a_record_id():
    cf, rows = read('{"Record ID": "51", "MobilePhone": 9876543210}\n', "calls.jsonl")
    assert isinstance(rows[0], ValidRow) and rows[0].client_id == "51"
    assert rows[0].call["contact-numbers"] == ["919876543210"]


def test_json_mapping_applies_and_a_missing_mapped_key_rejects_the_file():
    opts = ParseOptions(now=NOW, phone_columns=("Primary",), id_column="Cust No")
    _, rows = read('[{"Cust No": "K1", "Primary": "9876543210", "phone": "9876543211"}]', "c.json", opts)
    assert rows[0].client_id == "K1" and rows[0].call["contact-numbers"] == ["919876543210"]
    with pytest.raises(FileRejected) as exc:
        read('{"client-identifier": "a", "phone": "9876543211"}\n', "c.jsonl", ParseOptions(phone_columns=("Mob",)))
    assert exc.value.reason == "the column mapping names 'Mob', which no call object of this file has"


def test_json_duplicate_record_ids_are_found_in_the_pre_pass():
    data = json.dumps([{"Record ID": "7", "phone": "9876543210"}, {"Record ID": "7", "phone": "9876543211"}])
    _, rows = read(data, "c.json")
    assert isinstance(rows[1], RejectedRow) and rows[1].reason == "duplicate client-identifier, first seen in row 1"


# -- no cell value in a reason or note (issue 10 #6) -----------------------------------------

def test_masked_values_keep_at_most_the_last_three_digits():
    assert masked("9876543728") == "'•••••••728'"
    assert masked("+91 98765 43728") == "'•••••••••728'"
    assert masked("123") == "'•••'"
    assert masked("Asha Rao") == "(a value of 8 characters)"


def test_a_rejected_rows_reason_names_the_column_and_masks_the_value():
    _, rows = read("Record ID,Mobile Phone Number,Email\n1,98765 4321,asha@example.com\n2,asha@example.com,x\n")
    assert rows[0].reason == ("contact number '••••••321' in Mobile Phone Number is not a valid number "
                              "for region IN")
    assert "asha" not in rows[1].reason and rows[1].reason.startswith(
        "contact number (a value of 16 characters) in Mobile Phone Number")


def test_a_header_that_looks_like_data_is_not_echoed_in_a_rejection():
    with pytest.raises(FileRejected) as exc:
        read("Asha Rao,Pune,asha@example.com\nRavi,Delhi,r@example.com\n")
    reason = exc.value.reason
    assert reason.startswith("no header: the first line looks like data")
    assert "asha" not in reason.lower() and "Pune" not in reason
    # names that look like headers may be named (truncated); long values are not
    with pytest.raises(FileRejected) as exc:
        read("Name,City," + "x" * 200 + "\nRavi,Delhi,y\n")
    assert exc.value.reason.startswith("no phone column: the header (Name, City) has no phone column")


# -- notes: aggregated, bounded, linear (issue 10 #3) ------------------------------------------

def test_ten_thousand_unnamed_trailing_columns_give_one_short_note():
    header = "client-identifier,phone" + "," * 10_000
    row = "C1,9876543210" + "," * 10_000
    cf, rows = read(f"{header}\n{row}\n")
    assert isinstance(rows[0], ValidRow)
    unnamed = [n for n in cf.notes if "no header name" in n]
    assert unnamed == ["10,000 columns have no header name (columns 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, … "
                       "(10,000 in all)): their values are ignored"]
    assert sum(map(len, cf.notes)) < 1000


def test_notes_are_bounded_in_number_and_length():
    from phonon_outbound.contacts.reader import MAX_NOTE_CHARS, MAX_NOTES, ContactFile
    cf = ContactFile.__new__(ContactFile)
    cf.notes, cf._notes_seen, cf._notes_dropped = [], set(), 0
    for i in range(5000):
        cf._note(f"note {i} " + "x" * 1000)
        cf._note(f"note {i} " + "x" * 1000)  # a repeat is dropped
    assert len(cf.notes) == MAX_NOTES and all(len(n) <= MAX_NOTE_CHARS for n in cf.notes)
    assert cf.notes[-1] == f"… and {5000 - MAX_NOTES + 1:,} more notes"


def test_ingest_reads_the_mapping_from_the_objects_metadata_and_the_caps_from_settings():
    from phonon_outbound.ingest import IngestService
    service = IngestService(Settings(max_columns=77), None, None, None, None, None)  # type: ignore[arg-type]
    opts = service._parse_options({"phone-columns": "Primary Contact,Alt", "id-column": "Cust No", "flow-id": "x"})
    assert (opts.phone_columns, opts.id_column, opts.max_columns) == (("Primary Contact", "Alt"), "Cust No", 77)
    assert service._parse_options({}).phone_columns is None


def test_no_cell_value_reaches_any_reason_warning_or_note():
    # every way a row can go wrong, with distinctive values; none may be echoed (issue 10 #6)
    secrets = ["98765 43728", "12345678", "asha.rao@example.com", "Asha Rao", "9.18E+11", "tomorrow 5pm",
               "+1 555 0199 77", "Flat 4B Marine Drive"]
    csv_text = ("Record ID,Mobile Phone Number,Phone,start-time,Address\n"
                f"1,{secrets[0]},{secrets[1]},,{secrets[7]}\n"
                f"2,{secrets[2]},{secrets[3]},{secrets[5]},x\n"
                f"3,\"{secrets[4]}\",{secrets[6]},,x\n"
                f"4,9876543210,{secrets[2]},,x,{secrets[3]}\n")
    cf, rows = read(csv_text)
    json_text = json.dumps([{"client-identifier": "a", "phone": secrets[1], "start-time": secrets[5],
                             "Mobile": {"n": secrets[0]}}])
    jf, jrows = read(json_text, "x.json")
    texts = [*cf.notes, *jf.notes]
    for r in [*rows, *jrows]:
        texts.append(r.reason if isinstance(r, RejectedRow) else "; ".join(r.warnings))
    blob = "\n".join(texts)
    assert len([r for r in rows if isinstance(r, RejectedRow)]) >= 3
    for value in secrets:
        assert value not in blob, (value, blob)
    for digits in ("98765", "43728", "12345678", "5550199"):
        assert digits not in blob.replace(" ", ""), (digits, blob)
