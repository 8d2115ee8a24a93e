"""Never a second call for the same customer, never a wrong status, no number in a reason:
dedupe claims across files and their window, a chunk's last receive racing another copy of
its message, an answer followed by throttling, a cancel after an unsettled send, and Phonon
messages that name a number. The real dispatch handler
against moto (built from template.yaml) and the bundled simulator over HTTP. Given/When/Then."""

from __future__ import annotations

import json
import time

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.exceptions import ClientError

from phonon_outbound import wiring
from phonon_outbound.dispatch import DispatchService, _Sent, dedupe_hash
from phonon_outbound.outcomes import HandBack, RetryAfter
from phonon_outbound.records import ChunkMessage
from phonon_outbound.sqs_actions import SqsActions
from phonon_outbound.store.jobs import DynamoJobs
from phonon_outbound.store.results import DynamoResults
from phonon_outbound.store.rows import DynamoRows
from phonon_outbound_dev.simulator import FaultPlan

from .conftest import csv_rows, statuses

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def dedupe_claims(h) -> dict[str, str]:
    items = wiring.store().state.scan()["Items"]
    return {str(i["pk"]): str(i["owner"]) for i in items if str(i["pk"]).startswith("DEDUPE#")}


def chunk_state(h, obj, chunk: int = 0) -> str:
    item = wiring.store().state.get_item(Key={"pk": f"JOB#{obj.job_id}", "sk": f"CHUNK#{chunk:08d}"},
                                         ConsistentRead=True).get("Item") or {}
    return str(item.get("state", ""))


def throttled(*_args, **_kwargs):
    raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "throttled"}},
                      "GetItem")


# ---------------------------------------------------------------- dedupe across files
def test_given_rows_failed_after_exhausted_retries_then_the_same_calls_in_a_later_file_are_sent(make_harness):
    # Given a file whose chunk met only 500s until its retries ran out (every receive, the resends too)
    h = make_harness(max_receive_count=3)
    h.sim.set_faults(FaultPlan(probabilities={"http500": 1.0}))
    data = csv_rows(3)
    first = h.upload("first.csv", data)
    h.ingest(first)
    h.drain(timeout=60)
    assert statuses(h.report(first)) == {"FAILED": 3}
    assert h.sim.stats()["requests"] == 3
    # When the same calls come again in a later file, and Phonon answers again
    h.sim.set_faults(None)
    again = h.upload("again.csv", data)
    h.ingest(again)
    h.drain(timeout=60)
    # Then they are sent and ACCEPTED: a call never accepted is no duplicate
    assert statuses(h.report(again)) == {"ACCEPTED": 3}
    assert dedupe_claims(h) and set(dedupe_claims(h).values()) == {f"{again.job_id}.{r}" for r in (1, 2, 3)}


def test_given_the_dedupe_window_has_ended_then_the_same_calls_are_sent_again_though_the_claims_still_exist(
        make_harness):
    # Given a dedupe window of 1.8 s, and a file accepted in it
    h = make_harness(dedupe_window_hours=0.0005)
    data = csv_rows(2)
    first = h.upload("window-1.csv", data)
    h.ingest(first)
    h.drain()
    assert statuses(h.report(first)) == {"ACCEPTED": 2}
    # Within the window the same calls are duplicates
    within = h.upload("window-2.csv", data)
    h.ingest(within)
    h.drain()
    assert statuses(h.report(within)) == {"DUPLICATE": 2}
    # When the window has ended (the claim items are still there: DynamoDB deletes TTL'd items late)
    time.sleep(2.0)
    assert len(dedupe_claims(h)) == 2
    after = h.upload("window-3.csv", data)
    h.ingest(after)
    h.drain()
    # Then the calls are sent again
    assert statuses(h.report(after)) == {"ACCEPTED": 2}
    assert set(h.sim.stats()["calls_by_client_identifier"].values()) == {2}


