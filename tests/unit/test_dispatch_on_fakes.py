"""`DispatchService` (dispatch.py) on the in-memory store (store/memory.py): fast unit tests of
what `handle` decides for a chunk message (outcomes.py: `Done`, `RetryAfter`, `HandBack`,
`Poison`) and what the rows end as (docs/contract.md, "Every row ends in exactly one status",
"Never twice"; docs/design.md, "Every row ends with a status (dispatch)").

The chunk messages are the ones `IngestService` queues (moto's in-process SQS); the Phonon API
is the bundled simulator over real HTTP on loopback, its faults scripted per request
(`FaultPlan.sequence`), so what Phonon received is checked from its side. One controllable
clock drives the store, the rate limiter, the dedupe window and the service's sleeps: no test
waits. `World` is shared with tests/unit/test_ingest_on_fakes.py. Given/When/Then."""

from __future__ import annotations

import json

from phonon_outbound.outcomes import Done, Fate, HandBack, Poison, RetryAfter
from phonon_outbound.status import Status
from phonon_outbound_dev.simulator import DEMO_FLOW_ID, FaultPlan, PhononSimulator

# the world and its fixtures (simulator, clock, moto) are the ingest tests' own: one definition
from . import test_ingest_on_fakes as _world
from .test_ingest_on_fakes import contacts, good_rows, statuses

sim, clock, make_world = _world.sim, _world.clock, _world.make_world

HOUR = 3600.0


def sent_cids(sim: PhononSimulator) -> list[str]:
    """The client-identifiers of every call Phonon accepted, in order."""
    return [c["client-identifier"] for c in sim.accepted_calls()]


# ---------------------------------------------------------------------------------- accepted
def test_an_accepted_chunk_is_done_with_accepted_rows_and_the_jobs_report(make_world, sim):
    w = make_world()
    obj = w.ingest_file("ok.csv", contacts(*good_rows(3)))
    [body] = w.take()
    # When the chunk is handled and Phonon accepts it (200 with call-details)
    decision = w.handle(body)
    # Then it is done: every row ACCEPTED with its phonon-uuid and the request's id
    assert isinstance(decision, Done) and decision.outcome.fate is Fate.SETTLED
    rows = decision.outcome.rows
    assert {r: o.status for r, o in rows.items()} == {1: Status.ACCEPTED, 2: Status.ACCEPTED, 3: Status.ACCEPTED}
    # Phonon received the three calls once, in one request, each with its row reference
    assert sim.stats()["requests"] == 1
    calls = sim.accepted_calls()
    assert [c["client-identifier"] for c in calls] == ["C-0000", "C-0001", "C-0002"]
    assert {o.phonon_uuid for o in rows.values()} == {c["phonon-uuid"] for c in calls}
    # and the job's report is written: its last chunk settled
    report = w.report(obj)
    assert statuses(report) == [("1", "ACCEPTED"), ("2", "ACCEPTED"), ("3", "ACCEPTED")]
    assert report[0]["phonon-uuid"] == rows[1].phonon_uuid and report[0]["request-id"] == rows[1].request_id
    assert w.job(obj)["completed"] is True


def test_a_redelivered_settled_chunk_is_a_duplicate_delivery_and_sends_nothing(make_world, sim):
    w = make_world()
    obj = w.ingest_file("again.csv", contacts(*good_rows(2)))
    [body] = w.take()
    assert isinstance(w.handle(body), Done)
    before = w.report(obj)
    # When SQS delivers the same message again (at least once)
    again = w.handle(body, receive_count=2)
    # Then it is done as a duplicate delivery: nothing sent, the outcome stands
    assert isinstance(again, Done) and again.outcome.fate is Fate.DUPLICATE_DELIVERY
    assert sim.stats()["requests"] == 1 and sent_cids(sim) == ["C-0000", "C-0001"]
    assert w.report(obj) == before


