"""A harness that drives the real Lambda handlers against moto (built from template.yaml) and
the bundled Phonon simulator on loopback, one step at a time, so tests can interleave faults,
duplicate deliveries and crashes between the steps."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer

from phonon_outbound import wiring
from phonon_outbound.ingest import ObjectRef
from phonon_outbound.jobs import job_report_keys
from phonon_outbound_dev.simulator import DEMO_FLOW_ID, DEMO_SECURITY_ID, PhononSimulator
from tests.bench.cost_bench import item_size as bench_item_size


class Ctx:
    def __init__(self, name: str = "fn", seconds: float = 60.0):
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.memory_limit_in_mb = 1024
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = "/aws/lambda/test"
        self.log_stream_name = "test"
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Harness:
    stack: object
    sim: PhononSimulator
    s3: object
    sqs: object
    env: dict
    ingest_invocations: int = 0

    @property
    def bucket(self) -> str:
        return self.env["BUCKET_NAME"]

    @property
    def queue_url(self) -> str:
        return self.env["CHUNK_QUEUE_URL"]

    @property
    def dlq_url(self) -> str:
        return self.stack.physical["ChunkDeadLetterQueue"]["Ref"]

    def upload(self, name: str, data: bytes, metadata: dict | None = None) -> ObjectRef:
        key = name if name.startswith("incoming/") else f"incoming/{name}"
        put = self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=metadata or {})
        return ObjectRef(self.bucket, key, put.get("VersionId"), put.get("ETag"), len(data))

    def s3_event(self, obj: ObjectRef) -> dict:
        return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                             "eventName": "ObjectCreated:Put", "eventTime": obj.event_time or "",
                             "s3": {"bucket": {"name": obj.bucket}, "object": {
                                 "key": obj.key, "size": obj.size, "eTag": obj.etag, "versionId": obj.version_id}}}]}

    def ingest(self, obj: ObjectRef, seconds: float = 900.0) -> dict:
        import ingest_handler

        pending: list[dict] = []
        wiring.set_continuation(pending.append)
        out = ingest_handler.handler(self.s3_event(obj), Ctx("ingest", seconds))
        self.ingest_invocations = 1
        while pending:
            out = ingest_handler.handler(pending.pop(0), Ctx("ingest", seconds))
            self.ingest_invocations += 1
        return out

    def receive(self, n: int = 10, wait: float = 0) -> list[dict]:
        return self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=n, AttributeNames=["All"],
                                        WaitTimeSeconds=int(wait)).get("Messages", [])

    def sqs_event(self, messages: list[dict]) -> dict:
        arn = self.stack.physical["ChunkQueue"]["Arn"]
        return {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                             "attributes": m.get("Attributes", {}), "messageAttributes": {},
                             "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs", "eventSourceARN": arn,
                             "awsRegion": "us-east-1"} for m in messages]}

    def dispatch(self, messages: list[dict], delete: bool = True) -> dict:
        import dispatch_handler

        result = dispatch_handler.handler(self.sqs_event(messages), Ctx("dispatch", 60))
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        if delete:
            for m in messages:
                if m["MessageId"] not in failed:
                    self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return result

    def drain(self, timeout: float = 30.0) -> int:
        """Run dispatch until the queue is empty (waiting out visibility timeouts and delays)."""
        invocations = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.receive()
            if messages:
                self.dispatch(messages)
                invocations += 1
                continue
            attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["All"])["Attributes"]
            if all(int(attrs.get(k, 0)) == 0 for k in ("ApproximateNumberOfMessages",
                                                         "ApproximateNumberOfMessagesNotVisible",
                                                         "ApproximateNumberOfMessagesDelayed")):
                return invocations
            time.sleep(0.2)
        raise AssertionError("queue did not drain")

    def dlq_depth(self) -> int:
        attrs = self.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])

    def report_keys(self, obj: ObjectRef) -> tuple[str, str]:
        """The object version's own report keys, as its job item names them."""
        return job_report_keys(self.job(obj), obj.job_id)

    def report(self, obj: ObjectRef) -> list[dict]:
        return list(csv.DictReader(io.StringIO(self.report_text(obj))))

    def report_text(self, obj: ObjectRef) -> str:
        return self.s3.get_object(Bucket=self.bucket, Key=self.report_keys(obj)[0])["Body"].read().decode()

    def summary(self, obj: ObjectRef) -> dict:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=self.report_keys(obj)[1])["Body"].read())

    def job(self, obj: ObjectRef) -> dict:
        return wiring.store().jobs.get_job(obj.job_id) or {}


# ------------------------------------------------------------------ item sizes
MAX_ITEM_BYTES = 400 * 1024
_SERIALIZE = TypeSerializer()