# ---------------------------------------------------------------- the last receive vs another copy
def test_given_a_last_receive_that_fails_while_another_copy_holds_the_chunk_then_it_leaves_the_chunk_to_its_holder(
        make_harness, monkeypatch):
    h = make_harness(max_receive_count=1)
    obj = h.upload("held.csv", csv_rows(3))
    h.ingest(obj)
    messages = h.receive()
    body = messages[0]["Body"]
    msg = json.loads(body)
    store = wiring.store()
    # Given another copy of the message holds the chunk: it took the lease and the calls' dedupe
    # claims, and is about to send
    assert store.ledger.claim_chunk(obj.job_id, 0, 120).state == "claimed"
    service = wiring.dispatch_service()
    calls = ChunkMessage.model_validate_json(body).complete_calls(service.correlation_name)
    claims = [(dedupe_hash(msg["flow"], c, service.correlation_name), f"{obj.job_id}.{r}")
              for r, c in zip(msg["rows"], calls, strict=True)]
    assert store.dedupe.claim_dedupe(msg["flow"], claims, 3600) == {}
    # When this copy's last receive fails before it could look at the chunk (DynamoDB throttles)
    monkeypatch.setattr(DynamoJobs, "control", throttled)  # the first read of a chunk
    result = h.dispatch(messages)
    monkeypatch.undo()
    # Then it neither settles the chunk nor gives back the holder's dedupe claims: the copy goes
    # to the DLQ, nothing is written FAILED, and the holder's send stays the only one
    assert result["batchItemFailures"]
    assert chunk_state(h, obj) == "IN_PROGRESS"
    assert len(dedupe_claims(h)) == 3
    assert list(store.rows.iter_outcomes(obj.job_id)) == []
    assert not h.job(obj).get("completed")
    assert h.sim.stats()["requests"] == 0


def test_given_a_last_receive_handed_back_for_rate_then_no_other_copy_sends_before_its_rows_are_settled(
        make_harness, monkeypatch):
    # Given the chunk's last receive is told to wait (the rate limit, while a split chunk is being sent)
    h = make_harness(shape="200", max_receive_count=1)
    obj = h.upload("last-wait.csv", csv_rows(3))
    h.ingest(obj)
    messages = h.receive()
    body = messages[0]["Body"]

    def told_to_wait(self, *args, **kwargs):
        return _Sent(stop=RetryAfter(1.0, "waiting for the rate limit while splitting a chunk"))

    real_dispatch = DispatchService._dispatch
    real_settle = DispatchService._settle_after_error
    other: list = []

    def another_copy_arrives_first(self, *args, **kwargs):
        # a redelivered copy of the same message comes in at this very moment
        monkeypatch.setattr(DispatchService, "_dispatch", real_dispatch)
        other.append(self.handle(body, 1, lambda: 60.0))
        return real_settle(self, *args, **kwargs)

    monkeypatch.setattr(DispatchService, "_dispatch", told_to_wait)
    monkeypatch.setattr(DispatchService, "_settle_after_error", another_copy_arrives_first)
    h.dispatch(messages)
    monkeypatch.undo()
    # Then the other copy did not send while this receive still held the chunk
    assert other and isinstance(other[0], HandBack)
    # (the handler queues the handed-back copy, as it would have for that copy's own record)
    SqsActions(h.sqs, h.queue_url).apply(other[0], SQSRecord({"messageId": "copy", "body": body, "attributes": {"ApproximateReceiveCount": "1"}}))
    assert h.sim.stats()["requests"] == 0
    assert chunk_state(h, obj) == "FAILED"
    # and when that copy's turn comes, its calls are placed once and the report ends with them
    h.drain(timeout=30)
    assert statuses(h.report(obj)) == {"ACCEPTED": 3}
    assert set(h.sim.stats()["calls_by_client_identifier"].values()) == {1}
    assert len(dedupe_claims(h)) == 3


