"""Ingest against every real event shape and every way an ingest can fail: AWS's own sample
events (tests/events/aws, sources in its README), per-upload reports, deleted objects, the
claim's lease, the pre-pass's time watch, the failure destination, bounded job items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phonon_outbound import wiring
from phonon_outbound.ingest import ObjectRef

from .conftest import Ctx, csv_rows, statuses

SAMPLES = Path(__file__).resolve().parents[1] / "events" / "aws"


def sample(name: str, bucket: str, key: str | None = None) -> dict:
    """A sample event with the test stack's bucket (and, for a few tests, another key)."""
    doc = json.loads((SAMPLES / name).read_text())
    text = json.dumps(doc).replace("phonon-outbound-example-bucket", bucket)
    doc = json.loads(text)
    if key is not None:
        if "Records" in doc:
            doc["Records"][0]["s3"]["object"]["key"] = key
        else:
            doc["detail"]["object"]["key"] = key
    return doc


def run(h, event: dict, seconds: float = 900.0) -> dict:
    """The ingest handler on one event, then its continuations (paused ingests)."""
    import ingest_handler

    pending: list[dict] = []
    wiring.set_continuation(pending.append)
    out = ingest_handler.handler(event, Ctx("ingest", seconds))
    while pending:
        ingest_handler.handler(pending.pop(0), Ctx("ingest", seconds))
    return out


def reports_of(h, key: str) -> list[str]:
    listing = h.s3.list_objects_v2(Bucket=h.bucket, Prefix=f"reports/{key}.")
    return sorted(o["Key"] for o in listing.get("Contents", []))


# ------------------------------------------------------------------ per-upload reports
def test_given_one_key_uploaded_three_times_then_each_version_has_its_own_report_and_counts(make_harness):
    h = make_harness()
    objs = []
    for n in (2, 3, 4):
        put = h.upload("daily.csv", csv_rows(n, prefix=f"V{n}"))
        # EventBridge times have whole seconds only: the three uploads share one
        objs.append(ObjectRef(put.bucket, put.key, put.version_id, put.etag, put.size,
                              event_time="2026-11-30T09:15:00Z"))
    assert len({o.version_id for o in objs}) == 3
    for obj in objs:
        h.ingest(obj)
    h.drain()
    names = reports_of(h, "incoming/daily.csv")
    assert len(names) == 6  # three reports and three summaries, none overwritten
    assert names[0] == "reports/incoming/daily.csv.20261130T091500.000Z.results.csv"
    for n, obj in zip((2, 3, 4), objs, strict=True):
        job = h.job(obj)
        assert job["uploaded_at"].startswith("2026-11-30T09:15:00")
        assert job["version"] == obj.version_id
        assert statuses(h.report(obj)) == {"ACCEPTED": n}
        summary = h.summary(obj)
        assert summary["accepted"] == n and summary["rows"] == n
        assert summary["version"] == obj.version_id
    # the names sort in upload order
    assert [h.report_keys(o)[0] for o in objs] == sorted(h.report_keys(o)[0] for o in objs)


# ------------------------------------------------------------------ AWS's sample events
def test_given_powertools_s3_notification_with_an_encoded_key_then_the_decoded_object_is_ingested(make_harness):
    h = make_harness()
    h.upload("incoming/team a/contacts (2).csv", csv_rows(3))
    out = run(h, sample("s3-notification-put.json", h.bucket))
    [f] = out["files"]
    assert f["status"] == "done" and f["key"] == "incoming/team a/contacts (2).csv"
    h.drain()
    # the report is named after the key and the event's time (2019-09-03T19:37:27.192Z)
    body = h.s3.get_object(Bucket=h.bucket,
                           Key="reports/incoming/team a/contacts (2).csv.20190903T193727.192Z.results.csv")
    assert body["Body"].read().decode().count("ACCEPTED") == 3


