"""Fair share between jobs (docs/operating.md, "Fair share between jobs"): a small job's chunks
take the express lane, a chunk handed back waits in its own lane, a dead letter goes back to
the queue it came from, and a campaign's chunks do not hold rate-limit slots far ahead of a
small job's. moto's SQS (in-process) and the in-memory store on one controllable clock; the
dispatch decisions are the real service's. Given/When/Then."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from phonon_outbound.dispatch import BULK_HORIZON_S, express_lane
from phonon_outbound.outcomes import HandBack
from phonon_outbound.sqs_actions import SqsActions
from phonon_outbound_dev.redrive import SOURCE_ATTRIBUTE, redrive

from . import test_ingest_on_fakes as _world
from .test_ingest_on_fakes import contacts, good_rows

sim, clock, make_world = _world.sim, _world.clock, _world.make_world


def messages(w: Any, url: str) -> list[dict]:
    """Every message on the queue (received with its attributes, and deleted)."""
    out: list[dict] = []
    while got := w.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages"):
        out += got
        for m in got:
            w.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return out


def arn(w: Any, url: str) -> str:
    return w.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


EXPRESS_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/express"  # moto's URL of a queue "express"


def express_world(make_world: Any, **settings: Any) -> Any:
    """A world whose settings name an express queue."""
    w = make_world(express_queue_url=EXPRESS_URL, **settings)
    assert w.sqs.create_queue(QueueName="express")["QueueUrl"] == EXPRESS_URL
    return w


def test_a_small_job_takes_the_express_lane_and_a_big_one_the_chunk_queue(make_world):
    w = express_world(make_world, express_max_rows=5, batch_size=2)
    express = w.settings.express_queue_url
    # Given files of 5 rows (the most the express lane takes) and of 6 rows
    small = w.ingest_file("small.csv", contacts(*good_rows(5)))
    big = w.ingest_file("big.csv", contacts(*good_rows(6, start=10)))
    # Then the small job's three chunks are on the express queue, the big job's on the chunk queue
    on_express, on_chunks = messages(w, express), messages(w, w.queue_url)
    assert sorted(json.loads(m["Body"])["chunk"] for m in on_express) == [0, 1, 2]
    assert {json.loads(m["Body"])["job"] for m in on_express} == {small.job_id}
    assert {json.loads(m["Body"])["job"] for m in on_chunks} == {big.job_id} and len(on_chunks) == 3
    # and each job item says which lane it took
    assert w.job(small)["lane"] == "express" and w.job(big).get("lane", "") == ""
    # every chunk names its job as its message group (a fair queue's tenant on AWS)
    assert {m["Attributes"]["MessageGroupId"] for m in on_express} == {small.job_id}
    assert {m["Attributes"]["MessageGroupId"] for m in on_chunks} == {big.job_id}


def test_without_an_express_queue_or_with_express_max_rows_0_every_job_takes_the_chunk_queue(make_world):
    w = express_world(make_world, express_max_rows=0)
    obj = w.ingest_file("small.csv", contacts(*good_rows(2)))
    assert [json.loads(m["Body"])["job"] for m in messages(w, w.queue_url)] == [obj.job_id]
    assert w.job(obj).get("lane", "") == "" and messages(w, EXPRESS_URL) == []
    w.settings.express_max_rows, w.settings.express_queue_url = 5, ""
    obj = w.ingest_file("other.csv", contacts(*good_rows(2, start=5)))
    assert [json.loads(m["Body"])["job"] for m in messages(w, w.queue_url)] == [obj.job_id]


def test_a_hand_back_returns_to_the_queue_the_record_came_from(make_world):
    w = express_world(make_world, express_max_rows=5)
    express = w.settings.express_queue_url
    w.ingest_file("small.csv", contacts(*good_rows(2)))
    [m] = messages(w, express)
    record = SQSRecord({"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                        "attributes": m["Attributes"], "eventSource": "aws:sqs", "eventSourceARN": arn(w, express)})
    # When dispatch hands the express chunk back (a closed calling window, a paused job …)
    SqsActions(w.sqs, w.queue_url, express).apply(HandBack(0, "waiting"), record)
    # Then its copy waits on the express queue, in the same message group, and not on the chunk queue
    [copy] = messages(w, express)
    assert copy["Body"] == m["Body"] and copy["Attributes"]["MessageGroupId"] == m["Attributes"]["MessageGroupId"]
    assert messages(w, w.queue_url) == []


class DeadLetters:
    """moto's SQS client, with the `DeadLetterQueueSourceArn` attribute SQS stamps on a message it
    dead-letters (moto does not) on every message received from the DLQ (from `sources`, in turn)."""

    def __init__(self, sqs: Any, dlq_url: str, sources: list[str]):
        self.sqs, self.dlq_url, self.sources = sqs, dlq_url, list(sources)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sqs, name)

    def receive_message(self, **kwargs: Any) -> dict:
        resp = self.sqs.receive_message(**kwargs)
        if kwargs["QueueUrl"] == self.dlq_url:
            for m in resp.get("Messages", []):
                source = self.sources.pop(0)
                if source:
                    m.setdefault("Attributes", {})[SOURCE_ATTRIBUTE] = source
        return resp


def test_redrive_moves_each_dead_letter_back_to_the_queue_it_came_from(make_world):
    w = express_world(make_world, express_max_rows=5)
    express = w.settings.express_queue_url
    dlq = w.sqs.create_queue(QueueName="chunks-dlq")["QueueUrl"]
    # Given three dead letters: from the express lane, from the chunk queue, and one naming no source
    for body in ("from-express", "from-chunks", "unknown"):
        w.sqs.send_message(QueueUrl=dlq, MessageBody=body, MessageGroupId=f"job-{body}")
    sqs = DeadLetters(w.sqs, dlq, [arn(w, express), arn(w, w.queue_url), ""])
    # When they are redriven
    assert redrive(sqs, dlq, w.queue_url) == 3
    # Then each is back on its own queue (the unknown one on the chunk queue), in its message group
    assert [(m["Body"], m["Attributes"]["MessageGroupId"]) for m in messages(w, express)] == [
        ("from-express", "job-from-express")]
    assert sorted(m["Body"] for m in messages(w, w.queue_url)) == ["from-chunks", "unknown"]
    assert messages(w, dlq) == []


def test_a_campaigns_chunks_hold_no_slot_far_ahead_so_a_small_jobs_chunk_goes_within_the_horizon(make_world, clock):
    w = make_world(records_per_minute=30_000, batch_size=500)  # one 500-call chunk per second
    chunk_s = 500 / (30_000 / 60)
    # Given eight dispatchers each reserving a slot for a campaign's chunk at the same moment
    # (each sleeps out its own wait afterwards, which is not what this test follows)
    waits = []
    for _ in range(8):
        granted, wait, _napped = w.dispatch._reserve(500, 20.0)
        assert granted
        waits.append(clock() + wait)
    # Then none of them took a slot more than the horizon ahead of the moment it took it: they
    # napped instead (in the invocation: nothing handed back)
    assert sum(clock.slept) > 0
    frontier = max(waits)
    assert frontier - clock() <= BULK_HORIZON_S + chunk_s
    # When a small job's chunk arrives from the express lane now
    token = express_lane.set(True)
    try:
        granted, wait, napped = w.dispatch._reserve(200, 20.0)
    finally:
        express_lane.reset(token)
    # Then it is granted at once, without a nap, the next slot: at most the horizon (plus one
    # chunk) away (eight slots held from `start` on would have put it 8 s out)
    assert granted and napped == 0
    assert wait <= BULK_HORIZON_S + chunk_s < 8 * chunk_s


def test_an_express_chunk_never_naps_and_a_chunk_with_no_wait_allowed_is_handed_back_at_once(make_world, clock):
    w = make_world(records_per_minute=30_000, batch_size=500)
    for _ in range(6):  # the frontier 6 s ahead, as six express chunks at once would put it
        token = express_lane.set(True)
        try:
            assert w.dispatch._reserve(500, 20.0)[0]
        finally:
            express_lane.reset(token)
    assert clock.slept == []
    # A campaign chunk allowed no wait takes nothing and naps not: it is handed back
    granted, _wait, napped = w.dispatch._reserve(500, 0.0)
    assert not granted and napped == 0 and clock.slept == []


def test_the_template_gives_the_express_lane_its_own_event_source_the_chunk_queues_dlq_and_an_output():
    from phonon_outbound_dev.local.cfn import load_template
    from tools.sam_translate import translate

    from ..conftest import ROOT

    template = load_template(ROOT / "template.yaml")
    res = template["Resources"]
    express, chunks = res["ExpressQueue"]["Properties"], res["ChunkQueue"]["Properties"]
    # the same visibility timeout, DLQ and redrive as the chunk queue
    for key in ("VisibilityTimeout", "RedrivePolicy", "SqsManagedSseEnabled", "MessageRetentionPeriod"):
        assert express[key] == chunks[key], key
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["EXPRESS_QUEUE_URL"] == {"Ref": "ExpressQueue"} and env["EXPRESS_MAX_ROWS"] == {"Ref": "ExpressMaxRows"}
    assert template["Outputs"]["ExpressQueueUrl"]["Value"] == {"Ref": "ExpressQueue"}
    # the dispatch function reads both queues, each through an event source of its own
    mappings = [r["Properties"] for r in translate(ROOT / "template.yaml", region="ap-south-1")["Resources"].values()
                if r["Type"] == "AWS::Lambda::EventSourceMapping"
                and r["Properties"]["FunctionName"] == {"Ref": "DispatchFunction"}]
    assert sorted(m["EventSourceArn"]["Fn::GetAtt"][0] for m in mappings) == ["ChunkQueue", "ExpressQueue"]
    assert all(m["FunctionResponseTypes"] == ["ReportBatchItemFailures"] for m in mappings)