def test_given_dynamodb_throttles_right_after_phonon_accepted_on_the_last_receive_then_the_rows_stay_accepted(
        make_harness, monkeypatch):
    # Given Phonon accepts the chunk on its only receive, and DynamoDB throttles the very next write
    h = make_harness(max_receive_count=1)
    obj = h.upload("accepted-then-throttled.csv", csv_rows(3))
    h.ingest(obj)
    monkeypatch.setattr(DynamoJobs, "add_to_job", throttled)
    h.dispatch(h.receive())
    monkeypatch.undo()
    # Then the answer is not lost: the rows are ACCEPTED (the customers are being called), not
    # FAILED, and their dedupe claims stand, so a later file cannot call them a second time
    assert h.sim.stats()["requests"] == 1
    report = h.report(obj)
    assert statuses(report) == {"ACCEPTED": 3} and all(r["request-id"] for r in report)
    assert chunk_state(h, obj) == "DONE"
    assert len(dedupe_claims(h)) == 3
    again = h.upload("accepted-then-throttled-again.csv", csv_rows(3))
    h.ingest(again)
    h.drain()
    assert statuses(h.report(again)) == {"DUPLICATE": 3}
    assert set(h.sim.stats()["calls_by_client_identifier"].values()) == {1}


# ---------------------------------------------------------------- numbers never in reasons or logs
def test_given_phonon_echoes_a_number_in_its_refusal_then_reasons_and_logs_carry_it_masked(make_harness, caplog):
    import http.server
    import logging
    import threading

    class EchoingPhonon(http.server.BaseHTTPRequestHandler):
        """Fails once, then refuses every call, naming its first number in the message (as a
        gateway might)."""

        requests = 0

        def do_POST(self):  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            number = body["calls"][0]["contact-numbers"][0]
            EchoingPhonon.requests += 1
            if EchoingPhonon.requests == 1:
                answer = {"api-response-code": 500, "api-response-message": f"Failure while dialling {number}"}
            elif len(body["calls"]) > 1:
                answer = {"api-response-code": 205, "api-response-message": f"Invalid Contact Number {number}"}
            else:
                answer = {"api-response-code": 400, "api-response-message": f"Bad Request: number {number} refused"}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoingPhonon)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # Given a Phonon that names the refused number in its answer
        h = make_harness(api_url=f"http://127.0.0.1:{server.server_address[1]}/kairos-apis/outbound/create")
        obj = h.upload("echo.csv", csv_rows(2))
        h.ingest(obj)
        with caplog.at_level(logging.DEBUG, logger="phonon-outbound"):
            h.drain()
        ours = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records if r.name.startswith("phonon"))
        assert "Failure while dialling" in ours  # the retry's reason was logged
        # Then the rows fail with the answer's reason, the number in it masked to its last 3 digits
        report = h.report(obj)
        assert statuses(report) == {"FAILED": 2}
        assert "Bad Request: number" in report[0]["reason"] and report[0]["reason"].count("•") >= 9
        for number in ("9800000000", "9800000001"):
            assert number not in h.report_text(obj)
            assert number not in ours
    finally:
        server.shutdown()