# ---------------------------------------------------------------------------------- transient
def test_a_transient_answer_is_retry_after_with_growing_backoff_then_failed_on_the_last_receive(make_world, sim):
    w = make_world(max_receive_count=3, retry_base_s=4.0)
    sim.set_faults(FaultPlan(probabilities={"http500": 1.0}))
    obj = w.ingest_file("flaky.csv", contacts(*good_rows(2)))
    [body] = w.take()
    # When Phonon answers 500 to the first two receives
    first, second = w.handle(body, 1), w.handle(body, 2)
    # Then each is a RetryAfter (through the visibility timeout) with jittered exponential
    # backoff (base 4 s: within [2, 4] s, then [4, 8] s); no row is decided, no report yet
    assert isinstance(first, RetryAfter) and isinstance(second, RetryAfter)
    assert first.seconds is not None and 2.0 <= first.seconds <= 4.0 and "500" in first.reason
    assert second.seconds is not None and 4.0 <= second.seconds <= 8.0
    assert not w.has_report(obj)
    # When the last receive gets 500 too
    last = w.handle(body, 3)
    # Then the rows are FAILED (retries exhausted) and the job reported; the message still
    # fails at once (RetryAfter 0) so that it reaches the DLQ
    assert last == RetryAfter(0, last.reason) and last.reason.startswith("retries exhausted after 3 attempts")
    report = w.report(obj)
    assert statuses(report) == [("1", "FAILED"), ("2", "FAILED")]
    assert all(r["reason"].startswith("retries exhausted after 3 attempts") and "500" in r["reason"] for r in report)
    assert sim.stats()["requests"] == 3 and sent_cids(sim) == []


def test_an_answer_lost_after_phonon_accepted_is_resent_byte_identical_and_recorded_accepted_once(make_world, sim):
    w = make_world()
    # Given Phonon accepts the first request but the connection drops before its answer
    sim.set_faults(FaultPlan(sequence=["drop_after_accept"]))
    obj = w.ingest_file("lost.csv", contacts(*good_rows(2)))
    [body] = w.take()
    first = w.handle(body, 1)
    assert isinstance(first, RetryAfter)  # no answer: may have been delivered, keep the message
    # When the message comes back
    second = w.handle(body, 2)
    # Then the identical resend is answered "201 Checksum Repeated": the rows are ACCEPTED,
    # and Phonon accepted each call once
    assert isinstance(second, Done)
    assert all(o.status is Status.ACCEPTED and "201" in o.reason for o in second.outcome.rows.values())
    assert sim.stats()["checksum_repeats"] == 1 and sent_cids(sim) == ["C-0000", "C-0001"]
    assert statuses(w.report(obj)) == [("1", "ACCEPTED"), ("2", "ACCEPTED")]


def test_a_partial_success_accepts_the_listed_calls_and_fails_the_others_with_the_reason(make_world, sim):
    w = make_world()
    # Given Phonon accepts only some of the calls (209 Partial Success: here the 1st and 3rd)
    sim.set_faults(FaultPlan(sequence=["partial209"]))
    obj = w.ingest_file("partial.csv", contacts(*good_rows(3)))
    decision = w.handle(w.take()[0])
    # Then those rows are ACCEPTED and the other FAILED, saying it was not among the accepted
    assert isinstance(decision, Done)
    report = w.report(obj)
    assert statuses(report) == [("1", "ACCEPTED"), ("2", "FAILED"), ("3", "ACCEPTED")]
    assert "209" in report[1]["reason"] and "not among the accepted ones" in report[1]["reason"]
    assert sent_cids(sim) == ["C-0000", "C-0002"]


def test_a_flow_whose_secret_is_gone_by_dispatch_fails_its_rows_with_the_reason_and_sends_nothing(make_world, sim):
    w = make_world()
    obj = w.ingest_file("orphan.csv", contacts(*good_rows(2)))
    [body] = w.take()
    # When the flow's secret is deleted between ingest and dispatch
    w.secrets.client.delete_secret(SecretId=w.secrets.secret_name(DEMO_FLOW_ID), ForceDeleteWithoutRecovery=True)
    decision = w.handle(body)
    # Then its rows end FAILED naming the flow, and nothing reaches Phonon (nor the security-id a report)
    assert isinstance(decision, Done)
    report = w.report(obj)
    assert statuses(report) == [("1", "FAILED"), ("2", "FAILED")]
    assert all(f"unknown flow '{DEMO_FLOW_ID}'" in r["reason"] for r in report)
    assert sim.stats()["requests"] == 0


# ---------------------------------------------------------------------------------- waiting
def test_phonons_rate_limit_answer_is_a_hand_back_never_a_failure(make_world, sim, clock):
    w = make_world(max_receive_count=1)
    # Given Phonon answers 429 (Retry-After: 1) to the first request, even on the last receive
    sim.set_faults(FaultPlan(sequence=["http429"]))
    obj = w.ingest_file("busy.csv", contacts(*good_rows(2)))
    [body] = w.take()
    decision = w.handle(body, 1)
    # Then the chunk is handed back with a delay (a fresh receive count), no row FAILED
    assert isinstance(decision, HandBack) and decision.seconds >= 1.0
    assert not w.has_report(obj)
    # and the copy, handled later, is sent and accepted
    clock.t += decision.seconds
    assert isinstance(w.handle(body, 1), Done)
    assert statuses(w.report(obj)) == [("1", "ACCEPTED"), ("2", "ACCEPTED")]


