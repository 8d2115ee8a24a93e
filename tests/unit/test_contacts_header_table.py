"""Header roles, table-driven (issue 9 #1: "build for the rule, not for the examples"): the
real export and import headers of HubSpot, Salesforce (Data Loader, reports, NPSP), Zoho,
Pipedrive, Freshsales, Dynamics 365, Google and Outlook contacts, LeadSquared, Kylas, Bitrix24,
Zendesk Sell, Odoo, Shopify, WooCommerce, Indian spreadsheets and form responses, and the traps
that name something *about* a phone. Role: P a phone column, I a record-id column, V a flow
variable (neither). docs/contact-files.md "Phone columns: the rule" and "Identifiers".

The rule before this table got 53 of these wrong, e.g. 'Billing Phone', 'What is your phone
number?', 'Phone number (with country code)', 'RMN', 'Teléfono', '(Do Not Modify) Contact',
'ProspectID', 'mobilephone', 'Customer_ID__c' (missed) and 'Do you have WhatsApp?', 'Number of Phones', 'Hashed Phone' (taken)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from phonon_outbound.contacts import ParseOptions, ValidRow, open_contacts
from phonon_outbound.contacts.headers import header_words, is_phone_header, is_record_id_header, map_header

HEADERS = [
    # HubSpot
    ('Phone Number', 'P'), ('Mobile Phone Number', 'P'), ('Record ID', 'I'), ('Contact owner', 'V'),
    ('WhatsApp Phone Number', 'P'), ('Phone Number Country', 'V'), ('Associated Company IDs', 'V'),
    ('Associated Contact IDs', 'V'), ('Company owner', 'V'), ('Lead Status', 'V'), ('Fax Number', 'V'),
    ('Marketing contact status', 'V'), ('Number of Sales Activities', 'V'),
    ('Number of times contacted', 'V'), ('Last Contacted', 'V'), ('Salesforce Contact ID', 'V'),
    # Salesforce
    ('Id', 'I'), ('Phone', 'P'), ('MobilePhone', 'P'), ('HomePhone', 'P'), ('OtherPhone', 'P'),
    ('AssistantPhone', 'P'), ('Fax', 'V'), ('DoNotCall', 'V'), ('HasOptedOutOfFax', 'V'),
    ('HasOptedOutOfEmail', 'V'), ('AccountId', 'V'), ('OwnerId', 'V'), ('CreatedById', 'V'),
    ('LastModifiedById', 'V'), ('ReportsToId', 'V'), ('MasterRecordId', 'V'), ('ConvertedContactId', 'V'),
    ('IndividualId', 'V'),
    # Salesforce report
    ('Business Phone', 'P'), ('Mobile', 'P'), ('Asst. Phone', 'P'), ('Contact ID', 'I'), ('Lead ID', 'I'),
    ('Account Owner', 'V'), ('Contact Owner', 'V'), ('Lead Owner', 'V'), ('Account Phone', 'P'),
    ('Contact: Contact ID', 'I'), ('Contact: Mobile', 'P'),
    # Salesforce NPSP
    ('Preferred Phone', 'V'), ('npe01__PreferredPhone__c', 'V'), ('npe01__WorkPhone__c', 'P'),
    # Salesforce custom
    ('Mobile_Number__c', 'P'), ('Alternate_Phone__c', 'P'), ('Customer_ID__c', 'I'),
    # Zoho
    ('Record Id', 'I'), ('Lead Owner Id', 'V'), ('Home Phone', 'P'), ('Other Phone', 'P'),
    ('Asst Phone', 'P'), ('Lead Source', 'V'), ('Email Opt Out', 'V'), ('Skype ID', 'V'),
    ('Secondary Email', 'V'), ('No. of Employees', 'V'), ('Created By', 'V'), ('Contact Owner.id', 'V'),
    # Pipedrive
    ('Person - ID', 'I'), ('Person - Phone - Work', 'P'), ('Person - Phone - Mobile', 'P'),
    ('Person - Phone - Home', 'P'), ('Person - Phone - Other', 'P'), ('Phone - Work', 'P'),
    ('Person - Owner', 'V'), ('Person - Organization', 'V'), ('Person - Label', 'V'),
    ('Organization - ID', 'V'), ('Person - Marketing status', 'V'),
    # Freshsales
    ('Work Number', 'P'), ('Mobile Number', 'P'), ('Work phone', 'P'), ('Mobile phone', 'P'),
    ('Phone numbers', 'P'), ('Sales owner', 'V'), ('Do not disturb', 'V'), ('Lead score', 'V'),
    # Dynamics 365
    ('(Do Not Modify) Contact', 'I'), ('(Do Not Modify) Lead', 'I'), ('(Do Not Modify) Row Checksum', 'V'),
    ('(Do Not Modify) Modified On', 'V'), ('(Do Not Modify) Account', 'V'), ('Mobile Phone', 'P'),
    ('Telephone 3', 'P'), ('Business Phone 2', 'P'), ('Company Phone', 'P'), ('Manager Phone', 'V'),
    ('Do not allow Phone Calls', 'V'), ('Preferred Method of Contact', 'V'), ('Callback Number', 'P'),
    # Google
    ('Phone 1 - Type', 'V'), ('Phone 1 - Value', 'P'), ('Phone 2 - Value', 'P'), ('Phone 1 - Label', 'V'),
    ('E-mail 1 - Value', 'V'), ('Given Name', 'V'), ('Group Membership', 'V'),
    # Outlook
    ('Home Phone 2', 'P'), ('Primary Phone', 'P'), ('Car Phone', 'P'), ('Company Main Phone', 'P'),
    ("Assistant's Phone", 'P'), ('Radio Phone', 'P'), ('Pager', 'V'), ('ISDN', 'V'), ('Telex', 'V'),
    ('TTY/TDD Phone', 'V'), ('Business Fax', 'V'), ('Home Fax', 'V'), ('E-mail Address', 'V'),
    # LeadSquared
    ('ProspectID', 'I'), ('Prospect Id', 'I'), ('Lead Number', 'V'), ('Phone Number ', 'P'), ('Owner', 'V'),
    # LeadSquared custom
    ('mx_Alternate_Mobile', 'P'),
    # Kylas
    ('Phone Numbers', 'P'), ('Company Phones', 'P'),
    # Bitrix24
    ('Work Phone', 'P'), ('Other phone', 'P'), ('Mobile phone 2', 'P'), ('Responsible person', 'V'),
    # Zendesk Sell
    ('mobile', 'P'), ('phone', 'P'), ('owner', 'V'),
    # Odoo
    ('Contact/Mobile', 'P'), ('External ID', 'V'),
    # Shopify
    ('Customer ID', 'I'), ('Default Address Phone', 'P'), ('Accepts SMS Marketing', 'V'),
    ('Accepts Email Marketing', 'V'), ('Total Orders', 'V'),
    # WooCommerce
    ('Billing Phone', 'P'), ('Shipping Phone', 'P'), ('billing_phone', 'P'), ('Order Number', 'V'),
    # sheet
    ('Mobile No.', 'P'), ('Mob No', 'P'), ('Contact No.', 'P'), ('Ph. No.', 'P'),
    ('Phone No (Primary)', 'P'), ('Alternate Contact Number', 'P'), ('Customer Mobile', 'P'),
    ('Registered Mobile Number', 'P'), ('RMN', 'P'), ('Cust Mob', 'P'), ('Mobile1', 'P'), ('Mob2', 'P'),
    ('Alt. Mobile No.', 'P'), ("Father's Mobile No", 'P'), ('Parent Contact No.', 'P'),
    ('Landline (with STD code)', 'P'), ('Tel No', 'P'), ('Borrower Mobile', 'P'),
    ('Co-Applicant Mobile No', 'P'), ('Contact Person Mobile', 'P'), ('WhatsApp No.', 'P'),
    ('Phone_No', 'P'), ('Primary Contact Number', 'P'), ('Cust ID', 'I'), ('Client ID', 'I'),
    ('Customer Name', 'V'), ('Email ID', 'V'), ('Loan Account No', 'V'), ('PAN No', 'V'),
    ('Aadhaar Number', 'V'), ('S.No.', 'V'), ('Sr. No.', 'V'), ('STD Code', 'V'), ('Pin Code', 'V'),
    ('House No', 'V'), ('Flat No.', 'V'), ('Amount Due', 'V'), ('EMI Date', 'V'), ('Branch', 'V'),
    ('Relationship Manager Mobile', 'V'), ('Emergency Contact Number', 'V'),
    ('Mobile Number Verified', 'V'), ('Is WhatsApp Number', 'V'), ('Whats App Number', 'P'),
    ('Cell Phone', 'P'), ('Tel. (Office)', 'P'), ('Phone#', 'P'), ('Mobile Number 2', 'P'),
    ('Contact Phone', 'P'), ('Primary Contact', 'V'), ('MOBILENO', 'P'), ('ALTMOBNO', 'P'),
    ('CONTACTNO', 'P'), ('PHNO', 'P'), ('CUST_MOBILE', 'P'), ('MOBILE_NO_1', 'P'), ('Tel. Res.', 'P'),
    ('Resi. Phone', 'P'), ('Mobile [Work]', 'P'), ('Contact Details', 'V'), ('New Mobile Number', 'P'),
    ('Guardian Mobile', 'P'), ('CUSTOMERID', 'I'), ('Contact Record ID', 'I'), ('Mobile (+91)', 'P'),
    # Razorpay
    ('Customer Contact', 'V'),
    # forms
    ('What is your phone number?', 'P'), ('Phone number (with country code)', 'P'),
    ('Your WhatsApp number', 'P'), ('Mobile Number (WhatsApp)', 'P'), ('Phone (e.g. +91 98765 43210)', 'P'),
    ('Contact Number (10 digits)', 'P'), ('Mobile number including country code', 'P'),
    ('Best phone number to reach you', 'P'), ('Phone Number (include country code)', 'P'),
    ('What is your mobile number?', 'P'), ('Do you have WhatsApp?', 'V'), ('Can we call you?', 'V'),
    ('Is this your WhatsApp number?', 'V'), ('Best time to call', 'V'), ('How did you hear about us?', 'V'),
    ('Timestamp', 'V'), ('Phone number (optional)', 'P'), ('WhatsApp Number (if different)', 'P'),
    ('Phone Numbers (comma separated)', 'P'),
    # trap
    ('Phone Type', 'V'), ('Do Not Call', 'V'), ('Mobile Opt Out', 'V'), ('Phone Verified', 'V'),
    ('Country Code', 'V'), ('Phone Extension', 'V'), ('Contact Name', 'V'), ('Contact Type', 'V'),
    ('Contact Email', 'V'), ('Telegram Username', 'V'), ('Hotel', 'V'), ('Cellar', 'V'),
    ('Mobility Score', 'V'), ('Teller ID', 'V'), ('Phone Calls Count', 'V'), ('Last Call Date', 'V'),
    ('Owner Phone', 'V'), ('Account ID', 'V'), ('Owner ID', 'V'), ('Created By ID', 'V'), ('ID', 'I'),
    ('Lead Id', 'I'), ('Telecaller', 'V'), ('Telecaller Name', 'V'), ('Mobile Operator', 'V'),
    ('Phone Carrier', 'V'), ('Mobile Model', 'V'), ('Mobile App Installed', 'V'),
    ('Phone Bill Amount', 'V'), ('Cell Phone Provider', 'V'), ('Telephony Status', 'V'),
    ('Mobile Network', 'V'), ('Phone Status', 'V'), ('Mobile Phone Verified At', 'V'), ('SMS Opt In', 'V'),
    ('WhatsApp Opt-in', 'V'), ('Calls Made', 'V'), ('Number', 'V'), ('Contact', 'V'), ('Agent Mobile', 'V'),
    ('Sales Rep Phone', 'V'), ('Deal ID', 'V'), ('Company ID', 'V'), ('Parent ID', 'V'),
    ('Contact Owner ID', 'V'), ('Email', 'V'), ('Cellular Data Plan', 'V'), ('Phone Last Verified', 'V'),
    ('Number of Phones', 'V'), ('No. of Mobiles', 'V'), ('Hashed Phone', 'V'), ('phone_sha256', 'V'),
    ('Last 4 Digits of Mobile', 'V'), ('Mobile Updated On', 'V'), ('Phone Number Created Date', 'V'),
    ('IsMobileVerified', 'V'), ('Mobile Recharge Amount', 'V'), ('SIM Number', 'V'), ('IMEI', 'V'),
    ('NDNC Status', 'V'), ('Mobile Not Reachable', 'V'), ('phonetype', 'V'), ('faxno', 'V'),
    ('ownerphone', 'V'), ('Telnet Port', 'V'), ('homework', 'V'), ('hotelname', 'V'), ('cellarname', 'V'),
    ('Phone/Email', 'V'), ('Sales Person Mobile', 'V'), ('Counsellor Mobile', 'V'), ('RM Mobile', 'V'),
    ('Branch Phone', 'V'), ('Reference 1 Mobile', 'V'), ('WhatsApp Group', 'V'), ('WhatsApp Link', 'V'),
    ('WhatsApp Message', 'V'), ('Mobile Number Available', 'V'), ('Old Mobile Number', 'V'),
    ('Contact Type No', 'V'), ('Emergency Contact No', 'V'),
    # es
    ('Teléfono', 'P'), ('Teléfono móvil', 'P'), ('Número de celular', 'P'),
    # fr
    ('Téléphone portable', 'P'),
    # HubSpot internal
    ('mobilephone', 'P'),
    # Salesforce lower
    ('homephone', 'P'), ('assistantphone', 'P'), ('otherphone', 'P'),
    # lower
    ('contactid', 'I'), ('leadid', 'I'), ('recordid', 'I'), ('accountid', 'V'), ('ownerid', 'V'),
    # template
    ('Phone Number*', 'P'),
    # Tally
    ('Contact Person No.', 'P'), ('Contact Person', 'V'), ('Party Mobile No', 'P'), ('Fax No', 'V'),
    # app export
    ('primary_phone_e164', 'P'), ('Phone (E.164)', 'P'),
]
NOW = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)


def role(header: str) -> str:
    words = header_words(header)
    return "P" if is_phone_header(words) else "I" if is_record_id_header(words) else "V"


def test_the_table_is_large_and_has_no_repeats():
    assert len(HEADERS) >= 150
    assert len({h for h, _ in HEADERS}) == len(HEADERS)
    assert {r for _, r in HEADERS} == {"P", "I", "V"}


@pytest.mark.parametrize(("header", "expected"), HEADERS)
def test_header_role(header, expected):
    assert role(header) == expected, header_words(header)


def test_every_phone_header_of_the_table_gives_numbers_in_a_file_and_the_rest_are_flow_variables():
    # one wide file with every header of the table: the roles hold in map_header too (built once per file)
    names = [h.strip() for h, _ in HEADERS]
    cols = map_header(names, "$flow.key.OutboundRef")
    phones = {names[i] for i, _ in cols.phones}
    assert phones == {h.strip() for h, r in HEADERS if r == "P"}
    keys = {k.removeprefix("$flow.key.") for _, k in cols.keys}
    assert {h.strip() for h, r in HEADERS if r != "P"} <= keys
    # many record-id candidates in one header: none is used, a note says why
    assert cols.client is None and any("could be the record id" in n for n in cols.notes)


@pytest.mark.parametrize("header", ["Billing Phone", "What is your phone number?", "Phone number (with country code)",
                                    "RMN", "Teléfono", "Phone (e.g. +91 98765 43210)", "Callback Number"])
def test_headers_the_old_rule_missed_are_read_as_numbers_in_a_file(header):
    data = f'client-identifier,"{header}",city\nC1,98765 43210,Pune\n'.encode()
    rows = list(open_contacts(io.BytesIO(data), "x.csv", ParseOptions(now=NOW)).rows())
    assert isinstance(rows[0], ValidRow) and rows[0].call["contact-numbers"] == ["919876543210"]
    assert rows[0].call["keys"] == [{"name": "$flow.key.city", "value": "Pune"}]


@pytest.mark.parametrize(("header", "expected"), [("(Do Not Modify) Contact", "3fa85f64-5717-4562-b3fc-2c963f66afa6"),
                                                  ("ProspectID", "a1b2c3"), ("Cust ID", "K-17")])
def test_one_record_id_column_of_the_newly_recognised_kinds_is_the_identifier(header, expected):
    data = f'"{header}",Mobile Phone,(Do Not Modify) Row Checksum\n{expected},9876543210,abc==\n'.encode()
    cf = open_contacts(io.BytesIO(data), "x.csv", ParseOptions(now=NOW))
    rows = list(cf.rows())
    assert rows[0].client_id == expected
    assert f"client-identifier from '{header}' (the file's record id; no client-identifier column)" in cf.notes


def test_json_keys_follow_the_same_table():
    objs = [{"Record ID": "7", "Mobile Phone": "98765 43210", "Billing Phone": "9876543211",
             "What is your phone number?": "9876543212", "Phone Type": "mobile", "Do you have WhatsApp?": "yes",
             "Hashed Phone": "9876543213", "Owner Phone": "9876543214"}]
    for name, data in (("c.json", json.dumps(objs)), ("c.jsonl", json.dumps(objs[0]) + "\n")):
        cf = open_contacts(io.BytesIO(data.encode()), name, ParseOptions(now=NOW))
        rows = list(cf.rows())
        assert rows[0].client_id == "7", name
        assert rows[0].call["contact-numbers"] == ["919876543210", "919876543211", "919876543212"], name


# -- several numbers in one cell ---------------------------------------------------------------

def _read(data: str, opts: ParseOptions | None = None, name: str = "x.csv"):
    cf = open_contacts(io.BytesIO(data.encode()), name, opts or ParseOptions(now=NOW))
    return cf, list(cf.rows())


@pytest.mark.parametrize(("cell", "numbers"), [
    ("9876543210 / 9123456780", ["919876543210", "919123456780"]),
    ('"+91-98765-43210, 022 2345 6789"', ["919876543210", "912223456789"]),
    ("9876543210;9123456780|022 2345 6789", ["919876543210", "919123456780", "912223456789"]),
    ('"9876543210/9123456780; 9876543211"', ["919876543210", "919123456780", "919876543211"]),
    ("022/23456789", ["912223456789"]),  # an STD code written with '/': one number
    ("+91 11 2345 6703 ::: +91 98765 43403", ["911123456703", "919876543403"]),  # Google Contacts' joiner
    ("9876543210 or 9123456780", ["919876543210", "919123456780"]),
    ("9876543210 & 9123456780", ["919876543210", "919123456780"]),
    ("9876543210 9123456780", ["919876543210", "919123456780"]),
    ("98765 43210 and 91234 56780", ["919876543210", "919123456780"]),
    ('"98765 43210, 9876543210"', ["919876543210"]),  # the same number twice: sent once
])
def test_a_cell_may_hold_several_numbers(cell, numbers):
    _, rows = _read(f"client-identifier,Mobile No\nC1,{cell}\n")
    assert isinstance(rows[0], ValidRow) and rows[0].call["contact-numbers"] == numbers


def test_separators_do_not_cut_one_number_into_pieces_and_bad_parts_are_named_masked():
    _, rows = _read('client-identifier,Mobile No\nC1,"9,876,543,210"\nC2,"9876543210, 12345678"\n')
    assert rows[0].reason == "contact number '•••••••210' in Mobile No is not a valid number for region IN " \
                             "(not a phone number)"
    assert rows[1].call["contact-numbers"] == ["919876543210"]
    assert rows[1].warnings == ["contact number '•••••678' in Mobile No is not a valid number for region IN "
                                "(number dropped, the row's other numbers are sent)"]


def test_json_values_holding_several_numbers_are_split_alike():
    _, rows = _read(json.dumps([{"client-identifier": "a", "phone": "9876543210 / 9123456780"}]), name="c.json")
    assert rows[0].call["contact-numbers"] == ["919876543210", "919123456780"]


# -- the explicit mapping: edge cases ------------------------------------------------------------

def test_metadata_mapping_names_are_matched_whatever_their_case_spacing_and_punctuation():
    from phonon_outbound.contacts.mapping import mapping_from_metadata
    opts = ParseOptions(now=NOW, **mapping_from_metadata({"Phone-Columns": " primary CONTACT ,alt_mobile ",
                                                          "ID-Column": "  loan account no. "}))
    cf, rows = _read("Loan Account No,Primary Contact,Alt. Mobile,Phone\nLA-1,9876543210,9876543211,9876543212\n", opts)
    assert rows[0].client_id == "LA-1"
    assert rows[0].call["contact-numbers"] == ["919876543210", "919876543211"]  # 'Phone' is not mapped
    assert "phone numbers from 'Primary Contact', 'Alt. Mobile'" in cf.notes


def test_an_explicit_id_column_is_the_identifier_so_an_empty_cell_rejects_the_row():
    opts = ParseOptions(now=NOW, id_column="Loan Account")
    _, rows = _read("Loan Account,phone\nLA-1,9876543210\n,9876543211\n  ,9876543212\n", opts)
    assert rows[0].client_id == "LA-1"
    for r in rows[1:]:
        assert r.reason == "client-identifier is empty ('Loan Account', the id-column mapping, is empty)"


def test_an_implicit_record_id_that_is_empty_still_calls_with_a_generated_identifier():
    _, rows = _read("Record ID,phone\nR1,9876543210\n,9876543211\n")
    assert rows[1].client_id == "x-2" and rows[1].warnings == ["'Record ID' is empty: identifier generated as x-2"]


def test_a_mapping_naming_a_missing_column_rejects_the_whole_file_naming_it():
    from phonon_outbound.contacts import FileRejected
    with pytest.raises(FileRejected) as exc:
        _read("Mobile,Name\n9876543210,Asha\n", ParseOptions(phone_columns=("Mobile", "Alt Mobile")))
    assert exc.value.reason == "the column mapping names 'Alt Mobile', which is not a column of this file's header"


def test_a_file_whose_only_candidate_is_contact_is_rejected_with_a_hint_and_the_mapping_reads_it():
    from phonon_outbound.contacts import FileRejected
    data = "id,amount,email,contact\npay_1,100,a@example.com,+919876543210\n"
    with pytest.raises(FileRejected) as exc:
        _read(data)
    assert exc.value.reason.endswith("or give the phone-columns mapping (e.g. phone-columns: contact, if that "
                                     "column holds the numbers)")
    cf, rows = _read(data, ParseOptions(now=NOW, phone_columns=("Contact",)))
    assert rows[0].client_id == "pay_1" and rows[0].call["contact-numbers"] == ["919876543210"]


# -- identifiers a spreadsheet turned into scientific notation -------------------------------------

def test_record_ids_in_scientific_notation_are_not_taken_as_one_repeated_id():
    # Zoho's 19-digit record ids after a round trip through Excel: every row would read "3.15208E+18"
    _, rows = _read("Record Id,Mobile\n3.15208E+18,9876543210\n3.15208E+18,9876543211\n3152079000000153079,9876543212\n")
    assert [r.client_id for r in rows] == ["x-1", "x-2", "3152079000000153079"]
    assert rows[1].warnings == ["'Record Id' is in spreadsheet scientific notation, so its digits are lost: "
                                "identifier generated as x-2"]


def test_a_client_identifier_in_scientific_notation_is_rejected_with_the_fix_and_other_ids_are_kept():
    _, rows = _read("client-identifier,Mobile\n3.15208E+18,9876543210\nA1E+5,9876543211\n1E5,9876543212\n")
    assert rows[0].reason == ("client-identifier is in spreadsheet scientific notation, so its digits are lost; "
                              "format the column as text in the spreadsheet and export the file again")
    assert [r.client_id for r in rows[1:]] == ["A1E+5", "1E5"]


def test_metadata_keys_may_be_written_with_underscores():
    from phonon_outbound.contacts.mapping import mapping_from_metadata
    assert mapping_from_metadata({"phone_columns": "Primary Contact", "ID_COLUMN": "Loan Account"}) == {
        "phone_columns": ("Primary Contact",), "id_column": "Loan Account"}