def _av(value: object) -> dict:
    """A DynamoDB attribute value in the wire form ({"S": ...}), whether the caller (a Table
    resource or a plain client) gave it typed already or as Python."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _AV_TYPES:
        return value
    return _SERIALIZE.serialize(value)


_AV_TYPES = {"S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "L", "M"}


def item_size(item: dict) -> int:
    """DynamoDB's item-size arithmetic, the cost bench's (one definition of the rules)."""
    return bench_item_size({k: _av(v) for k, v in item.items()})


@pytest.fixture(autouse=True)
def dynamodb_item_sizes(monkeypatch):
    """Fail the test on any DynamoDB item over 400 KB that the code writes. Real DynamoDB
    rejects such a write whole; moto applies part of an oversized UpdateItem before it raises,
    so without this check a local run hides the problem. Put items are measured as sent;
    updated items are read back after the call (raised or not)."""
    import botocore.client

    real = botocore.client.BaseClient._make_api_call
    too_big: list[tuple[str, str, int]] = []

    plain: list = []  # a client without the Table resource's type conversion, made on first use

    def check(table: str, what: str, item: dict | None) -> None:
        if item:
            size = item_size(item)
            if size > MAX_ITEM_BYTES:
                too_big.append((table, what, size))

    def read_back(table: str, key: dict) -> dict | None:
        if not plain:
            plain.append(boto3.client("dynamodb", region_name="us-east-1"))
        out = real(plain[0], "GetItem", {"TableName": table, "Key": {k: _av(v) for k, v in key.items()},
                                         "ConsistentRead": True})
        return out.get("Item")

    def watched(self, operation_name, api_params):
        if self.meta.service_model.service_name != "dynamodb":
            return real(self, operation_name, api_params)
        if operation_name == "PutItem":
            check(api_params["TableName"], "PutItem", api_params.get("Item"))
        elif operation_name == "BatchWriteItem":
            for table, requests in api_params.get("RequestItems", {}).items():
                for r in requests:
                    check(table, "BatchWriteItem", (r.get("PutRequest") or {}).get("Item"))
        elif operation_name == "TransactWriteItems":
            for t in api_params.get("TransactItems", []):
                if "Put" in t:
                    check(t["Put"]["TableName"], "TransactWriteItems", t["Put"].get("Item"))
        if operation_name != "UpdateItem":
            return real(self, operation_name, api_params)
        try:
            return real(self, operation_name, api_params)
        finally:
            check(api_params["TableName"], "UpdateItem", read_back(api_params["TableName"], api_params["Key"]))

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", watched)
    yield too_big
    assert not too_big, f"DynamoDB items over 400 KB were written: {too_big}"


@pytest.fixture
def make_harness(stack, monkeypatch):
    sims: list[PhononSimulator] = []

    def make(shape: str = "202", **settings) -> Harness:
        sim = PhononSimulator(shape=shape, flows={DEMO_FLOW_ID: DEMO_SECURITY_ID}, seed=7).start()
        sims.append(sim)
        env = stack.function_environment()
        env.update({"API_URL": sim.url, "DEFAULT_FLOW_ID": DEMO_FLOW_ID, "RETRY_BASE_S": "0",
                    "RETRY_MAX_S": "0", "BREAKER_OPEN_S": "1", "CHUNK_LEASE_S": "2", "INGEST_TIME_MARGIN_S": "0",
                    "DISPATCH_MAX_WAIT_S": "5", "API_READ_TIMEOUT_S": "5", "POWERTOOLS_METRICS_DISABLED": "true",
                    # in-process moto is not thread-safe for writes to one item; the concurrent
                    # path runs in the e2e tests, against moto's server
                    "DISPATCH_PARALLELISM": "1",
                    # one lane unless a test asks for the express lane (its chunks are then on
                    # EXPRESS_QUEUE_URL, which `receive` and `drain` do not read)
                    "EXPRESS_MAX_ROWS": "0",
                    # reports written in-line: the harness has no report worker draining ReportQueue
                    "REPORT_QUEUE_URL": ""})
        env.update({k.upper(): str(v) for k, v in settings.items()})
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        name = f"{env['FLOW_SECRET_PREFIX']}{DEMO_FLOW_ID}"
        with contextlib.suppress(sm.exceptions.ResourceExistsException):
            sm.create_secret(Name=name, SecretString=json.dumps({"security-id": DEMO_SECURITY_ID}))
        sqs = boto3.client("sqs", region_name="us-east-1")
        if "max_receive_count" in settings:  # the queue's redrive policy and the setting agree, as on AWS
            sqs.set_queue_attributes(QueueUrl=env["CHUNK_QUEUE_URL"], Attributes={"RedrivePolicy": json.dumps({
                "deadLetterTargetArn": stack.physical["ChunkDeadLetterQueue"]["Arn"],
                "maxReceiveCount": int(settings["max_receive_count"])})})
        wiring.reset()
        return Harness(stack, sim, boto3.client("s3", region_name="us-east-1"),
                       boto3.client("sqs", region_name="us-east-1"), env)

    yield make
    for sim in sims:
        sim.stop()
    wiring.reset()


def csv_rows(n: int, prefix: str = "C", start: int = 0) -> bytes:
    lines = ["client-identifier,phone,CustomerName"]
    for i in range(start, start + n):
        lines.append(f"{prefix}-{i:06d},98{i:08d},Customer {i}")
    return ("\n".join(lines) + "\n").encode()


def statuses(report: list[dict]) -> dict[str, int]:
    """How many report rows have each status."""
    return dict(Counter(r["status"] for r in report))


def fail_once(monkeypatch, cls: type, name: str, message: str) -> list:
    """Make `cls.name` raise once (a Lambda killed at that point), then behave as before.
    Returns the list of calls made to it."""
    real = getattr(cls, name)
    calls: list = []

    def dies_once(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError(message)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, dies_once)
    return calls