def test_over_our_own_rate_limit_the_chunk_waits_on_the_clock_or_is_handed_back_unsent(make_world, sim, clock):
    # Given 120 calls a minute (2 a second: chunks of 2 calls) and three chunks
    w = make_world(records_per_minute=120, dispatch_max_wait_s=5.0)
    obj = w.ingest_file("paced.csv", contacts(*good_rows(6)))
    first, second, third = w.take()
    # The first is sent at once; the second is within the wait allowed: the service sleeps
    # (on the test's clock) until its slot, then sends
    assert isinstance(w.handle(first), Done) and clock.slept == []
    assert isinstance(w.handle(second), Done)
    assert clock.slept and 0 < clock.slept[-1] <= 5.0
    # When the third finds the limit reached with time left for its request but none to wait
    decision = w.handle(third, left_s=w.dispatch.request_time_s + 0.5)
    # Then it is handed back unsent with the time to come back: never a failure
    assert isinstance(decision, HandBack) and decision.seconds > 0 and decision.reason == "waiting for the rate limit"
    assert sim.stats()["requests"] == 2 and not w.has_report(obj)
    clock.t += decision.seconds
    assert isinstance(w.handle(third), Done)
    assert [r["status"] for r in w.report(obj)] == ["ACCEPTED"] * 6


def test_an_account_refusal_pauses_the_flow_and_its_chunks_are_handed_back_unsent(make_world, sim, clock):
    w = make_world(breaker_open_s=60.0, batch_size=1)
    # Given Phonon refuses the account (IP not whitelisted) once
    sim.set_faults(FaultPlan(sequence=["http403"]))
    obj = w.ingest_file("refused.csv", contacts(*good_rows(2)))
    first, second = w.take()
    # Then that chunk is handed back for the breaker's time, and the flow's next chunk is
    # handed back without a request: nothing FAILED
    decision = w.handle(first)
    assert isinstance(decision, HandBack) and decision.seconds == 60.0 and "Not Whitelisted" in decision.reason
    paused = w.handle(second)
    assert isinstance(paused, HandBack) and paused.reason.startswith(f"flow {DEMO_FLOW_ID} paused")
    assert not w.has_report(obj)
    # once the pause is over, both go
    clock.t += 61
    assert isinstance(w.handle(first), Done) and isinstance(w.handle(second), Done)
    assert statuses(w.report(obj)) == [("1", "ACCEPTED"), ("2", "ACCEPTED")]


def test_too_little_time_left_in_the_invocation_is_a_hand_back_and_nothing_is_sent(make_world, sim):
    w = make_world()
    w.ingest_file("late.csv", contacts(*good_rows(1)))
    [body] = w.take()
    decision = w.handle(body, left_s=2.0)
    assert isinstance(decision, HandBack) and "left in this invocation" in decision.reason
    assert sim.stats()["requests"] == 0


# ---------------------------------------------------------------------------------- not sent
def test_a_cancelled_jobs_chunk_is_settled_cancelled_and_nothing_is_sent(make_world, sim):
    w = make_world(batch_size=2)
    obj = w.ingest_file("cancel.csv", contacts(*good_rows(4)))
    first, second = w.take()
    assert isinstance(w.handle(first), Done)
    # When the job is cancelled between its two chunks
    assert w.store.jobs.cancel_job(obj.job_id, "the input file was deleted")
    decision = w.handle(second)
    # Then the second chunk's rows end CANCELLED with the reason, nothing more reaches Phonon,
    # and the report keeps the first chunk's ACCEPTED rows
    assert isinstance(decision, Done)
    assert {o.status for o in decision.outcome.rows.values()} == {Status.CANCELLED}
    assert sim.stats()["requests"] == 1 and sent_cids(sim) == ["C-0000", "C-0001"]
    report = w.report(obj)
    assert statuses(report) == [("1", "ACCEPTED"), ("2", "ACCEPTED"), ("3", "CANCELLED"), ("4", "CANCELLED")]
    assert report[3]["reason"] == "the input file was deleted"


