"""A chunk handed back (sqs_actions.SqsActions, HandBack) keeps its job's message group even when
the record does not carry its MessageGroupId attribute: the copy is sent in the group ingest
gave the job's chunks, read from the job the body names. moto's SQS, the in-memory store and a
real ingest (tests/unit/test_ingest_on_fakes.py's world). Given/When/Then."""

from __future__ import annotations

import json

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from phonon_outbound.outcomes import HandBack
from phonon_outbound.sqs_actions import SqsActions

from . import test_ingest_on_fakes as _world
from .test_fair_share import arn, messages
from .test_ingest_on_fakes import contacts, good_rows

sim, clock, make_world = _world.sim, _world.clock, _world.make_world


def _record(w, m: dict, attributes: dict) -> SQSRecord:
    return SQSRecord({"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                      "attributes": attributes, "eventSource": "aws:sqs", "eventSourceARN": arn(w, w.queue_url)})


def test_a_chunk_handed_back_without_its_group_attribute_goes_back_in_the_group_ingest_gave_it(make_world):
    w = make_world()
    job = w.ingest_file("a.csv", contacts(*good_rows(2))).job_id
    [m] = messages(w, w.queue_url)
    sent_group = m["Attributes"]["MessageGroupId"]  # the group ingest sends the job's chunks in
    # Given a record whose attributes lack MessageGroupId (only the receive count came along)
    record = _record(w, m, {"ApproximateReceiveCount": "1"})
    # When dispatch hands it back
    SqsActions(w.sqs, w.queue_url).apply(HandBack(0, "waiting"), record)
    # Then its copy is in the job's group again, not in none
    [copy] = messages(w, w.queue_url)
    assert copy["Body"] == m["Body"] and json.loads(copy["Body"])["job"] == job
    assert copy["Attributes"].get("MessageGroupId") == sent_group


def test_the_records_own_group_wins_and_an_unreadable_body_is_sent_without_one(make_world):
    w = make_world()
    w.ingest_file("a.csv", contacts(*good_rows(2)))
    [m] = messages(w, w.queue_url)
    SqsActions(w.sqs, w.queue_url).apply(HandBack(0, "waiting"),
                                         _record(w, m, {"ApproximateReceiveCount": "1", "MessageGroupId": "kept"}))
    assert messages(w, w.queue_url)[0]["Attributes"]["MessageGroupId"] == "kept"
    unreadable = {**m, "Body": "not a chunk"}
    SqsActions(w.sqs, w.queue_url).apply(HandBack(0, "waiting"), _record(w, unreadable, {"ApproximateReceiveCount": "1"}))
    [copy] = messages(w, w.queue_url)
    assert copy["Body"] == "not a chunk" and "MessageGroupId" not in copy["Attributes"]
