"""The real handlers, S3 → ingest → SQS → dispatch → Phonon simulator → DynamoDB → report,
against moto built from template.yaml. Given/When/Then."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from phonon_outbound import wiring
from phonon_outbound.reports import HEADER
from phonon_outbound_dev.simulator import FaultPlan

from .conftest import Ctx, csv_rows, fail_once, statuses

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_given_a_clean_file_when_the_pipeline_runs_then_every_row_is_accepted_once_with_its_request_id(make_harness):
    h = make_harness()
    obj = h.upload("clean.csv", csv_rows(1200))
    out = h.ingest(obj)
    assert out["files"][0]["chunks"] == 3
    h.drain()
    report = h.report(obj)
    assert [int(r["row"]) for r in report] == list(range(1, 1201))
    assert statuses(report) == {"ACCEPTED": 1200}
    assert all(r["request-id"] for r in report)
    stats = h.sim.stats()
    assert stats["requests"] == 3
    assert set(stats["calls_by_client_identifier"].values()) == {1}
    assert len(stats["calls_by_client_identifier"]) == 1200
    summary = h.summary(obj)
    assert summary["accepted"] == 1200 and summary["api_requests"] == 3 and summary["rows"] == 1200


def test_given_the_200_shape_then_results_are_keyed_by_the_uuids_phonon_issued(make_harness):
    h = make_harness(shape="200")
    obj = h.upload("shape200.csv", csv_rows(30))
    h.ingest(obj)
    h.drain()
    report = h.report(obj)
    assert statuses(report) == {"ACCEPTED": 30}
    store = wiring.store()
    for r in report:
        item = store.results.get_result(r["phonon-uuid"])
        assert item["client-identifier"] == r["client-identifier"]
        assert item["request-id"] == r["request-id"]
        assert item["row"] == int(r["row"])
    by_cid = boto3.resource("dynamodb", region_name="us-east-1").Table(h.env["RESULTS_TABLE"]).query(
        IndexName="by-client-identifier", KeyConditionExpression="#c = :c",
        ExpressionAttributeNames={"#c": "client-identifier"}, ExpressionAttributeValues={":c": "C-000003"})
    assert by_cid["Items"][0]["phonon-uuid"] == report[3]["phonon-uuid"]


def test_every_call_carries_the_correlation_key_and_no_message_carries_the_security_id(make_harness):
    from phonon_outbound_dev.simulator import DEMO_SECURITY_ID

    h = make_harness()
    obj = h.upload("corr.csv", csv_rows(5))
    h.ingest(obj)
    messages = h.receive()
    assert messages and all(DEMO_SECURITY_ID not in m["Body"] for m in messages)
    h.dispatch(messages)
    bodies = h.sim.accepted_bodies() if hasattr(h.sim, "accepted_bodies") else None
    report = h.report(obj)
    assert statuses(report) == {"ACCEPTED": 5}
    if bodies is not None:
        calls = [c for b in bodies for c in json.loads(b)["calls"]]
        refs = [k["value"] for c in calls for k in c["keys"] if k["name"] == "$flow.key.OutboundRef"]
        assert refs == [f"{obj.job_id}.{n}" for n in range(1, 6)]


def test_given_a_duplicate_s3_notification_then_the_object_is_ingested_once(make_harness):
    h = make_harness()
    obj = h.upload("twice.csv", csv_rows(10))
    first = h.ingest(obj)
    second = h.ingest(obj)
    assert first["files"][0]["status"] == "done"
    assert second["files"][0]["status"] == "duplicate"
    assert len(h.receive()) == 1


def test_given_the_same_file_under_two_names_then_the_second_is_reported_duplicate(make_harness):
    h = make_harness()
    data = csv_rows(20)
    a, b = h.upload("campaign.csv", data), h.upload("campaign-copy.csv", data)
    h.ingest(a)
    h.drain()
    h.ingest(b)
    h.drain()
    assert statuses(h.report(a)) == {"ACCEPTED": 20}
    second = h.report(b)
    assert statuses(second) == {"DUPLICATE": 20}
    assert "incoming/campaign.csv row 1" in second[0]["reason"]
    assert set(h.sim.stats()["calls_by_client_identifier"].values()) == {1}


def test_given_a_redelivered_chunk_after_it_settled_then_no_second_request_is_made(make_harness):
    h = make_harness()
    obj = h.upload("redeliver.csv", csv_rows(10))
    h.ingest(obj)
    messages = h.receive()
    h.dispatch(messages, delete=False)  # processed, but the delete is "lost"
    h.dispatch(messages, delete=True)  # SQS delivers it again
    assert h.sim.stats()["requests"] == 1
    assert statuses(h.report(obj)) == {"ACCEPTED": 10}


def test_given_a_lost_answer_then_the_identical_resend_is_recorded_as_accepted_and_nobody_is_called_twice(make_harness):
    h = make_harness()
    h.sim.set_faults(FaultPlan(sequence=["drop_after_accept"]))
    obj = h.upload("lost.csv", csv_rows(8))
    h.ingest(obj)
    first = h.dispatch(h.receive())
    assert first["batchItemFailures"]  # handed back for a retry
    h.drain()
    report = h.report(obj)
    assert statuses(report) == {"ACCEPTED": 8}
    assert "201" in report[0]["reason"]
    stats = h.sim.stats()
    assert stats["checksum_repeats"] == 1
    assert set(stats["calls_by_client_identifier"].values()) == {1}


def test_given_transient_errors_then_the_chunk_is_retried_until_accepted(make_harness):
    h = make_harness()
    h.sim.set_faults(FaultPlan(sequence=["http500", "gw206", "http429"]))
    obj = h.upload("transient.csv", csv_rows(4))
    h.ingest(obj)
    h.drain(timeout=60)
    assert statuses(h.report(obj)) == {"ACCEPTED": 4}
    assert h.dlq_depth() == 0


def test_given_retries_run_out_then_rows_are_failed_with_the_reason_and_the_chunk_is_in_the_dlq(make_harness):
    h = make_harness(max_receive_count=2)
    h.sim.set_faults(FaultPlan(probabilities={"http500": 1.0}))
    obj = h.upload("exhaust.csv", csv_rows(3))
    h.ingest(obj)
    h.drain(timeout=60)
    report = h.report(obj)
    assert statuses(report) == {"FAILED": 3}
    assert "retries exhausted after 2 attempts" in report[0]["reason"]
    assert "500" in report[0]["reason"]
    assert h.dlq_depth() == 1


def test_given_an_account_refusal_then_sending_pauses_messages_are_kept_and_resume_after_the_fix(make_harness):
    h = make_harness()
    h.sim.set_faults(FaultPlan(sequence=["http403"]))
    obj = h.upload("account.csv", csv_rows(6))
    h.ingest(obj)
    h.dispatch(h.receive())
    store = wiring.store()
    breaker = store.limits.get("BREAKER#DemoFlw1")
    assert breaker["open"] and "403" in breaker["reason"]
    assert not h.job(obj).get("completed")
    assert h.dlq_depth() == 0
    h.drain(timeout=30)  # the copy comes back after the open period; the probe succeeds
    assert statuses(h.report(obj)) == {"ACCEPTED": 6}
    assert not store.limits.get("BREAKER#DemoFlw1")["open"]


def test_given_one_bad_number_in_a_chunk_then_only_that_row_fails_and_the_rest_are_sent(make_harness):
    h = make_harness()
    bad = "919800000007"
    h.sim.set_faults(FaultPlan(record_error_numbers=[bad]))
    obj = h.upload("record.csv", csv_rows(16))
    h.ingest(obj)
    h.drain()
    report = h.report(obj)
    failed = [r for r in report if r["status"] == "FAILED"]
    assert [r["client-identifier"] for r in failed] == ["C-000007"]
    assert "205" in failed[0]["reason"]
    assert statuses(report)["ACCEPTED"] == 15


def test_given_a_file_that_is_rejected_whole_then_the_report_says_so_and_nothing_is_sent(make_harness):
    h = make_harness()
    obj = h.upload("nophone.csv", b"client-identifier,name\nA,Alice\n")
    out = h.ingest(obj)
    assert out["files"][0]["status"] == "rejected"
    assert h.report_text(obj).strip() == ",".join(HEADER)  # the header line only
    assert HEADER[:6] == ("row", "client-identifier", "status", "phonon-uuid", "request-id", "reason")
    summary = h.summary(obj)
    assert summary["error"] and summary["accepted"] == 0 and summary["rows"] == 0
    assert h.receive() == []
    assert h.sim.stats()["requests"] == 0


def test_given_an_unknown_flow_then_the_file_is_rejected_with_that_reason(make_harness):
    h = make_harness()
    obj = h.upload("incoming/NoSuchF1/file.csv", csv_rows(2))
    h.ingest(obj)
    assert "unknown flow 'NoSuchF1'" in h.summary(obj)["error"]


def test_given_a_tiny_time_budget_then_ingest_resumes_where_it_stopped_without_sending_a_row_twice(make_harness, monkeypatch):
    # every time check of the row pass says "time is up"; dedupe is off only to keep this test
    # quick. The pre-pass's own watch is off here (it would never finish with no time at all):
    # test_given_time_runs_out_in_the_pre_pass_* covers it.
    from phonon_outbound import ingest as ingest_module

    monkeypatch.setattr(ingest_module._Deadline, "read", lambda self, n=-1: self.body.read(n))
    h = make_harness(batch_size=100, ingest_time_margin_s=10**6, dedupe_window_hours=0)
    obj = h.upload("resume.csv", csv_rows(7000))
    out = h.ingest(obj)
    assert out["files"][0]["status"] == "done"
    job = h.job(obj)
    assert job["chunks_total"] == 70  # the same chunks as an uninterrupted run
    assert h.ingest_invocations >= 4  # it really paused (every 2,000 rows) and resumed
    h.drain(timeout=120)
    report = h.report(obj)
    assert statuses(report) == {"ACCEPTED": 7000}
    stats = h.sim.stats()
    assert stats["requests"] == 70
    assert len(stats["calls_by_client_identifier"]) == 7000
    assert set(stats["calls_by_client_identifier"].values()) == {1}


def test_given_a_flow_end_webhook_then_the_results_item_is_written_under_the_phonon_uuid(make_harness):
    import webhook_handler

    h = make_harness()
    obj = h.upload("hook.csv", csv_rows(2))
    h.ingest(obj)
    h.drain()
    creds = json.loads(boto3.client("secretsmanager", region_name="us-east-1").get_secret_value(
        SecretId=h.env["WEBHOOK_SECRET_NAME"])["SecretString"])
    import base64

    push = {"body": {"phonon-uuid": "11111111-2222-3333-4444-555555555555",
                     "keys": [{"name": "$flow.key.OutboundRef", "value": f"{obj.job_id}.2"}],
                     "callDetails": [{"calleeNumber": "919800000001", "connectTime": "x", "duration": "42",
                                      "hangupCause": "NORMAL_CLEARING"}],
                     "smsDetails": [{"deliveryStatus": "DELIVERED"}]}}
    event = json.loads((h.stack.root / "events" / "webhook-flow-end.json").read_text())
    event["body"] = json.dumps(push)
    event["headers"]["authorization"] = "Basic " + base64.b64encode(
        f"{creds['username']}:{creds['password']}".encode()).decode()
    resp = webhook_handler.handler(event, Ctx("webhook"))
    assert resp["statusCode"] == 200
    item = wiring.store().results.get_result("11111111-2222-3333-4444-555555555555")
    assert item["client-identifier"] == "C-000001" and item["row"] == 2
    assert item["connected"] is True and item["duration"] == 42 and item["sms_status"] == "DELIVERED"
    assert item["request-id"] == h.report(obj)[1]["request-id"]
    event["headers"]["authorization"] = "Basic " + base64.b64encode(b"phonon:wrong").decode()
    assert webhook_handler.handler(event, Ctx("webhook"))["statusCode"] == 401


def test_the_sample_events_drive_the_handlers(make_harness):
    """events/*.json are the shapes `sam local invoke` uses; they must parse in our handlers."""
    from phonon_outbound import ingest_events

    root = make_harness().stack.root / "events"
    for name in ("s3-put.json", "s3-eventbridge.json"):
        refs = ingest_events.objects_in(json.loads((root / name).read_text()))
        assert [r.key for r in refs] == ["incoming/DemoFlw1/sample-contacts.csv"]


def test_given_a_dead_lettered_chunk_when_the_operator_redrives_it_then_it_is_sent_once_and_the_report_updates(
        make_harness):
    from phonon_outbound_dev.redrive import redrive

    h = make_harness(max_receive_count=2)
    h.sim.set_faults(FaultPlan(sequence=["drop_after_accept"], probabilities={"http500": 1.0}))
    obj = h.upload("redrive.csv", csv_rows(5))
    h.ingest(obj)
    h.drain(timeout=60)
    assert statuses(h.report(obj)) == {"FAILED": 5} and h.dlq_depth() == 1
    # The first attempt was in fact accepted (its answer was lost): a redrive must not call again.
    h.sim.set_faults(None)
    assert redrive(h.sqs, h.dlq_url, h.queue_url) == 1
    h.drain(timeout=60)
    report = h.report(obj)
    assert statuses(report) == {"ACCEPTED": 5}
    assert "201" in report[0]["reason"]
    assert set(h.sim.stats()["calls_by_client_identifier"].values()) == {1}
    assert h.dlq_depth() == 0
    assert h.job(obj)["chunks_settled"] == 1


def test_given_a_dispatcher_killed_after_sending_then_the_redelivery_resends_the_same_bytes_and_nobody_is_called_twice(
        make_harness, monkeypatch):
    import time

    from phonon_outbound.store.rows import DynamoRows

    h = make_harness()
    obj = h.upload("killed.csv", csv_rows(12))
    h.ingest(obj)
    fail_once(monkeypatch, DynamoRows, "put_outcomes", "Lambda killed after the API call, before recording it")
    messages = h.receive()
    result = h.dispatch(messages)
    assert result["batchItemFailures"] and h.sim.stats()["requests"] == 1
    # The visibility timeout runs out and the chunk's lease expires: SQS delivers it again.
    h.sqs.change_message_visibility(QueueUrl=h.queue_url, ReceiptHandle=messages[0]["ReceiptHandle"],
                                    VisibilityTimeout=0)
    time.sleep(2.1)
    h.drain()
    report = h.report(obj)
    assert statuses(report) == {"ACCEPTED": 12}
    stats = h.sim.stats()
    assert stats["requests"] == 2 and stats["checksum_repeats"] == 1
    assert set(stats["calls_by_client_identifier"].values()) == {1}


def test_given_a_dispatcher_killed_between_settling_and_counting_then_the_redelivery_completes_the_report(
        make_harness, monkeypatch):
    from phonon_outbound.store.ledger import DynamoLedger

    h = make_harness()
    obj = h.upload("count.csv", csv_rows(3))
    h.ingest(obj)
    fail_once(monkeypatch, DynamoLedger, "count_settled", "killed after the chunk settled, before the job counted it")
    messages = h.receive()
    assert h.dispatch(messages, delete=False)["batchItemFailures"]
    h.dispatch(messages)  # SQS delivers it again: nothing is sent, the count and the report complete
    assert h.sim.stats()["requests"] == 1
    assert statuses(h.report(obj)) == {"ACCEPTED": 3}
    assert h.job(obj)["chunks_settled"] == 1


def test_given_the_rate_limit_is_used_up_then_a_chunk_waits_in_the_queue_without_spending_an_attempt(make_harness):
    # 120 records/min: chunks of one second's worth (2 calls, even though 60 were asked for);
    # the second chunk must wait a second, longer than this dispatcher may sleep (not at all),
    # so it is re-queued as a fresh message with a delay.
    h = make_harness(records_per_minute=120, batch_size=60, dispatch_max_wait_s=0, rate_jitter_allowance_s=0)
    obj = h.upload("limited.csv", csv_rows(4))
    h.ingest(obj)
    messages = h.receive()
    assert len(messages) == 2
    result = h.dispatch(messages)
    assert result["batchItemFailures"] == []  # nothing failed: one sent, one handed back
    assert h.sim.stats()["requests"] == 1
    attrs = h.sqs.get_queue_attributes(QueueUrl=h.queue_url, AttributeNames=["All"])["Attributes"]
    assert int(attrs["ApproximateNumberOfMessagesDelayed"]) == 1
    assert h.dlq_depth() == 0
    chunk = wiring.store().state.get_item(Key={"pk": f"JOB#{obj.job_id}", "sk": "CHUNK#00000001"})["Item"]
    assert chunk["state"] == "WAITING" and int(chunk["lease_until"]) == 0
    assert not h.job(obj).get("completed")


def test_given_the_flows_dedupe_lock_stays_busy_then_the_chunk_waits_in_the_queue_without_spending_an_attempt(
        make_harness):
    from phonon_outbound_dev.simulator import DEMO_FLOW_ID

    h = make_harness()
    obj = h.upload("locked.csv", csv_rows(3))
    h.ingest(obj)
    # Given another dispatcher holds the flow's dedupe lock (and does not give it back soon)
    store = wiring.store()
    store.dedupe.lock_wait_s = 0.3
    store.state.put_item(Item={"pk": f"DEDUPE-LOCK#{DEMO_FLOW_ID}", "sk": "-", "token": "other",
                               "lease_until": int(time.time()) + 600})
    # When the chunk is dispatched
    result = h.dispatch(h.receive())
    # Then nothing is sent, nothing failed, and a delayed copy waits in the queue
    assert result["batchItemFailures"] == [] and h.sim.stats()["requests"] == 0
    attrs = h.sqs.get_queue_attributes(QueueUrl=h.queue_url, AttributeNames=["All"])["Attributes"]
    assert int(attrs["ApproximateNumberOfMessagesDelayed"]) == 1
    chunk = store.state.get_item(Key={"pk": f"JOB#{obj.job_id}", "sk": "CHUNK#00000000"})["Item"]
    assert chunk["state"] == "WAITING"
    # and once the lock is free the copy is sent, once
    store.state.delete_item(Key={"pk": f"DEDUPE-LOCK#{DEMO_FLOW_ID}", "sk": "-"})
    h.drain(timeout=30)
    assert statuses(h.report(obj)) == {"ACCEPTED": 3} and h.sim.stats()["requests"] == 1
