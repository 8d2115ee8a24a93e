"""Calling windows end to end on the real handlers (moto from template.yaml, the bundled
simulator over HTTP), with a simulated clock injected into the services and the simulator: a
window that closes mid-run holds the rest of the chunks — handed back, never failed, never in
the DLQ — and they are sent once it reopens (docs/calling-windows.md)."""

from __future__ import annotations

import heapq
from datetime import UTC, datetime

import pytest

from phonon_outbound import wiring
from phonon_outbound.records import Job
from phonon_outbound.status import Status
from phonon_outbound.windows import parse_window, zone

from .conftest import csv_rows, statuses

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

WINDOW = "Mon-Sat 09:00-21:00"
IST = zone("Asia/Kolkata")


class SimClock:
    """Time that moves only when the test moves it (epoch seconds)."""

    def __init__(self, start: datetime):
        self.t = start.timestamp()

    def __call__(self) -> float:
        return self.t


class DelayedQueue:
    """SQS's DelaySeconds in simulated time: a message dispatch hands back with a delay (a
    SendMessage with DelaySeconds, on the functions' own SQS client) is due that many simulated
    seconds later; the test puts it back on the real queue when the simulated clock reaches it."""

    def __init__(self, clock: SimClock, sqs):
        self.clock = clock
        self.heap: list[tuple[float, int, str]] = []
        self.delays: list[int] = []
        self.n = 0
        self.real = sqs.send_message
        sqs.send_message = self.send_message

    def send_message(self, **kwargs):
        delay = int(kwargs.get("DelaySeconds") or 0)
        if not delay:
            return self.real(**kwargs)
        assert delay <= 900  # SQS's ceiling
        self.delays.append(delay)
        self.n += 1
        heapq.heappush(self.heap, (self.clock() + delay, self.n, kwargs["MessageBody"]))
        return {"MessageId": f"delayed-{self.n}"}


def queue_empty(h) -> bool:
    attrs = h.sqs.get_queue_attributes(QueueUrl=h.queue_url, AttributeNames=["All"])["Attributes"]
    return all(int(attrs.get(k, 0)) == 0 for k in ("ApproximateNumberOfMessages",
                                                   "ApproximateNumberOfMessagesNotVisible",
                                                   "ApproximateNumberOfMessagesDelayed"))


def test_a_window_that_closes_mid_run_holds_the_rest_until_it_reopens_and_nothing_is_sent_outside_it(make_harness):
    # Given a Mon-Sat 09:00-21:00 window (recipients in India), 2,000 rows in chunks of 100,
    # and a clock that reads Tuesday 20:59:00 IST and moves 10 s per dispatch invocation
    h = make_harness(calling_window=WINDOW, batch_size=100)
    clock = SimClock(datetime(2026, 12, 1, 20, 59, tzinfo=IST))
    h.sim.clock = clock
    delayed = DelayedQueue(clock, wiring.client("sqs"))
    wiring.ingest_service().clock = clock
    wiring.dispatch_service().clock = clock
    obj = h.upload("window.csv", csv_rows(2000))
    h.ingest(obj)
    assert h.job(obj)["chunks_total"] == 20

    # When dispatch runs (two chunks per invocation) until nothing is left, the delayed copies
    # coming back when the simulated clock reaches them
    held_note = None
    invocations = 0
    while True:
        messages = h.receive(n=2)
        if messages:
            result = h.dispatch(messages)
            assert result["batchItemFailures"] == []
            invocations += 1
            clock.t += 10
            held_note = held_note or h.job(obj).get("window_wait")
            continue
        if not queue_empty(h):
            continue
        if not delayed.heap:
            break
        clock.t = max(clock.t, delayed.heap[0][0])
        while delayed.heap and delayed.heap[0][0] <= clock.t:
            _, _, body = heapq.heappop(delayed.heap)
            h.sqs.send_message(QueueUrl=h.queue_url, MessageBody=body)
        assert invocations < 2000, "the held chunks never went out"

    # Then no request reached the simulator outside the window
    window = parse_window(WINDOW)
    stats = h.sim.stats()
    assert stats["requests"] == stats["accepted_requests"] == 20
    sent_at = [datetime.fromtimestamp(t, UTC) for t, _ in stats["accepted"]]
    assert all(window.allowed(t, IST) for t in sent_at)
    # the window closed mid-run: some chunks went on Tuesday evening, the rest Wednesday from 09:00
    tuesday = [t for t in sent_at if t.astimezone(IST).day == 1]
    wednesday = [t for t in sent_at if t.astimezone(IST).day == 2]
    assert tuesday and wednesday and len(tuesday) + len(wednesday) == 20
    assert min(wednesday).astimezone(IST).strftime("%H:%M") == "09:00"
    # held chunks were handed back in steps of at most SQS's 900 s, many times over the night
    assert max(delayed.delays) == 900 and len(delayed.delays) > 40
    # every row ends ACCEPTED, nothing in the DLQ, nobody called twice
    report = h.report(obj)
    assert statuses(report) == {Status.ACCEPTED: 2000}
    assert h.dlq_depth() == 0
    assert stats["called_twice"] == []
    # the job said it waited, and why, while it waited; the summary says so too
    assert held_note is not None
    assert held_note["reason"] == ("waiting for the calling window 'Mon-Sat 09:00-21:00' in Asia/Kolkata "
                                   "(opens 2026-12-02T09:00:00+05:30)")
    job = Job.from_item(h.job(obj))
    assert job.window_wait["opens"] == "2026-12-02T03:30:00+00:00" and job.window_wait["reason"] == held_note["reason"]
    summary = h.summary(obj)
    assert summary["calling_window"] == dict(job.window_wait)
    assert summary["accepted"] == 2000


