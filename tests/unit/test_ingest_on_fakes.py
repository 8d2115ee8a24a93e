"""`IngestService` (ingest.py) on the in-memory store (store/memory.py): fast unit tests of
what ingest promises (docs/contract.md, "The flow", "Every row ends in exactly one status",
"Never twice") — valid rows queued as chunk messages that carry the correlation key, invalid
rows REJECTED with their reason in the report, a file without a valid row still reported, a
redelivered S3 event queuing nothing more, a deleted key's jobs cancelled.

S3, SQS and Secrets Manager are moto's in-process `mock_aws`; the Phonon API, where a test
sends, is the bundled simulator over real HTTP on loopback. `World` (shared with
tests/unit/test_dispatch_on_fakes.py) wires the real services as wiring.py does, on one
controllable clock. Given/When/Then."""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Iterator

import boto3
import pytest

from phonon_outbound.api.client import PhononClient
from phonon_outbound.dispatch import DispatchService
from phonon_outbound.flows import FlowSecrets
from phonon_outbound.ingest import IngestService, ObjectRef
from phonon_outbound.jobs import JobFinisher, job_report_keys
from phonon_outbound.outcomes import Decision, Done, Fate
from phonon_outbound.records import ChunkMessage, parse_row_ref
from phonon_outbound.settings import Settings
from phonon_outbound.status import Status
from phonon_outbound.store.memory import MemoryStore
from phonon_outbound_dev.simulator import DEMO_FLOW_ID, DEMO_SECURITY_ID, PhononSimulator

BUCKET = "contacts"
PREFIX = "test/flows/"
T0 = 1_800_000_000.0
HEADER = "client-identifier,phone,CustomerName"


class Clock:
    """The one "now" of the store, the limiter and the services; `sleep` moves it on at once."""

    def __init__(self, t: float = T0):
        self.t = t
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += max(0.0, seconds)


def contacts(*lines: str) -> bytes:
    return ("\n".join([HEADER, *lines]) + "\n").encode()


def good_rows(n: int, start: int = 0, prefix: str = "C") -> list[str]:
    return [f"{prefix}-{i:04d},98{i:08d},Customer {i}" for i in range(start, start + n)]


@functools.cache
def _session() -> boto3.session.Session:
    """One boto3 session for every test's clients: it keeps the service models it has loaded
    (a client from a fresh session costs ~0.1 s more). moto's `mock_aws` intercepts clients of
    any session; each test's `mock_aws` has its own empty backends."""
    return boto3.session.Session(region_name="us-east-1")


