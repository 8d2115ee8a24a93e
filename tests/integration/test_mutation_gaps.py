"""Dedupe across files at the edges an outside mutation run found untested (issue 14, step 8):
calls that ended FAILED after their retries ran out are no duplicates of anything; a resend
(receive count 2) decides dedupe exactly as its first receive did; a claim whose window has
ended no longer makes a call DUPLICATE, although DynamoDB has not deleted its item yet.

The real ingest and dispatch handlers against moto (built from template.yaml) and the bundled
Phonon simulator over HTTP; what is checked is what the simulator accepted and what the
reports say. Given/When/Then."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from phonon_outbound import wiring
from phonon_outbound_dev.simulator import FaultPlan

from .conftest import csv_rows, statuses

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def accepted_by_phonon(h) -> dict[str, int]:
    """How many times the simulator accepted a call of each client-identifier."""
    return dict(h.sim.stats()["calls_by_client_identifier"])


def by_status(report: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in report:
        out.setdefault(r["status"], []).append(r["client-identifier"])
    return {k: sorted(v) for k, v in out.items()}


def messages_of(h, obj, received: list[dict]) -> list[dict]:
    """The received messages that carry this file's chunks; the others become visible again at once."""
    mine = [m for m in received if json.loads(m["Body"])["job"] == obj.job_id]
    for m in received:
        if m not in mine:
            h.sqs.change_message_visibility(QueueUrl=h.queue_url, ReceiptHandle=m["ReceiptHandle"],
                                            VisibilityTimeout=0)
    return mine


def dedupe_claim_items(h) -> int:
    """Dedupe claim items present in the state table (expired or not: moto, like DynamoDB
    within its TTL delay, keeps them)."""
    table = boto3.resource("dynamodb", region_name="us-east-1").Table(h.env["STATE_TABLE"])
    items = table.scan(ConsistentRead=True)["Items"]
    return sum(1 for i in items if str(i["pk"]).startswith("DEDUPE#"))


# ---------------------------------------------------------------- FAILED after retries → no duplicate
def test_given_calls_failed_on_every_attempt_then_a_later_file_sends_them_once_and_then_holds_them(make_harness):
    # Given a file whose chunk met a 500 on each of its three receives (the resends too)
    h = make_harness(max_receive_count=3)
    h.sim.set_faults(FaultPlan(probabilities={"http500": 1.0}))
    data = csv_rows(4)
    failed = h.upload("failed-everywhere.csv", data)
    h.ingest(failed)
    h.drain(timeout=60)
    assert statuses(h.report(failed)) == {"FAILED": 4}
    assert h.sim.stats()["requests"] == 3 and accepted_by_phonon(h) == {}

    # When the same calls come in a later file and Phonon answers again
    h.sim.set_faults(None)
    later = h.upload("later.csv", data)
    h.ingest(later)
    h.drain(timeout=60)
    # Then they are ACCEPTED, and each reached Phonon exactly once
    assert statuses(h.report(later)) == {"ACCEPTED": 4}
    assert accepted_by_phonon(h) == {f"C-{i:06d}": 1 for i in range(4)}

    # and the later file now holds them: a third file's same calls are its duplicates
    third = h.upload("third.csv", data)
    h.ingest(third)
    h.drain(timeout=60)
    report = h.report(third)
    assert statuses(report) == {"DUPLICATE": 4}
    assert all("incoming/later.csv" in r["reason"] for r in report)
    assert accepted_by_phonon(h) == {f"C-{i:06d}": 1 for i in range(4)}


# ---------------------------------------------------------------- a resend decides like its first receive
def test_given_sends_that_time_out_after_the_claim_then_each_resend_still_holds_it_and_no_call_is_placed_twice(
        make_harness):
    # Given Phonon takes 2 s on the first request and on the third (both accept, late) while the
    # client gives up after 1 s, and a first file of three calls whose first receive claimed its
    # calls and then timed out
    h = make_harness(max_receive_count=3, api_read_timeout_s=1)
    h.sim.set_faults(FaultPlan(sequence=["slow", "ok", "slow"], slow_s=2.0))
    first = h.upload("first-times-out.csv", csv_rows(3))
    h.ingest(first)
    assert h.dispatch(h.receive())["batchItemFailures"]  # receive 1: timed out, retried
    assert h.sim.stats()["requests"] == 1

    # When a second file arrives meanwhile with the same three calls and three new ones
    second = h.upload("second-meanwhile.csv", csv_rows(6))
    h.ingest(second)
    mine = messages_of(h, second, h.receive())
    assert len(mine) == 1
    assert h.dispatch(mine)["batchItemFailures"] == []
    # Then it sends nothing while the first file's outcome is not known
    assert h.sim.stats()["requests"] == 1
    assert list(wiring.store().rows.iter_outcomes(second.job_id)) == []

    # When everything runs on: the first file's resend (receive 2) is answered; the second
    # file's chunk sends its three new calls, times out, and resends (receive 2)
    h.drain(timeout=90)
    # Then the first file's calls are ACCEPTED, the second file's copies of them DUPLICATE (on
    # its resend too), its new calls ACCEPTED, and Phonon accepted every call exactly once
    assert statuses(h.report(first)) == {"ACCEPTED": 3}
    second_report = h.report(second)
    assert by_status(second_report) == {"DUPLICATE": ["C-000000", "C-000001", "C-000002"],
                                        "ACCEPTED": ["C-000003", "C-000004", "C-000005"]}
    assert all("incoming/first-times-out.csv" in r["reason"] for r in second_report if r["status"] == "DUPLICATE")
    assert h.sim.stats()["requests"] >= 4  # both timeouts were followed by a resend
    assert accepted_by_phonon(h) == {f"C-{i:06d}": 1 for i in range(6)}