def test_a_start_time_outside_the_window_is_rejected_at_ingest_or_deferred(make_harness):
    # Given rows scheduled at 22:30 IST on a weekday, and the window Mon-Sat 09:00-21:00
    rows = b"client-identifier,phone,start-time\nA-1,9812345670,2026-12-01 22:30\nA-2,9812345671,2026-12-01 10:30\n" \
           b"A-3,9812345672,\n"
    h = make_harness(calling_window=WINDOW)
    clock = SimClock(datetime(2026, 12, 1, 10, 0, tzinfo=IST))
    wiring.ingest_service().clock = clock
    service = wiring.dispatch_service()
    service.clock = clock
    obj = h.upload("scheduled.csv", rows)
    h.ingest(obj)
    h.drain()
    report = h.report(obj)
    # Then the row outside is REJECTED with the window and the zone named, the others are sent
    assert [r["status"] for r in report] == [Status.REJECTED, Status.ACCEPTED, Status.ACCEPTED]
    assert "outside the calling window 'Mon-Sat 09:00-21:00' in Asia/Kolkata" in report[0]["reason"]
    assert "9812345670" not in report[0]["reason"]

    # And under `defer` the same row is sent with its start-time moved to the next opening
    h2 = make_harness(calling_window=WINDOW, calling_window_policy="defer")
    wiring.ingest_service().clock = clock
    wiring.dispatch_service().clock = clock
    obj2 = h2.upload("scheduled2.csv", rows.replace(b"A-", b"B-"))  # other calls: no DUPLICATE of the first file
    h2.ingest(obj2)
    h2.drain()
    report2 = h2.report(obj2)
    assert [r["status"] for r in report2] == [Status.ACCEPTED] * 3
    assert "moved to the next opening, 2026-12-02T09:00:00+05:30" in report2[0]["reason"]
    starts = {c["client-identifier"]: c["start-time"] for c in h2.sim.accepted_calls()}
    assert starts["B-1"] == "2026-12-02T09:00:00+05:30"


def test_a_row_the_window_rejects_is_no_contact_for_the_frequency_cap(make_harness):
    # Given a cap of one contact per number a day, and two rows for one number: the first
    # scheduled outside the window, the second inside it
    rows = b"client-identifier,phone,start-time\nB-1,9812345670,2026-12-01 22:30\nB-2,9812345670,2026-12-01 10:30\n"
    h = make_harness(calling_window=WINDOW, frequency_caps="*=1/24h")
    clock = SimClock(datetime(2026, 12, 1, 10, 0, tzinfo=IST))
    wiring.ingest_service().clock = clock
    wiring.dispatch_service().clock = clock
    obj = h.upload("capped.csv", rows)
    h.ingest(obj)
    h.drain()
    # Then the first is REJECTED by the window and the second is the number's one contact
    assert [r["status"] for r in h.report(obj)] == [Status.REJECTED, Status.ACCEPTED]
    assert [c["client-identifier"] for c in h.sim.accepted_calls()] == ["B-2"]