def test_given_sam_cli_generated_put_event_then_its_url_encoded_key_resolves(make_harness):
    h = make_harness()
    h.upload("incoming/sam contacts.csv", csv_rows(2))
    out = run(h, sample("s3-sam-put.json", h.bucket))
    assert out["files"][0]["status"] == "done"
    h.drain()
    job = wiring.store().jobs.get_job(out["files"][0]["job"])
    assert job["key"] == "incoming/sam contacts.csv"
    csv_key = job["report_csv_key"]
    assert h.s3.get_object(Bucket=h.bucket, Key=csv_key)["Body"].read().decode().count("ACCEPTED") == 2
    # the sample's eventTime is 1970-01-01: a placeholder, so the object's LastModified names the report
    assert csv_key.startswith("reports/incoming/sam contacts.csv.20") and "1970" not in csv_key


def test_given_a_key_with_a_literal_plus_then_the_event_key_is_tried_as_given_after_decoding(make_harness):
    h = make_harness()
    obj = h.upload("incoming/Happy Face+1.csv", csv_rows(2))
    event = sample("s3-notification-percent-encoded-key.json", h.bucket)
    event["Records"][0]["s3"]["object"]["versionId"] = obj.version_id  # the sample's is "version"
    assert run(h, event)["files"][0]["status"] == "done"
    # and the local runner's raw (unencoded) key, where '+' must not become a space
    other = h.upload("incoming/a+b.csv", csv_rows(2, prefix="P"))
    raw = sample("s3-notification-put.json", h.bucket, key="incoming/a+b.csv")
    raw["Records"][0]["s3"]["object"]["versionId"] = other.version_id
    assert run(h, raw)["files"][0]["status"] == "done"
    h.drain()
    assert statuses(h.report(other)) == {"ACCEPTED": 2}


def test_given_powertools_eventbridge_object_created_then_the_key_is_taken_as_given_or_decoded(make_harness):
    h = make_harness()
    plain = h.upload("incoming/daily contacts+1.csv", csv_rows(2))
    first = sample("eventbridge-s3-object-created.json", h.bucket)
    first["detail"]["object"]["version-id"] = plain.version_id  # the sample names no version
    out = run(h, first)
    assert out["files"][0]["status"] == "done"
    # the same object named with an encoded key (should EventBridge ever encode): still found
    encoded = sample("eventbridge-s3-object-created.json", h.bucket, key="incoming/daily+contacts%2B1.csv")
    encoded["detail"]["object"]["version-id"] = plain.version_id
    again = run(h, encoded)["files"][0]
    assert again["status"] == "duplicate" and again["job"] == plain.job_id  # the very same object version
    h.drain()
    assert statuses(h.report(plain)) == {"ACCEPTED": 2}


@pytest.mark.parametrize("name", ["s3-test-event.json", "eventbridge-s3-object-restore-completed.json"])
def test_given_an_event_that_is_not_an_upload_then_nothing_is_read_or_sent(make_harness, monkeypatch, name):
    h = make_harness()
    h.upload("incoming/daily contacts+1.csv", csv_rows(2))
    service = wiring.ingest_service()
    calls: list[str] = []
    real_get, real_head = service.s3.get_object, service.s3.head_object
    monkeypatch.setattr(service.s3, "get_object", lambda **kw: calls.append("get") or real_get(**kw))
    monkeypatch.setattr(service.s3, "head_object", lambda **kw: calls.append("head") or real_head(**kw))
    out = run(h, sample(name, h.bucket))
    assert out == {"files": []}
    assert calls == []
    assert h.receive() == []
    assert wiring.store().jobs.jobs_for_key(h.bucket, "incoming/daily contacts+1.csv") == []


