"""More hostile pushes (beyond test_webhook_hostile.py's table): other encodings, duplicate
JSON keys, two correlation references, control characters, refs that point elsewhere, and field
names in other cases. Each gets a 4xx and leaves nothing behind, or is stored as what it is."""

from __future__ import annotations

import base64
import json

import pytest

from . import test_webhook_hostile as base
from .test_webhook_hostile import GOOD_UUID, JOB, Hook, push_doc

webhook_stack = base.webhook_stack  # the same moto stack fixture (module-scoped) and per-test hook
hook = base.hook

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")]

REF = "$flow.key.OutboundRef"


def _raw_b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _nothing_stored(h: Hook) -> None:
    assert h.results() == []
    assert [h.row_uuid(r) for r in (1, 2, 3)] == [None, None, None]


@pytest.mark.parametrize(("case", "build"), [
    ("utf16-le-with-bom", lambda h: {**h.event(raw="x", b64=True),
                                      "body": _raw_b64(json.dumps(push_doc()).encode("utf-16"))}),
    ("utf16-le-no-bom", lambda h: {**h.event(raw="x", b64=True),
                                    "body": _raw_b64(json.dumps(push_doc()).encode("utf-16-le"))}),
    ("utf32", lambda h: {**h.event(raw="x", b64=True), "body": _raw_b64(json.dumps(push_doc()).encode("utf-32"))}),
    # one field twice: which one counts depends on the parser; a proxy may have read the other
    ("duplicate-uuid-field", lambda h: h.event(raw=json.dumps(push_doc())[:-1]
                                                + ', "phonon-uuid": "99999999-8d06-498e-8952-fce3495f326b"}')),
    ("duplicate-keys-field", lambda h: h.event(raw=json.dumps(push_doc())[:-1]
                                                + f', "keys": [{{"name": "{REF}", "value": "{JOB}.2"}}]}}')),
    ("duplicate-field-in-attempt", lambda h: h.event(raw=json.dumps(push_doc()).replace(
        '"duration": "53000"', '"duration": "53000", "duration": "1"'))),
    ("two-correlation-refs", lambda h: h.event(push_doc(keys=[{"name": REF, "value": f"{JOB}.1"},
                                                              {"name": REF, "value": f"{JOB}.2"}]))),
    ("correlation-ref-as-name-and-bare-name", lambda h: h.event(push_doc(
        keys=[{"name": REF, "value": f"{JOB}.1"}, {"name": "OutboundRef", "value": f"{JOB}.3"}]))),
    ("nul-in-hangup-cause", lambda h: h.event(raw=json.dumps(push_doc()).replace(
        "NORMAL_CLEARING", "NORMAL\\u0000CLEARING"))),
    ("escape-sequence-in-hangup-cause", lambda h: h.event(raw=json.dumps(push_doc()).replace(
        "NORMAL_CLEARING", "\\u001b[31mRED\\u001b[0m"))),
    ("newline-in-start-time", lambda h: h.event(raw=json.dumps(push_doc()).replace(
        "2026-11-26 15:30:01", "2026-11-26\\n=1+1"))),
    ("bidi-override-in-cause", lambda h: h.event(raw=json.dumps(push_doc()).replace(
        "NORMAL_CLEARING", "\\u202eGNIRAELC"))),
    ("uuid-case-variant-and-uuid", lambda h: h.event(push_doc(**{"Phonon-UUID": "99999999-8d06-498e-8952-fce3495f326b"}))),
    ("calldetails-twice-in-two-cases", lambda h: h.event(push_doc(calldetails=[{"duration": "1"}]))),
])
def test_an_ambiguous_or_unprintable_push_is_refused_and_nothing_is_stored(hook, case, build):
    got, body = hook.call(build(hook))
    assert got == 400, (case, body)
    assert set(body) == {"error"}
    _nothing_stored(hook)


@pytest.mark.parametrize("uuid_field", ["Phonon-UUID", "PHONON-UUID", "phonon_uuid", "PhononUuid"])
def test_field_names_in_another_case_or_spelling_are_read_as_the_field(hook, uuid_field):
    doc = push_doc()
    doc[uuid_field] = doc.pop("phonon-uuid")
    doc["CallDetails"] = doc.pop("callDetails")
    doc["KEYS"] = doc.pop("keys")
    got, body = hook.call(hook.event(doc))
    assert (got, body) == (200, {"ok": True, "phonon-uuid": GOOD_UUID, "matched": True})
    (item,) = hook.results()
    assert item["row"] == 1 and item["hangup_cause"] == "NORMAL_CLEARING" and item["attempts"] == 1


@pytest.mark.parametrize("ref", [f"{JOB}.0", f"{JOB}.4", f"{JOB}.99999999999", f"{JOB}..1", f"..{JOB}.1",
                                 f"{JOB}.1.", f"{JOB}/../x.1", f"{JOB}.01e1", f"{JOB}.+1", f"{JOB}.١",
                                 "0" * 20 + ".1", f"{JOB.upper()}.1"])
def test_a_ref_naming_no_row_of_the_file_binds_no_row(hook, ref):
    got, body = hook.call(hook.event(push_doc(keys=[{"name": REF, "value": ref}])))
    assert got in (200, 400), body
    if got == 200:
        assert body["matched"] is False
    assert [hook.row_uuid(r) for r in range(0, 5)] == [None] * 5


def test_a_ref_beyond_the_rows_counted_while_ingest_is_still_running_binds_no_row(hook):
    hook.store.jobs.put_job(JOB, {"flow": "wruHzoCK", "key": "incoming/a.csv", "ingest_done": False, "row_count": 3,
                             "status": "INGESTING"})
    got, body = hook.call(hook.event(push_doc(row=7)))
    assert (got, body["matched"]) == (200, False)
    assert hook.row_uuid(7) is None
    got, body = hook.call(hook.event(push_doc(uuid="501c78ee-8d06-498e-8952-fce3495f3270", row=3)))
    assert (got, body["matched"]) == (200, True)


def test_huge_integers_are_refused_or_bounded_never_a_5xx(hook):
    for duration in ("9" * 5000, "1" + "0" * 400, 10**400, "1e308", "-0", "0x10", " 12 ", "１２"):
        doc = push_doc(callDetails=[{"duration": duration}])
        raw = json.dumps(doc) if not isinstance(duration, int) else json.dumps(doc).replace(
            json.dumps(str(duration)), str(duration))
        got, body = hook.call(hook.event(raw=raw))
        assert got in (200, 400), (duration, body)
        if got == 200:
            (item,) = hook.results()
            assert 0 <= item.get("duration", 0) <= 10**9
            hook.store.results.table.delete_item(Key={"phonon-uuid": GOOD_UUID})


def test_names_inside_a_keys_object_and_unknown_fields_are_the_caller_s_and_stay_as_they_are(hook):
    doc = push_doc(keys={"$flow.key.OutboundRef": f"{JOB}.1", "Name": "a", "name": "b", "Status": "gold"},
                   extra={"Duration": 1, "duration": 2})
    got, body = hook.call(hook.event(doc))
    assert (got, body["matched"]) == (200, True)


def test_the_uuid_under_two_of_its_names_with_one_value_is_one_uuid(hook):
    got, body = hook.call(hook.event(push_doc(uuid=GOOD_UUID) | {"uuid": GOOD_UUID}))
    assert (got, body["phonon-uuid"]) == (200, GOOD_UUID)
