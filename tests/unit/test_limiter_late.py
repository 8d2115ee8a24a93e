"""The rate limit holds when senders do not send at the moment they were granted.

A dispatcher granted a moment sleeps until it, then still has to re-read its job, build the
body and open a connection: the request leaves somewhat later, by a different amount every
time, and the dispatcher comes back to the limiter at a moment of its own. The limiter's
window log (docs/rate-limit.md) allows for latency that varies by up to the jitter allowance
J; these simulated senders are late by up to J, at random, so grants and sends fall anywhere
inside the log's buckets, not on their edges (senders that send exactly when granted never
reach the last tenth of a second of a bucket, where a log that forgot a bucket too early lets
one chunk too many in).

A fake clock and seeded random draws: the run is the same every time, and long (10 simulated
minutes per case) so that the rare unlucky alignments happen. The limiter's state is in the
state table (moto), shared by every sender, as on AWS."""

from __future__ import annotations

import heapq
import random
from bisect import bisect_right

import pytest

from phonon_outbound.limiter import RateLimiter


class Clock:
    def __init__(self, t: float = 2_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def late_by(rng: random.Random, jitter_s: float) -> float:
    """How late a send leaves after its granted moment: anywhere in [0, J), drawn so that
    nearly on time and nearly J late are both common (the alignments that fill a window
    most: the oldest sends of a minute late, the newest on time)."""
    return jitter_s * 0.999 * rng.choice([rng.uniform(0.0, 0.05), rng.uniform(0.95, 1.0), rng.random()])


def run_late_senders(store, *, per_minute: int, batch: int, jitter_s: float, senders: int, seconds: float,
                     seed: int) -> list[tuple[float, int]]:
    """Senders with a deep backlog share one limiter. Each asks for a chunk (mostly full, now
    and then a short last one), waits as told, sends late after its granted moment, and comes
    back a random while after that. Returns the (send moment, records) list, in time order."""
    rng = random.Random(seed)
    clock = Clock()
    limiters = [RateLimiter.for_records(store, per_minute=per_minute, batch_size=batch, jitter_s=jitter_s,
                                        clock=clock) for _ in range(senders)]
    ready = [(clock.t + rng.uniform(0, 1.0), i) for i in range(senders)]
    heapq.heapify(ready)
    sends: list[tuple[float, int]] = []
    end = clock.t + seconds
    while ready:
        at, i = heapq.heappop(ready)
        if at >= end:
            continue
        clock.t = max(clock.t, at)
        n = batch if rng.random() < 0.8 else rng.randint(1, batch)
        res = limiters[i].reserve(n, max_wait_s=30.0)
        if not res.granted:  # nothing taken: it comes back when told (a little later, maybe)
            heapq.heappush(ready, (clock.t + res.wait_s + rng.uniform(0, 0.3), i))
            continue
        sent = clock.t + res.wait_s + late_by(rng, jitter_s)
        sends.append((sent, n))
        heapq.heappush(ready, (sent + rng.uniform(0.0, 0.4), i))
    sends.sort()
    return sends


def most_in_any_minute(sends: list[tuple[float, int]], window_s: float = 60.0) -> tuple[int, float]:
    """The most records sent in any window of `window_s` seconds, checked at every send
    moment (the window (t - window_s, t] ending there: a fullest window always ends at a
    send), and where that window ends."""
    moments = [t for t, _ in sends]
    totals = [0]
    for _, n in sends:
        totals.append(totals[-1] + n)
    best, at = 0, 0.0
    for j, t in enumerate(moments):
        first = bisect_right(moments, t - window_s)  # sends at or before t - window_s are out
        inside = totals[j + 1] - totals[first]
        if inside > best:
            best, at = inside, t
    return best, at


@pytest.mark.parametrize(("per_minute", "batch", "jitter_s", "senders", "seed"), [
    (6_000, 100, 1.0, 4, 1),
    (30_000, 500, 1.0, 5, 5),
    (1_200, 20, 0.5, 3, 6),
])
def test_given_senders_late_at_random_then_no_60s_window_of_sends_exceeds_the_limit(
        store, per_minute, batch, jitter_s, senders, seed):
    # Given senders with a deep backlog that send up to J late after their granted moments
    sends = run_late_senders(store, per_minute=per_minute, batch=batch, jitter_s=jitter_s, senders=senders,
                             seconds=600.0, seed=seed)
    # (the limit, not the senders, is what paced them: about 10 minutes' worth was sent)
    sent = sum(n for _, n in sends)
    assert 9 * per_minute <= sent <= 10 * per_minute
    # Then no 60 s window of sends holds more records than the limit
    most, at = most_in_any_minute(sends)
    assert most <= per_minute, f"{most} records sent in the 60 s before t={at - sends[0][0]:.2f} s"


def test_the_window_check_itself_sees_an_excess_at_any_send_moment():
    # The check is not vacuous: one record too many, anywhere inside a minute, is found
    assert most_in_any_minute([(0.0, 50), (30.0, 50), (59.95, 1)]) == (101, 59.95)
    assert most_in_any_minute([(10.0, 60), (69.9, 41)]) == (101, 69.9)
    # and a send exactly 60 s after another is in a window of its own
    assert most_in_any_minute([(10.0, 60), (70.0, 41)]) == (60, 10.0)