@pytest.mark.parametrize("name", ["ObjectRestore:Completed", "ObjectRestore:Post", "LifecycleExpiration:Delete"])
def test_given_an_s3_notification_of_another_kind_then_nothing_happens(make_harness, name):
    # no AWS-published sample of these notifications was found: powertools' put sample, renamed
    h = make_harness()
    h.upload("incoming/team a/contacts (2).csv", csv_rows(2))
    event = sample("s3-notification-put.json", h.bucket)
    event["Records"][0]["eventName"] = name
    assert run(h, event) == {"files": []}
    assert h.receive() == []


# ------------------------------------------------------------------ deleted objects
def test_given_a_permanently_deleted_version_then_the_file_is_rejected_with_a_report_and_no_retry(make_harness):
    h = make_harness()
    obj = h.upload("gone.csv", csv_rows(3))
    h.s3.delete_object(Bucket=h.bucket, Key=obj.key, VersionId=obj.version_id)
    out = h.ingest(obj)  # returns: nothing raised, so Lambda does not retry
    assert out["files"][0]["status"] == "rejected"
    summary = h.summary(obj)
    assert "no longer exists (NoSuchVersion)" in summary["error"]
    assert summary["version"] == obj.version_id
    assert h.job(obj)["completed"] is True
    assert "active_shard" not in h.job(obj)
    assert h.receive() == []
    # a redelivery of the same event does nothing more
    assert h.ingest(obj)["files"][0]["status"] == "duplicate"


def test_given_powertools_eventbridge_object_deleted_mid_ingest_then_the_unsent_rest_is_cancelled(make_harness, monkeypatch):
    import ingest_handler
    from phonon_outbound import ingest as ingest_module

    monkeypatch.setattr(ingest_module._Deadline, "read", lambda self, n=-1: self.body.read(n))
    # every time check of the row pass says "time is up": the first run stops after 2,000 rows
    h = make_harness(batch_size=100, ingest_time_margin_s=10**6, dedupe_window_hours=0)
    obj = h.upload("daily contacts+1.csv", csv_rows(5000))
    pending: list[dict] = []
    wiring.set_continuation(pending.append)
    assert ingest_handler.handler(h.s3_event(obj), Ctx("ingest"))["files"][0]["status"] == "paused"
    active = h.job(obj)
    assert active["active_shard"] == "A" and active["updated_at"] >= active["created_at"]  # the active-jobs index
    h.s3.delete_object(Bucket=h.bucket, Key=obj.key)  # a delete marker: the version itself remains
    out = ingest_handler.handler(sample("eventbridge-s3-object-deleted.json", h.bucket), Ctx("ingest"))
    assert out["files"][0]["jobs"] == [obj.job_id]
    assert h.job(obj)["cancelled_reason"] == "the input file was deleted"
    assert ingest_handler.handler(pending.pop(0), Ctx("ingest"))["files"][0]["status"] == "cancelled"
    assert not pending
    h.drain(timeout=60)
    report = h.report(obj)
    assert len(report) == 5000
    assert h.job(obj)["chunks_total"] == 20  # 2,000 rows were queued before the delete
    # dispatch sends nothing of a cancelled job: the queued rows settle CANCELLED too
    assert statuses(report) == {"CANCELLED": 5000}
    assert "deleted" in report[0]["reason"]
    assert report[-1]["reason"] == "not sent: the input file was deleted"
    summary = h.summary(obj)
    assert summary["cancelled_reason"] == "the input file was deleted"
    assert summary["cancelled"] == 5000  # the count per status, as for every status
    assert h.sim.stats()["requests"] == 0


@pytest.mark.parametrize("name", ["s3-notification-delete.json", "s3-sam-delete.json"])
def test_given_an_s3_removed_notification_then_the_keys_active_jobs_are_cancelled_without_reading(make_harness, name):
    h = make_harness()
    key = {"s3-notification-delete.json": "incoming/team a/contacts (2).csv",
           "s3-sam-delete.json": "incoming/sam contacts.csv"}[name]
    obj = h.upload(key, csv_rows(3))
    h.ingest(obj)  # chunks queued, not yet sent: the job is active
    h.s3.delete_object(Bucket=h.bucket, Key=obj.key)
    out = run(h, sample(name, h.bucket))
    assert out["files"][0]["jobs"] == [obj.job_id]
    assert h.job(obj)["cancelled_reason"] == "the input file was deleted"
    assert wiring.store().jobs.cancel_job(obj.job_id, "again") is False  # once