# ---------------------------------------------------------------- cancel vs an earlier send
def test_given_a_job_cancelled_after_a_chunk_was_accepted_but_before_it_settled_then_its_rows_stay_accepted(
        make_harness, monkeypatch):
    from .conftest import fail_once

    # Given Phonon accepted the chunk and its outcomes were written, but the dispatcher died
    # before settling it (the results items could not be written)
    h = make_harness(shape="200")
    obj = h.upload("cancel-after-send.csv", csv_rows(3))
    h.ingest(obj)
    fail_once(monkeypatch, DynamoResults, "put_results", "killed after recording the outcomes, before settling")
    messages = h.receive()
    assert h.dispatch(messages)["batchItemFailures"]
    assert h.sim.stats()["requests"] == 1
    # When the job is cancelled (its file deleted) before the redelivery
    wiring.store().state.update_item(
        Key={"pk": f"JOB#{obj.job_id}", "sk": "META"}, UpdateExpression="SET cancelled_reason = :r",
        ExpressionAttributeValues={":r": "cancelled: the input file was deleted"})
    for m in messages:
        h.sqs.change_message_visibility(QueueUrl=h.queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    h.drain()
    # Then nothing more is sent, and the rows Phonon accepted are reported ACCEPTED, not CANCELLED
    assert h.sim.stats()["requests"] == 1
    report = h.report(obj)
    assert statuses(report) == {"ACCEPTED": 3} and all(r["phonon-uuid"] for r in report)
    assert len(dedupe_claims(h)) == 3


def test_given_recording_an_exhausted_chunk_fails_once_then_it_still_settles_failed_and_goes_to_the_dlq(
        make_harness, monkeypatch):
    from .conftest import fail_once

    # Given a chunk whose only receive meets a 500, and whose first write of the outcomes is throttled
    h = make_harness(max_receive_count=1)
    h.sim.set_faults(FaultPlan(probabilities={"http500": 1.0}))
    obj = h.upload("exhausted-throttled.csv", csv_rows(2))
    h.ingest(obj)
    fail_once(monkeypatch, DynamoRows, "put_outcomes", "ProvisionedThroughputExceededException")
    assert h.dispatch(h.receive())["batchItemFailures"]
    # Then its rows are FAILED with the reason, the chunk is FAILED (an operator can redrive it)
    # and the message is in the DLQ
    report = h.report(obj)
    assert statuses(report) == {"FAILED": 2} and "retries exhausted after 1 attempts" in report[0]["reason"]
    assert chunk_state(h, obj) == "FAILED"
    h.drain(timeout=15)
    assert h.dlq_depth() == 1


# ---------------------------------------------------------------- a duplicate of a call not yet accepted
def test_given_the_same_calls_while_the_first_file_is_still_retrying_them_then_they_wait_and_are_sent_if_it_fails(
        make_harness):
    # Given a file whose chunk met a 500 and waits for its retry (its calls' dedupe claims held)
    h = make_harness(max_receive_count=3)  # one receive is spent below picking the second file's message
    h.sim.set_faults(FaultPlan(sequence=["http500", "http500"]))
    data = csv_rows(3)
    first = h.upload("first-retrying.csv", data)
    h.ingest(first)
    assert h.dispatch(h.receive())["batchItemFailures"]
    # When the same calls come in another file meanwhile
    second = h.upload("second-meanwhile.csv", data)
    h.ingest(second)
    received = h.receive()
    mine = [m for m in received if json.loads(m["Body"])["job"] == second.job_id]
    assert len(mine) == 1
    for m in received:
        if m not in mine:  # the first file's retry, received along: back to the queue at once
            h.sqs.change_message_visibility(QueueUrl=h.queue_url, ReceiptHandle=m["ReceiptHandle"],
                                            VisibilityTimeout=0)
    assert h.dispatch(mine)["batchItemFailures"] == []
    # Then they are not called DUPLICATE of calls nobody accepted yet: they wait
    assert list(wiring.store().rows.iter_outcomes(second.job_id)) == []
    # and when the first file's calls end FAILED, the second file's are sent and ACCEPTED
    h.drain(timeout=60)
    assert statuses(h.report(first)) == {"FAILED": 3}
    assert statuses(h.report(second)) == {"ACCEPTED": 3}
    assert h.sim.stats()["requests"] == 3


def test_given_the_same_calls_while_the_first_file_is_retrying_then_they_are_duplicates_once_it_is_accepted(
        make_harness):
    h = make_harness(max_receive_count=3)
    h.sim.set_faults(FaultPlan(sequence=["http500"]))
    data = csv_rows(2)
    first = h.upload("first-then-accepted.csv", data)
    h.ingest(first)
    assert h.dispatch(h.receive())["batchItemFailures"]
    second = h.upload("second-then-duplicate.csv", data)
    h.ingest(second)
    h.drain(timeout=60)
    assert statuses(h.report(first)) == {"ACCEPTED": 2}
    second_report = h.report(second)
    assert statuses(second_report) == {"DUPLICATE": 2}
    assert "incoming/first-then-accepted.csv row 1" in second_report[0]["reason"]
    assert set(h.sim.stats()["calls_by_client_identifier"].values()) == {1}