class World:
    """The services as wiring.py builds them, over one `MemoryStore`, moto's S3/SQS/Secrets
    Manager (inside the caller's `mock_aws`) and `api_url`."""

    def __init__(self, api_url: str, clock: Clock, **settings: object):
        self.clock = clock
        aws = _session()
        self.s3, self.sqs, sm = aws.client("s3"), aws.client("sqs"), aws.client("secretsmanager")
        self.s3.create_bucket(Bucket=BUCKET)
        sm.create_secret(Name=PREFIX + DEMO_FLOW_ID, SecretString=json.dumps({"security-id": DEMO_SECURITY_ID}))
        self.queue_url = self.sqs.create_queue(QueueName="chunks")["QueueUrl"]
        self.settings = Settings(**{
            "bucket_name": BUCKET, "chunk_queue_url": self.queue_url, "api_url": api_url,
            "default_flow_id": DEMO_FLOW_ID, "flow_secret_prefix": PREFIX, "api_read_timeout_s": 5.0,
            "retry_base_s": 5.0, "retry_max_s": 60.0, "max_receive_count": 3, **settings})
        self.store = MemoryStore(clock=clock)
        self.finisher = JobFinisher(self.store, self.s3, BUCKET)
        self.secrets = FlowSecrets(PREFIX, sm)
        self.ingest = IngestService(self.settings, self.store, self.s3, self.sqs, self.secrets, self.finisher,
                                    clock=clock)
        s = self.settings
        self.dispatch = DispatchService(s, self.store, lambda: PhononClient(api_url, 1.0, s.api_read_timeout_s),
                                        self.secrets, self.finisher, clock=clock, sleep=clock.sleep)

    # ---------------------------------------------------------------- files in, messages out
    def upload(self, name: str, data: bytes) -> ObjectRef:
        key = f"incoming/{name}"
        put = self.s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        return ObjectRef(BUCKET, key, put.get("VersionId"), put.get("ETag"), len(data))

    def ingest_file(self, name: str, data: bytes) -> ObjectRef:
        obj = self.upload(name, data)
        assert self.ingest.ingest(obj, lambda: 900.0).status in ("done", "rejected")
        return obj

    def take(self) -> list[str]:
        """Every chunk message on the queue (received and deleted), in chunk order."""
        bodies: list[str] = []
        while got := self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages"):
            for m in got:
                bodies.append(m["Body"])
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return sorted(bodies, key=lambda b: json.loads(b)["chunk"])

    def handle(self, body: str, receive_count: int = 1, left_s: float = 60.0) -> Decision:
        return self.dispatch.handle(body, receive_count, lambda: left_s)

    # ---------------------------------------------------------------- what came out
    def job(self, obj: ObjectRef) -> dict:
        return self.store.jobs.get_job(obj.job_id) or {}

    def report(self, obj: ObjectRef) -> list[dict]:
        key = job_report_keys(self.job(obj), obj.job_id)[0]
        text = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
        return list(csv.DictReader(io.StringIO(text)))

    def summary(self, obj: ObjectRef) -> dict:
        key = job_report_keys(self.job(obj), obj.job_id)[1]
        return json.loads(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def has_report(self, obj: ObjectRef) -> bool:
        key = job_report_keys(self.job(obj), obj.job_id)[0]
        return "Contents" in self.s3.list_objects_v2(Bucket=BUCKET, Prefix=key)


@pytest.fixture
def sim() -> Iterator[PhononSimulator]:
    s = PhononSimulator(shape="200", flows={DEMO_FLOW_ID: DEMO_SECURITY_ID}, seed=7).start()
    yield s
    s.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_world(aws_env, sim, clock):
    """`make_world(**settings)`: a `World` against the simulator; moto's `mock_aws` lasts the test."""
    from moto import mock_aws

    with mock_aws():
        yield lambda **settings: World(sim.url, clock, **settings)


def statuses(report: list[dict]) -> list[tuple[str, str]]:
    return [(r["row"], r["status"]) for r in report]


# ---------------------------------------------------------------------------------- tests
def test_valid_rows_are_queued_as_chunk_messages_whose_calls_carry_the_correlation_key(make_world):
    w = make_world(batch_size=2)
    # Given a file of three valid rows, chunks of two calls
    obj = w.ingest_file("three.csv", contacts(*good_rows(3)))
    bodies = w.take()
    # Then two chunk messages: rows 1-2 and row 3 of this file's job, for the default flow
    msgs = [ChunkMessage.model_validate_json(b) for b in bodies]
    assert [(m.job, m.flow, m.chunk, m.rows) for m in msgs] == [
        (obj.job_id, DEMO_FLOW_ID, 0, [1, 2]), (obj.job_id, DEMO_FLOW_ID, 1, [3])]
    calls = [c for m in msgs for c in m.complete_calls(w.dispatch.correlation_name)]
    assert [c["client-identifier"] for c in calls] == ["C-0000", "C-0001", "C-0002"]
    assert [c["contact-numbers"] for c in calls] == [["919800000000"], ["919800000001"], ["919800000002"]]
    # each call names its own row through the correlation key: `<job>.<row>`
    refs = [next(k["value"] for k in c["keys"] if k["name"] == "$flow.key.OutboundRef") for c in calls]
    assert [parse_row_ref(r) for r in refs] == [(obj.job_id, 1), (obj.job_id, 2), (obj.job_id, 3)]
    # no security-id travels in the message
    assert all(DEMO_SECURITY_ID not in b and "security-id" not in b for b in bodies)
    # and the job waits for its two chunks: no report yet
    assert (w.job(obj)["chunks_total"], w.has_report(obj)) == (2, False)


def test_invalid_rows_are_rejected_with_their_reasons_in_the_report_once_the_job_completes(make_world):
    w = make_world()
    # Given a file with a valid row, a row whose phone is no number and a row without a phone
    obj = w.ingest_file("mixed.csv", contacts("A-1,9800000001,Ann", "B-2,98765,Bob", "C-3,,Cy", "D-4,9800000004,Dee"))
    [body] = w.take()
    # Then only the valid rows are queued, and the job counts them (`status`'s rows queued)
    assert ChunkMessage.model_validate_json(body).rows == [1, 4]
    assert w.job(obj)["rows_queued"] == 2
    # When the chunk is sent and accepted
    assert isinstance(w.handle(body), Done)
    # Then the report has every row in order: the invalid ones REJECTED with a reason naming
    # the problem, never the number itself
    report = w.report(obj)
    assert statuses(report) == [("1", "ACCEPTED"), ("2", "REJECTED"), ("3", "REJECTED"), ("4", "ACCEPTED")]
    assert all(r["reason"] for r in report if r["status"] == Status.REJECTED)
    assert "in phone is not a valid number" in report[1]["reason"] and "98765" not in report[1]["reason"]
    assert report[2]["reason"] == "no contact number (phone is empty)"
    assert (report[1]["client-identifier"], report[2]["client-identifier"]) == ("B-2", "C-3")
    summary = w.summary(obj)
    assert (summary["rows"], summary["accepted"], summary["rejected"], summary["api_requests"]) == (4, 2, 2, 1)


def test_a_file_with_no_valid_row_ends_with_its_report_and_queues_nothing(make_world):
    w = make_world()
    # Given a file whose every row is invalid
    obj = w.ingest_file("none.csv", contacts("A-1,12,Ann", "B-2,not a phone,Bob"))
    # Then nothing is queued, and the job completes at once with every row REJECTED
    assert w.take() == []
    assert statuses(w.report(obj)) == [("1", "REJECTED"), ("2", "REJECTED")]
    assert w.job(obj)["completed"] is True


def test_a_file_rejected_whole_gets_a_report_with_the_reason_and_queues_nothing(make_world):
    w = make_world(default_flow_id="")
    # Given a file no flow can be found for (no metadata, no prefix, no default)
    obj = w.ingest_file("noflow.csv", contacts(*good_rows(2)))
    # Then nothing is queued; the report is the header only and the summary says why
    assert w.take() == []
    assert w.report(obj) == []
    assert "no flow for this file" in w.summary(obj)["error"]


def test_a_redelivered_s3_event_queues_nothing_more(make_world):
    w = make_world(batch_size=2)
    obj = w.upload("twice.csv", contacts(*good_rows(3)))
    first = w.ingest.ingest(obj, lambda: 900.0)
    # When S3 delivers the same notification again (at least once)
    again = w.ingest.ingest(obj, lambda: 900.0)
    # Then the second delivery does nothing: the queue holds the first run's two chunks only
    assert (first.status, first.chunks, again.status) == ("done", 2, "duplicate")
    assert [json.loads(b)["chunk"] for b in w.take()] == [0, 1]


def test_a_notification_delivered_again_while_the_first_run_is_still_queuing_queues_nothing(make_world):
    w = make_world(batch_size=2)
    obj = w.upload("racing.csv", contacts(*good_rows(3)))
    during: list[str] = []

    def redelivered() -> None:  # the same event, to another instance, while the first one queues
        if not during:
            during.append(w.ingest.ingest(obj, lambda: 900.0).status)

    w.ingest.throttle = redelivered  # the service's hook called before each SQS batch
    assert w.ingest.ingest(obj, lambda: 900.0).status == "done"
    # Then the second delivery found the file claimed by a live run and did nothing
    assert during == ["duplicate"]
    assert [json.loads(b)["chunk"] for b in w.take()] == [0, 1]


def test_a_run_paused_near_the_time_limit_resumes_where_it_stopped_and_queues_every_row_once(make_world):
    w = make_world(batch_size=100, ingest_time_margin_s=60.0)
    obj = w.upload("long.csv", contacts(*good_rows(2001)))
    left = [900.0]

    def time_runs_short() -> None:  # called before each SQS batch: from the first one on, 30 s left
        left[0] = 30.0

    w.ingest.throttle = time_runs_short
    # When the invocation runs short of time after the first batch of chunks was queued
    first = w.ingest.ingest(obj, lambda: left[0])
    # Then it pauses behind what it queued, and the continuation (a fresh invocation) goes on
    assert first.status == "paused"
    queued_first = w.job(obj)["rows_queued"]
    assert 0 < queued_first < 2001 and queued_first % 100 == 0  # whole chunks, counted with the checkpoint
    w.ingest.throttle, left[0] = None, 900.0
    assert w.ingest.ingest(obj, lambda: left[0]).status == "done"
    # and every row is in exactly one chunk, every chunk number once
    msgs = [json.loads(b) for b in w.take()]
    assert [m["chunk"] for m in msgs] == list(range(21))
    assert sorted(r for m in msgs for r in m["rows"]) == list(range(1, 2002))
    assert w.job(obj)["chunks_total"] == 21
    assert w.job(obj)["rows_queued"] == 2001  # the resumed run went on from the first run's count


def test_a_new_version_of_the_same_key_is_a_job_of_its_own(make_world):
    w = make_world()
    # Given the same key uploaded twice (two object versions: two ETags)
    first = w.ingest_file("same.csv", contacts(*good_rows(1)))
    second = w.ingest_file("same.csv", contacts(*good_rows(2, start=5)))
    # Then both are ingested, each under its own job with its own report name
    assert first.job_id != second.job_id
    assert sorted(json.loads(b)["job"] for b in w.take()) == sorted([first.job_id, second.job_id])
    assert job_report_keys(w.job(first))[0] != job_report_keys(w.job(second))[0]


def test_cancel_key_cancels_the_keys_active_jobs_whose_chunks_then_send_nothing(make_world, sim):
    w = make_world()
    # Given a file ingested, its chunk queued but not sent yet, and another file's job
    obj = w.ingest_file("deleted.csv", contacts(*good_rows(2)))
    other = w.ingest_file("kept.csv", contacts(*good_rows(1, start=7)))
    mine, theirs = sorted(w.take(), key=lambda b: json.loads(b)["job"] != obj.job_id)
    # When the key is deleted
    assert w.ingest.cancel_key(ObjectRef(BUCKET, obj.key), "the input file was deleted") == [obj.job_id]
    # Then its chunk sends nothing: its rows end CANCELLED with the reason, and the job completes
    decision = w.handle(mine)
    assert isinstance(decision, Done) and decision.outcome.fate is Fate.SETTLED
    assert sim.stats()["requests"] == 0
    report = w.report(obj)
    assert statuses(report) == [("1", "CANCELLED"), ("2", "CANCELLED")]
    assert {r["reason"] for r in report} == {"the input file was deleted"}
    # the other key's job is untouched: its chunk is sent and accepted
    assert isinstance(w.handle(theirs), Done)
    assert statuses(w.report(other)) == [("1", "ACCEPTED")]
    # a second cancel of the key finds no active job
    assert w.ingest.cancel_key(ObjectRef(BUCKET, obj.key), "the input file was deleted") == []


def test_fail_after_lambda_gave_up_ends_the_job_with_its_report(make_world):
    w = make_world()
    # Given a file whose ingest never ran to the end (Lambda gave up on it)
    obj = w.upload("gaveup.csv", contacts(*good_rows(2)))
    # When the on-failure destination calls `fail`
    result = w.ingest.fail(obj, "Task timed out after 900.00 seconds")
    # Then the file is rejected whole with that reason: nothing queued, a report written
    assert result.status == "rejected"
    assert w.take() == []
    assert w.summary(obj)["error"] == "Task timed out after 900.00 seconds"