# ------------------------------------------------------------------ crashes, time-outs, failures
def test_given_an_invocation_killed_mid_file_then_lambdas_retry_takes_the_object_over(make_harness, monkeypatch):
    from phonon_outbound.ingest import IngestService

    h = make_harness(batch_size=100)
    obj = h.upload("killed.csv", csv_rows(1500))
    real = IngestService._send_batch
    sent: list[int] = []

    def killed_after_one_batch(self, batch, *lane):
        if sent:  # the Lambda run ends here: a time-out runs no handler code (no except clause)
            raise SystemExit("Task timed out")
        sent.append(len(batch))
        return real(self, batch, *lane)

    monkeypatch.setattr(IngestService, "_send_batch", killed_after_one_batch)
    with pytest.raises(SystemExit):
        h.ingest(obj, seconds=30)
    monkeypatch.setattr(IngestService, "_send_batch", real)
    # Lambda's first retry comes a minute later: the claim's lease (30 s left + slack) is over
    service = wiring.ingest_service()
    import time as time_module

    monkeypatch.setattr(service, "clock", lambda: time_module.time() + 60)
    assert h.ingest(obj)["files"][0]["status"] == "done"
    h.drain(timeout=60)
    assert statuses(h.report(obj)) == {"ACCEPTED": 1500}
    assert len(h.sim.stats()["calls_by_client_identifier"]) == 1500


def test_given_time_runs_out_in_the_pre_pass_then_a_continuation_validates_and_sends(make_harness):
    import ingest_handler

    h = make_harness(ingest_time_margin_s=30)
    obj = h.upload("late.csv", csv_rows(50))
    pending: list[dict] = []
    wiring.set_continuation(pending.append)
    first = ingest_handler.handler(h.s3_event(obj), Ctx("ingest", 10))  # 10 s left: under the margin
    assert first["files"][0]["status"] == "paused"
    assert h.receive() == []  # nothing sent from an unvalidated file
    assert h.job(obj)["prepass_pauses"] == 1
    assert ingest_handler.handler(pending.pop(0), Ctx("ingest", 900))["files"][0]["status"] == "done"
    h.drain()
    assert statuses(h.report(obj)) == {"ACCEPTED": 50}


def test_given_a_pre_pass_that_never_fits_in_a_run_then_the_file_is_rejected_with_a_report(make_harness):
    h = make_harness(ingest_time_margin_s=30)
    obj = h.upload("huge.csv", csv_rows(5))
    h.ingest(obj, seconds=10)  # every run, continuations too, starts under the margin
    summary = h.summary(obj)
    assert "could not be validated within one run" in summary["error"]
    assert h.receive() == []


def destination_record(h, event: dict, error_type: str = "Sandbox.Timedout") -> dict:
    """An SQS event carrying the record Lambda's on-failure destination writes after the last
    retry (the format of AWS Lambda's "Capturing records of asynchronous invocations")."""
    record = {"version": "1.0", "timestamp": "2026-11-30T12:00:00.000Z",
              "requestContext": {"requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
                                 "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:ingest:$LATEST",
                                 "condition": "RetriesExhausted", "approximateInvokeCount": 3},
              "requestPayload": event,
              "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
              "responsePayload": {"errorType": error_type,
                                  "errorMessage": "row 7: 9812345678 could not be read"}}
    return {"Records": [{"messageId": "m-1", "receiptHandle": "r-1", "body": json.dumps(record),
                         "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                         "md5OfBody": "", "eventSource": "aws:sqs",
                         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:IngestFailureQueue",
                         "awsRegion": "us-east-1"}]}


