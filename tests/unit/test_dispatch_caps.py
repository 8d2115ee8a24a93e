"""An operator's cap on one job's or one flow's rate (control.py, action `limit`;
docs/operating.md, "Cap a job's or a flow's rate"), as dispatch obeys it: `DispatchService` on
the in-memory store against the simulator, one controllable clock for the store, the limiters
and the service's sleeps (no test waits, no wall-clock figure is asserted). Given/When/Then."""

from __future__ import annotations

from phonon_outbound.control import ControlService
from phonon_outbound.outcomes import Done, HandBack
from phonon_outbound.status import Status
from phonon_outbound_dev.simulator import DEMO_FLOW_ID

# the world and its fixtures (simulator, clock, moto) are the ingest tests' own: one definition
from . import test_ingest_on_fakes as _world
from .test_ingest_on_fakes import BUCKET, contacts, good_rows

sim, clock, make_world = _world.sim, _world.clock, _world.make_world


def limit(w, per_minute, **target) -> dict:
    """`phonon-outbound limit` / the control event, on the world's store."""
    return ControlService(w.store, BUCKET, lambda job: None).apply("limit", target, per_minute=per_minute)


def cap_items(w) -> list[str]:
    """The keys of the caps' limiter items in the state table."""
    return sorted(pk for (pk, _sk) in w.store.tables.state if pk.startswith("LIMIT#cap-"))


def send_all(w, clock, bodies: list[str], rounds: int = 200) -> list[float]:
    """Handle the chunks as SQS would: a hand-back comes back after its delay (the clock moves
    on to the earliest one). The clock's moment of each chunk's request, in order."""
    waiting = [(clock.t, b) for b in bodies]
    sent: list[float] = []
    for _ in range(rounds):
        if not waiting:
            return sent
        waiting.sort(key=lambda x: x[0])
        due, body = waiting.pop(0)
        clock.t = max(clock.t, due)
        decision = w.handle(body)
        if isinstance(decision, HandBack):
            assert decision.reason.startswith("held at ")  # a cap's hand-back, nothing else
            waiting.append((clock.t + decision.seconds, body))
        else:
            assert isinstance(decision, Done)
            sent.append(clock.t)
    raise AssertionError("chunks still waiting")


def test_a_capped_jobs_chunks_are_paced_at_the_cap_and_handed_back_not_failed(make_world, sim, clock):
    # Given a job of 4 chunks of 10 calls, capped at 60 calls a minute (one chunk every 10 s)
    w = make_world(batch_size=10)
    obj = w.ingest_file("capped.csv", contacts(*good_rows(40)))
    answer = limit(w, 60, job=obj.job_id)
    assert answer == {"action": "limit", "job": obj.job_id, "state": "running", "already": False, "rate_cap": 60}
    first, second, *rest = w.take()
    # When the first chunk is handled it goes at once
    assert isinstance(w.handle(first), Done) and sim.stats()["requests"] == 1
    # Then the second, its slot 10 s away, is handed back with that wait (not failed, nothing
    # taken from the global limit, no receive spent) and says why
    held = w.handle(second)
    assert isinstance(held, HandBack) and held.reason == "held at the job's cap of 60 calls/min"
    assert 9.0 <= held.seconds <= 10.5
    assert sim.stats()["requests"] == 1
    # When it comes back 3 s before its slot, the dispatcher waits that out in the invocation
    clock.t += held.seconds - 2.5
    slept = len(clock.slept)
    assert isinstance(w.handle(second), Done)
    assert any(2.0 <= s <= 3.0 for s in clock.slept[slept:])
    # And the rest go at the cap's pace: every send at least one chunk's time (10 s) after the last
    times = send_all(w, clock, rest)
    assert len(times) == 2 and times[1] - times[0] >= 10.0 - 0.2
    report = w.report(obj)
    assert {r["status"] for r in report} == {Status.ACCEPTED.value} and len(report) == 40
    assert sim.stats()["requests"] == 4


def test_a_cap_below_one_chunk_a_minute_still_sends_at_the_capped_average(make_world, sim, clock):
    # Given 10-call chunks and a cap of 5 calls a minute: one chunk is two minutes' worth
    w = make_world(batch_size=10)
    obj = w.ingest_file("slow.csv", contacts(*good_rows(30)))
    limit(w, "5", job=obj.job_id)
    bodies = w.take()
    # When the chunks are handled and handed back as the cap says
    times = send_all(w, clock, bodies)
    # Then every chunk is sent (never stuck), one at a time, two minutes apart: 5 calls/min on average
    assert len(times) == 3 and sim.stats()["requests"] == 3
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(119.0 <= g <= 125.0 for g in gaps), gaps
    assert len(w.report(obj)) == 30