def test_abandon_ends_an_unsent_chunk_with_the_status_given_and_leaves_a_settled_one_alone(make_world, sim):
    w = make_world(batch_size=1)
    obj = w.ingest_file("abandon.csv", contacts(*good_rows(2)))
    first, second = w.take()
    assert isinstance(w.handle(first), Done)
    # When an operator abandons both messages (e.g. purging the DLQ)
    assert w.dispatch.abandon(first, Status.CANCELLED, "purged") == 0  # settled already: it stands
    assert w.dispatch.abandon(second, Status.CANCELLED, "purged by the operator") == 1
    assert statuses(w.report(obj)) == [("1", "ACCEPTED"), ("2", "CANCELLED")]
    assert w.report(obj)[1]["reason"] == "purged by the operator"
    assert sim.stats()["requests"] == 1


# ---------------------------------------------------------------------------------- dedupe
def test_the_same_call_in_a_later_file_within_the_window_is_a_duplicate_naming_the_other_file(make_world, sim, clock):
    w = make_world(dedupe_window_hours=24)
    [same] = good_rows(1, start=42)
    first = w.ingest_file("monday.csv", contacts(same))
    assert isinstance(w.handle(w.take()[0]), Done)
    # When a later file holds the same call (row 2) and a new one, within the window
    clock.t += 23 * HOUR
    second = w.ingest_file("tuesday.csv", contacts(*good_rows(1, start=7), same))
    decision = w.handle(w.take()[0])
    # Then the repeated call is DUPLICATE, with the file and row it was accepted from, and
    # not sent; the new one is ACCEPTED
    assert isinstance(decision, Done)
    report = w.report(second)
    assert statuses(report) == [("1", "ACCEPTED"), ("2", "DUPLICATE")]
    assert report[1]["reason"] == (f"the same call was already accepted from {first.key} row 1 within the last 24 h")
    assert sent_cids(sim) == ["C-0042", "C-0007"]


def test_after_the_window_the_same_call_is_sent_again(make_world, sim, clock):
    w = make_world(dedupe_window_hours=24)
    [same] = good_rows(1, start=42)
    w.ingest_file("monday.csv", contacts(same))
    assert isinstance(w.handle(w.take()[0]), Done)
    # When the same call comes in a file after the window (its claim expired, though a store
    # may keep an expired item until TTL deletes it)
    clock.t += 24 * HOUR + 60
    later = w.ingest_file("wednesday.csv", contacts(same))
    assert isinstance(w.handle(w.take()[0]), Done)
    # Then it is sent and ACCEPTED
    assert statuses(w.report(later)) == [("1", "ACCEPTED")]
    assert sent_cids(sim) == ["C-0042", "C-0042"]


def test_calls_failed_after_exhausted_retries_are_accepted_when_they_come_again_in_a_later_file(make_world, sim):
    w = make_world(max_receive_count=1)
    [call] = good_rows(1, start=3)
    # Given a file whose only chunk failed on its last receive (Phonon answered 500)
    sim.set_faults(FaultPlan(sequence=["http500"]))
    first = w.ingest_file("failed.csv", contacts(call))
    assert isinstance(w.handle(w.take()[0]), RetryAfter)
    assert statuses(w.report(first)) == [("1", "FAILED")]
    # When the same call comes again in a later file
    again = w.ingest_file("retry.csv", contacts(call))
    assert isinstance(w.handle(w.take()[0]), Done)
    # Then it is sent and ACCEPTED: a FAILED row gave its dedupe claim back
    assert statuses(w.report(again)) == [("1", "ACCEPTED")]
    assert sent_cids(sim) == ["C-0003"]


# ---------------------------------------------------------------------------------- unreadable
def test_an_unreadable_message_that_names_its_job_settles_its_rows_failed(make_world, sim):
    w = make_world()
    obj = w.ingest_file("garbled.csv", contacts(*good_rows(2)))
    [body] = w.take()
    garbled = {**json.loads(body), "calls_gz": "%%% not base64 %%%"}
    decision = w.handle(json.dumps(garbled))
    # Then its rows end FAILED with the reason, the job is reported, nothing is sent
    assert isinstance(decision, Done)
    report = w.report(obj)
    assert statuses(report) == [("1", "FAILED"), ("2", "FAILED")]
    assert all(r["reason"].startswith("not sent: the chunk message could not be read") for r in report)
    assert sim.stats()["requests"] == 0


def test_a_message_that_names_nothing_it_could_settle_is_poison(make_world, sim):
    w = make_world()
    # Not JSON at all, or a chunk of a job nobody knows: nothing to attach a reason to
    assert isinstance(w.handle("not json at all"), Poison)
    unknown = {"v": 2, "job": "nosuchjob", "flow": DEMO_FLOW_ID, "chunk": 0, "rows": [1], "calls_gz": "%%%"}
    assert isinstance(w.handle(json.dumps(unknown)), Poison)
    assert sim.stats()["requests"] == 0