def test_given_a_failure_destination_record_then_the_file_ends_rejected_with_report_event_and_metric(make_harness, monkeypatch):
    import ingest_handler
    from phonon_outbound import ingest as ingest_module

    metrics: list[str] = []
    monkeypatch.setattr(ingest_module, "count", lambda name, value=1, unit="Count": metrics.append(name))
    h = make_harness()
    obj = h.upload("crashy.csv", csv_rows(4))  # three invocations died before doing anything
    events: list[dict] = []
    finisher = wiring.finisher()
    monkeypatch.setattr(finisher, "_publish", lambda detail, task_token="": events.append(detail))
    out = ingest_handler.handler(destination_record(h, h.s3_event(obj)), Ctx("ingest"))
    assert out["files"][0]["reason"] == "ingest failed: Sandbox.Timedout"
    summary = h.summary(obj)
    assert summary["error"] == "ingest failed: Sandbox.Timedout"
    assert "9812345678" not in json.dumps(summary)  # the error message is never copied
    assert [(e["status"], e["reason"]) for e in events] == [("REJECTED", "ingest failed: Sandbox.Timedout")]
    assert "IngestFailed" in metrics
    # a late duplicate of the upload event does not start it again
    assert h.ingest(obj)["files"][0]["status"] == "duplicate"


def test_given_a_failure_record_after_part_of_the_file_was_queued_then_the_rest_is_cancelled(make_harness, monkeypatch):
    import ingest_handler
    from phonon_outbound import ingest as ingest_module

    monkeypatch.setattr(ingest_module._Deadline, "read", lambda self, n=-1: self.body.read(n))
    h = make_harness(batch_size=100, ingest_time_margin_s=10**6, dedupe_window_hours=0)
    obj = h.upload("half.csv", csv_rows(3000))
    wiring.set_continuation(lambda event: None)  # the continuation never ran (it kept failing)
    assert ingest_handler.handler(h.s3_event(obj), Ctx("ingest"))["files"][0]["status"] == "paused"
    resume = {"phonon-outbound": "phonon-outbound/resume-ingest", "bucket": obj.bucket, "key": obj.key,
              "version": obj.version_id, "etag": obj.etag}
    ingest_handler.handler(destination_record(h, resume, "MemoryError"), Ctx("ingest"))
    h.drain(timeout=60)
    report = h.report(obj)
    assert len(report) == 3000
    assert statuses(report) == {"CANCELLED": 3000}  # the 2,000 queued ones too: dispatch honours it
    assert "ingest failed: MemoryError" in report[0]["reason"]
    assert report[-1]["reason"] == "not sent: ingest failed: MemoryError"
    assert h.sim.stats()["requests"] == 0


# ------------------------------------------------------------------ bounded items
def test_given_ten_thousand_unnamed_header_columns_then_every_job_item_stays_under_400_kb(make_harness, dynamodb_item_sizes):
    h = make_harness()
    header = "client-identifier,phone,Name" + "," * 10_000
    rows = [f"C-{i},98{i:08d},Name {i}" + "," * 10_000 for i in range(3)]
    obj = h.upload("excel.csv", ("\n".join([header, *rows]) + "\n").encode())
    h.ingest(obj)
    h.drain()
    assert statuses(h.report(obj)) == {"ACCEPTED": 3}
    assert len(h.summary(obj)["notes"]) <= 21
    assert dynamodb_item_sizes == []


def test_the_item_size_check_sees_an_oversized_item(make_harness, dynamodb_item_sizes):
    make_harness()
    store = wiring.store()
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):  # moto refuses a put this big (an update, it half-applies)
        store.state.put_item(Item={"pk": "BIG", "sk": "-", "blob": "x" * 500_000})
    assert dynamodb_item_sizes and dynamodb_item_sizes[0][2] > 400 * 1024
    dynamodb_item_sizes.clear()  # the check itself is what this test is about


