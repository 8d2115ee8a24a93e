"""Acceptance corpus (issue 9 #1): small, realistic exports of HubSpot, Salesforce (Data Loader
and report), Zoho, Pipedrive, Freshsales, Dynamics 365, Google and Outlook contacts, Shopify,
WooCommerce, LeadSquared, Google Forms and everyday Indian spreadsheets, read by
``check_file`` exactly as ingest reads them. Every contact with a valid number is ACCEPTED,
the numbers come from every phone column in column order, and the summary notes say which
columns gave the numbers and the identifiers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from phonon_outbound.settings import Settings
from phonon_outbound_dev.check import check_file

CRM = Path(__file__).resolve().parents[1] / "fixtures" / "crm"
SETTINGS = Settings(default_flow_id="AB12CD34")

# file -> (phone columns note, identifier note, client-identifiers that have no number at all)
EXPECTED = {
    "hubspot-contacts.csv": ("phone numbers from 'Phone Number', 'Mobile Phone Number'",
                             "client-identifier from 'Record ID' (the file's record id", {"55"}),
    "salesforce-contacts.csv": ("phone numbers from 'Phone', 'MobilePhone', 'HomePhone', 'OtherPhone', "
                                "'AssistantPhone'", "client-identifier from 'Id' (the file's record id", set()),
    "salesforce-report.csv": ("phone numbers from 'Business Phone', 'Mobile', 'Home Phone', 'Other Phone', "
                              "'Asst. Phone'", "client-identifier from 'Contact ID' (the file's record id", set()),
    "zoho-contacts.csv": ("phone numbers from 'Phone', 'Mobile', 'Home Phone', 'Other Phone'",
                          "client-identifier from 'Record Id' (the file's record id", set()),
    "pipedrive-persons.csv": ("phone numbers from 'Person - Phone - Work', 'Person - Phone - Mobile', "
                              "'Person - Phone - Home', 'Person - Phone - Other'",
                              "client-identifier from 'Person - ID' (the file's record id", set()),
    "freshsales-contacts.csv": ("phone numbers from 'Work phone', 'Mobile phone'",
                                "client-identifier from 'Id' (the file's record id", set()),
    "indian-sheet.csv": ("phone numbers from 'Mobile No.', 'Alternate Mobile', 'WhatsApp Number', 'Landline'",
                         "client-identifier from 'Customer ID' (the file's record id", {"CUST-006"}),
    "indian-sheet-semicolon.csv": ("phone numbers from 'Mob. No.', 'Contact No', 'Tel.', 'Cell #'",
                                   "no client-identifier column: identifiers generated as indian-sheet-semicolon-",
                                   set()),
    "dynamics365-contacts.csv": ("phone numbers from 'Business Phone', 'Mobile Phone', 'Home Phone'",
                                 "client-identifier from '(Do Not Modify) Contact' (the file's record id", set()),
    "google-contacts.csv": ("phone numbers from 'Phone 1 - Value', 'Phone 2 - Value'",
                            "no client-identifier column: identifiers generated as google-contacts-", set()),
    "outlook-contacts.csv": ("phone numbers from 'Assistant's Phone', 'Business Phone', 'Business Phone 2', 'Car Phone', "
                             "'Company Main Phone', 'Home Phone', 'Home Phone 2', 'Mobile Phone', 'Other Phone', "
                             "'Primary Phone', … (11 in all)",
                             "no client-identifier column: identifiers generated as outlook-contacts-", set()),
    "shopify-customers.csv": ("phone numbers from 'Default Address Phone', 'Phone'",
                              "client-identifier from 'Customer ID' (the file's record id", set()),
    "woocommerce-customers.csv": ("phone numbers from 'billing_phone', 'shipping_phone'",
                                  "client-identifier from 'customer_id' (the file's record id", set()),
    "leadsquared-leads.csv": ("phone numbers from 'Phone Number', 'Mobile Number', 'mx_Alternate_Mobile'",
                              "client-identifier from 'ProspectID' (the file's record id", set()),
    "google-forms-responses.csv": ("phone numbers from 'Phone number (with country code)'",
                                   "no client-identifier column: identifiers generated as google-forms-responses-",
                                   set()),
    "bank-collections-sheet.csv": ("phone numbers from 'RMN', 'Alternate Contact Number'",
                                   "client-identifier from 'Cust ID' (the file's record id", set()),
    "webform-leads.jsonl": ("phone numbers also from the keys 'Mobile Phone Number', 'phone', 'Phone Number', "
                            "'WhatsApp Number'", "client-identifier from the record-id key 'Record ID'", set()),
}


def test_the_corpus_is_the_one_described():
    assert sorted(p.name for p in CRM.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_contact_with_a_valid_number_is_accepted_and_the_summary_names_the_columns(name, tmp_path):
    phones_note, id_note, without_number = EXPECTED[name]
    summary = check_file(CRM / name, SETTINGS, tmp_path)
    assert "error" not in summary or not summary["error"]
    rows = list(csv.DictReader((tmp_path / f"{name}.results.csv").open(encoding="utf-8")))
    assert rows and len(rows) == summary["rows"]
    for r in rows:
        if r["client-identifier"] in without_number:
            assert r["status"] == "REJECTED" and r["reason"].startswith("no contact number ("), r
        else:
            assert (r["status"], r["reason"]) == ("ACCEPTED", ""), r
    assert summary["accepted"] == len(rows) - len(without_number)
    notes = summary["notes"]
    assert phones_note in notes
    assert any(n.startswith(id_note) for n in notes), notes


def _calls(name: str) -> dict[str, list[str]]:
    from phonon_outbound.contacts import ValidRow, open_contacts
    with (CRM / name).open("rb") as fh:
        return {r.client_id: r.call["contact-numbers"] for r in open_contacts(fh, name).rows()
                if isinstance(r, ValidRow)}


def test_numbers_come_from_every_phone_column_in_column_order_and_mobile_only_contacts_are_called():
    calls = _calls("hubspot-contacts.csv")
    assert calls["51"] == ["912223456789", "919876543210"]  # Phone Number, then Mobile Phone Number
    assert calls["52"] == ["919876543211"]  # only a mobile number
    assert calls["54"] == ["919876543212"]
    sf = _calls("salesforce-contacts.csv")
    assert sf["0035g00000XyZa3AAF"] == ["914023456791", "919876543215"]  # HomePhone, OtherPhone
    sheet = _calls("indian-sheet.csv")
    assert sheet["CUST-005"] == ["919876543230", "919876543231"]  # the WhatsApp copy of the mobile: once


def test_crm_columns_that_are_not_numbers_stay_flow_variables():
    from phonon_outbound.contacts import open_contacts
    with (CRM / "salesforce-contacts.csv").open("rb") as fh:
        first = next(iter(open_contacts(fh, "salesforce-contacts.csv").rows()))
    names = [k["name"] for k in first.call["keys"]]
    # Fax, DoNotCall, AccountId, OwnerId are not phone columns nor identifiers; the record id
    # is also kept as a flow variable (flows may use it)
    assert {"$flow.key.Fax", "$flow.key.DoNotCall", "$flow.key.AccountId", "$flow.key.OwnerId",
            "$flow.key.Id"} <= set(names)
    assert not any(n in names for n in ("$flow.key.Phone", "$flow.key.MobilePhone"))


def test_the_other_tools_numbers_come_from_their_own_phone_columns_only():
    dyn = _calls("dynamics365-contacts.csv")  # 'Manager Phone' is somebody else's number
    assert dyn["9c2f1e3a-5b7d-4e8f-a1b2-3c4d5e6f7a01"] == ["914423456700", "919876543301"]
    assert dyn["9c2f1e3a-5b7d-4e8f-a1b2-3c4d5e6f7a03"] == ["914842345603"]  # only a home phone
    google = _calls("google-contacts.csv")  # Google joins a field's values with ' ::: '
    assert google["google-contacts-3"] == ["911123456703", "919876543403"]
    outlook = _calls("outlook-contacts.csv")  # a pager and a fax are not called
    assert outlook["outlook-contacts-1"] == ["912023456701", "919876543501"]
    assert outlook["outlook-contacts-2"] == ["917923456702"]
    assert _calls("shopify-customers.csv")["7043823837372"] == ["913323456701", "919876543601"]
    bank = _calls("bank-collections-sheet.csv")  # a float's '.0', and several numbers in one cell
    assert bank["C10001"] == ["919876543210"]
    assert bank["C10002"] == ["919876543211", "919123456780", "914023456702"]
    assert bank["C10003"] == ["919876543213", "912223456789"]
