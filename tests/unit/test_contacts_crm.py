"""Acceptance corpus (issue 9 #1): small, realistic exports of HubSpot, Salesforce (Data Loader
and report), Zoho, Pipedrive, Freshsales and everyday Indian spreadsheets, read by
``check_file`` exactly as ingest reads them. Every contact with a valid number is ACCEPTED,
the numbers come from every phone column in column order, and the summary notes say which
columns gave the numbers and the identifiers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from phonon_outbound.check import check_file
from phonon_outbound.settings import Settings

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