def test_every_state_item_with_personal_data_carries_expires_at(make_harness):
    import time

    h = make_harness(data_retention_days=30)
    obj = h.upload("ttl.csv", b"client-identifier,phone\nA,9812345678\nB,12\n")
    h.ingest(obj)
    h.drain()
    now = time.time()
    items = wiring.store().state.scan()["Items"]
    mine = [i for i in items if i["pk"].startswith(("JOB#", "KEY#", "OBJ#")) and not i["sk"].startswith("CHUNK#")]
    kinds = {i["sk"].split("#")[0] if i["pk"].startswith("JOB#") else i["pk"].split("#")[0] for i in mine}
    assert {"META", "ROW", "OUT", "KEY", "OBJ"} <= kinds
    for item in mine:
        assert now + 30 * 86400 - 120 < int(item["expires_at"]) <= now + 30 * 86400 + 5, item
    # an item past its expiry is gone for readers, though DynamoDB's TTL has not deleted it yet
    wiring.store().state.update_item(Key={"pk": f"JOB#{obj.job_id}", "sk": "META"},
                                     UpdateExpression="SET expires_at = :x", ExpressionAttributeValues={":x": 1})
    assert wiring.store().jobs.get_job(obj.job_id) is None


# ------------------------------------------------------------------ flows: DescribeSecret only
def test_ingest_checks_the_flow_with_describe_secret_and_never_reads_a_security_id(make_harness, monkeypatch):
    h = make_harness()
    sm = wiring.client("secretsmanager")
    reads: list[str] = []
    real = sm.get_secret_value
    monkeypatch.setattr(sm, "get_secret_value", lambda **kw: reads.append(kw["SecretId"]) or real(**kw))
    obj = h.upload("flow.csv", csv_rows(2))
    assert h.ingest(obj)["files"][0]["status"] == "done"
    assert [r for r in reads if r != h.env["SUPPRESSION_SALT_SECRET"]] == []  # the list's salt only (docs/suppression.md)
    assert len(h.receive()) == 1


def test_given_a_flow_whose_secret_is_scheduled_for_deletion_then_the_file_is_rejected(make_harness):
    h = make_harness()
    sm = wiring.client("secretsmanager")
    sm.create_secret(Name=f"{h.env['FLOW_SECRET_PREFIX']}Gone0001", SecretString="x" * 64)
    sm.delete_secret(SecretId=f"{h.env['FLOW_SECRET_PREFIX']}Gone0001", RecoveryWindowInDays=7)
    obj = h.upload("incoming/Gone0001/file.csv", csv_rows(2))
    h.ingest(obj)
    assert "unknown flow 'Gone0001'" in h.summary(obj)["error"]


def test_given_a_failure_queue_message_that_is_not_a_destination_record_then_it_is_dropped_quietly(make_harness):
    import ingest_handler

    h = make_harness()
    event = destination_record(h, {})
    for body in ("not json", json.dumps({"Records": []}), json.dumps([1, 2])):
        event["Records"][0]["body"] = body
        assert ingest_handler.handler(event, Ctx("ingest")) == {"files": []}
    assert h.receive() == []


def test_given_the_delete_event_came_before_the_upload_event_then_the_deleted_file_is_not_sent(make_harness):
    h = make_harness()
    obj = h.upload("deleted-first.csv", csv_rows(3))
    h.s3.delete_object(Bucket=h.bucket, Key=obj.key)  # a delete marker; the version itself remains
    run(h, sample("eventbridge-s3-object-deleted.json", h.bucket, key=obj.key))  # no job yet: nothing to cancel
    assert h.ingest(obj)["files"][0]["status"] == "rejected"
    assert h.receive() == []
    assert h.summary(obj)["error"] == "the input file was deleted before it was read"