def test_a_flow_cap_counts_every_job_of_the_flow_and_the_smaller_cap_binds(make_world, sim, clock):
    w = make_world(batch_size=10)
    a = w.ingest_file("a.csv", contacts(*good_rows(10)))
    b = w.ingest_file("b.csv", contacts(*good_rows(10, start=100)))
    # Given the flow capped at 60/min and job a at 600/min (the flow's cap is the smaller)
    assert limit(w, 60, flow=DEMO_FLOW_ID)["rate_cap"] == 60
    limit(w, 600, job=a.job_id)
    bodies = w.take()
    by_job = {b_: body for body in bodies for b_ in (a.job_id, b.job_id) if b_ in body}
    # When job a's chunk goes, job b's (same flow, no cap of its own) waits for the flow's cap
    assert isinstance(w.handle(by_job[a.job_id]), Done)
    held = w.handle(by_job[b.job_id])
    assert isinstance(held, HandBack) and held.reason == f"held at flow {DEMO_FLOW_ID}'s cap of 60 calls/min"
    assert cap_items(w) == [f"LIMIT#cap-flow#{DEMO_FLOW_ID}#60", f"LIMIT#cap-job#{a.job_id}#600"]


def test_removing_a_cap_lets_the_job_go_at_once_and_an_uncapped_job_writes_no_cap_item(make_world, sim, clock):
    w = make_world(batch_size=10)
    free = w.ingest_file("free.csv", contacts(*good_rows(20)))
    # Given a job with no cap: its chunks go back to back, and no cap item is ever written
    assert all(isinstance(w.handle(body), Done) for body in w.take())
    assert cap_items(w) == []
    assert "rate_cap" not in w.store.jobs.get_job(free.job_id)
    # Given a capped job whose second chunk is held
    obj = w.ingest_file("capped.csv", contacts(*good_rows(20, start=100)))
    limit(w, 10, job=obj.job_id)
    first, second = w.take()
    assert isinstance(w.handle(first), Done) and isinstance(w.handle(second), HandBack)
    # When the cap is removed ("none"; 0 would do the same)
    answer = limit(w, "none", job=obj.job_id)
    assert answer["rate_cap"] is None and answer["already"] is False
    assert limit(w, 0, job=obj.job_id)["already"] is True
    # Then the held chunk goes on its next look, without waiting out the old cap's schedule
    assert isinstance(w.handle(second), Done)
    assert len(w.report(obj)) == 20


def test_a_new_cap_starts_afresh_instead_of_inheriting_the_old_schedule(make_world, sim, clock):
    w = make_world(batch_size=10)
    obj = w.ingest_file("raise.csv", contacts(*good_rows(20)))
    limit(w, 1, job=obj.job_id)  # 1 call a minute: the next 10-call chunk is 10 minutes away
    first, second = w.take()
    assert isinstance(w.handle(first), Done)
    held = w.handle(second)
    assert isinstance(held, HandBack) and held.seconds > 500
    # When the operator raises the cap, the held chunk need not wait out the old one
    limit(w, 600, job=obj.job_id)
    assert isinstance(w.handle(second), Done)


def test_a_cap_set_while_a_chunk_waits_for_its_global_slot_holds_that_chunk_too(make_world, sim, clock):
    # Given a global limit of 600 calls a minute (a 10-call chunk a second) and a job's first chunk sent
    w = make_world(batch_size=10, records_per_minute=600)
    obj = w.ingest_file("late.csv", contacts(*good_rows(30)))
    first, second, third = w.take()
    assert isinstance(w.handle(first), Done)
    # When the operator caps the job while the second chunk sleeps until its global slot
    # (it read no cap when it started)
    capped = []

    def sleep_and_cap(seconds: float) -> None:
        if not capped:
            capped.append(limit(w, 60, job=obj.job_id))
        clock.sleep(seconds)

    w.dispatch.sleep = sleep_and_cap
    held = w.handle(second)
    # Then that chunk is not sent on its old slot: handed back whole, saying why
    assert capped and isinstance(held, HandBack) and held.reason == "held at the job's cap of 60 calls/min"
    assert sim.stats()["requests"] == 1
    # and from then on the job goes at its cap: the second now, the third 10 s after it
    assert isinstance(w.handle(second), Done)
    again = w.handle(third)
    assert isinstance(again, HandBack) and 9.0 <= again.seconds <= 10.5
    # A cap raised meanwhile holds nothing back: the stricter one was taken already
    clock.t += again.seconds - 2
    w.dispatch.sleep = lambda s: (limit(w, 600, job=obj.job_id), clock.sleep(s))
    assert isinstance(w.handle(third), Done) and sim.stats()["requests"] == 3