# ---------------------------------------------------------------- the window's end
WINDOW_HOURS = 0.003  # 10.8 s: room for two files to be ingested and sent inside it on a busy machine


def test_given_a_claim_older_than_the_window_but_still_stored_then_it_makes_no_duplicate_and_is_taken_over(
        make_harness):
    # Given a dedupe window of 10.8 s and a file accepted in it
    h = make_harness(dedupe_window_hours=WINDOW_HOURS)
    window_s = WINDOW_HOURS * 3600
    data = csv_rows(3)
    first = h.upload("window-first.csv", data)
    h.ingest(first)
    sent_before = time.time()
    h.drain()
    claimed_by = time.time()  # the first file's claims were taken between these two moments
    assert statuses(h.report(first)) == {"ACCEPTED": 3}
    # Within the window the same calls are its duplicates
    within = h.upload("window-within.csv", data)
    h.ingest(within)
    h.drain()
    assert time.time() < sent_before + window_s, "too slow to check inside the window"
    assert statuses(h.report(within)) == {"DUPLICATE": 3}

    # When the window has ended, with the claim items still in the table (TTL deletes late)
    time.sleep(max(0.0, claimed_by + window_s + 0.3 - time.time()))
    assert dedupe_claim_items(h) == 3
    after = h.upload("window-after.csv", data)
    h.ingest(after)
    resent_at = time.time()
    h.drain()
    # Then the calls are sent again and ACCEPTED
    assert statuses(h.report(after)) == {"ACCEPTED": 3}
    assert accepted_by_phonon(h) == {f"C-{i:06d}": 2 for i in range(3)}

    # and the new file's claims start a new window: the same calls right after are ITS duplicates
    again = h.upload("window-again.csv", data)
    h.ingest(again)
    h.drain()
    assert time.time() < resent_at + window_s, "too slow to check inside the new window"
    report = h.report(again)
    assert statuses(report) == {"DUPLICATE": 3}
    assert all("incoming/window-after.csv" in r["reason"] for r in report)
    assert accepted_by_phonon(h) == {f"C-{i:06d}": 2 for i in range(3)}


# ---------------------------------------------------------------- the breaker is the refused flow's alone
def test_given_one_flow_refused_at_account_level_then_another_flow_is_still_sent_while_it_is_paused(make_harness):
    # Given a second flow, and Phonon refusing the first flow's request at account level (403)
    h = make_harness(breaker_open_s=60)
    other_flow, other_sid = "OtherFl2", "OtherFlowSecurityId" + "7" * 45
    h.sim.add_flow(other_flow, other_sid)
    boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name=f"{h.env['FLOW_SECRET_PREFIX']}{other_flow}", SecretString=json.dumps({"security-id": other_sid}))
    h.sim.set_faults(FaultPlan(sequence=["http403"]))
    refused = h.upload("refused.csv", csv_rows(3))
    h.ingest(refused)
    assert h.dispatch(h.receive())["batchItemFailures"] == []  # handed back to wait, not failed
    assert h.sim.stats()["requests"] == 1
    # When a file of the other flow comes while the first flow is paused
    other = h.upload(f"incoming/{other_flow}/other.csv", csv_rows(2, prefix="O"))
    h.ingest(other)
    mine = messages_of(h, other, h.receive())
    assert len(mine) == 1
    h.dispatch(mine)
    # Then the other flow did not trip: its calls are sent and ACCEPTED at once
    assert statuses(h.report(other)) == {"ACCEPTED": 2}
    assert accepted_by_phonon(h) == {"O-000000": 1, "O-000001": 1}
    # while the refused flow stays paused: nothing more of it was sent, its rows have no outcome
    assert h.sim.stats()["requests"] == 2
    assert not h.job(refused).get("completed")
    assert list(wiring.store().rows.iter_outcomes(refused.job_id)) == []
