"""The global limiter and the circuit breaker, against DynamoDB (moto) with a fake clock."""

from __future__ import annotations

import pytest

from phonon_outbound.limiter import CircuitBreaker, RateLimiter


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def simulate(limiter: RateLimiter, clock: Clock, n: int, seconds: float) -> list[tuple[float, int]]:
    """A greedy sender: reserve, sleep the granted wait (advance the clock), send; repeat."""
    sends = []
    end = clock.t + seconds
    while clock.t < end:
        res = limiter.reserve(n, max_wait_s=10)
        assert res.granted
        clock.t += res.wait_s
        sends.append((clock.t, n))
    return sends


def max_window(sends: list[tuple[float, int]], window: float = 60.0) -> int:
    best, j, total = 0, 0, 0
    for i, (t, n) in enumerate(sends):
        total += n
        while sends[j][0] <= t - window:
            total -= sends[j][1]
            j += 1
        best = max(best, total)
        _ = i
    return best


def test_given_a_deep_backlog_when_sending_greedily_then_no_60s_window_exceeds_the_limit(store):
    clock = Clock()
    limiter = RateLimiter.for_records(store, per_minute=30_000, batch_size=500, jitter_s=0.5, clock=clock)
    sends = simulate(limiter, clock, 500, 300)
    assert max_window(sends) <= 30_000
    # and the sustained rate after the first minute is at least 97% of the limit
    late = [s for s in sends if s[0] >= sends[0][0] + 60]
    rate = sum(n for _, n in late) / (late[-1][0] - late[0][0]) * 60
    assert rate >= 0.97 * 30_000


def test_given_the_jitter_allowance_then_a_window_shifted_by_latency_still_fits(store):
    clock = Clock()
    limiter = RateLimiter.for_records(store, per_minute=6_000, batch_size=100, jitter_s=1.0, clock=clock)
    sends = simulate(limiter, clock, 100, 240)
    # Arrival = send + latency in [0, 1 s]: the worst case squeezes every send 1 s earlier except the last ones.
    shifted = sorted((t + (1.0 if i % 2 else 0.0), n) for i, (t, n) in enumerate(sends))
    assert max_window(shifted) <= 6_000


def test_given_a_wait_longer_than_allowed_then_nothing_is_reserved(store):
    clock = Clock()
    limiter = RateLimiter.for_records(store, per_minute=600, batch_size=10, jitter_s=0, clock=clock)
    first = limiter.reserve(10, max_wait_s=0)
    assert first.granted and first.wait_s == 0
    denied = limiter.reserve(10, max_wait_s=0)
    assert not denied.granted and denied.wait_s > 0
    # the denied call took nothing: after waiting as told, a reservation is granted at once
    clock.t += denied.wait_s
    again = limiter.reserve(10, max_wait_s=0)
    assert again.granted


def test_given_two_instances_then_they_share_one_budget(store):
    clock = Clock()
    a = RateLimiter.for_records(store, per_minute=6_000, batch_size=100, jitter_s=0, clock=clock)
    b = RateLimiter.for_records(store, per_minute=6_000, batch_size=100, jitter_s=0, clock=clock)
    sends = []
    end = clock.t + 120
    turn = 0
    while clock.t < end:
        lim = (a, b)[turn % 2]
        turn += 1
        res = lim.reserve(100, max_wait_s=10)
        clock.t += res.wait_s
        sends.append((clock.t, 100))
    assert max_window(sends) <= 6_000


def test_given_a_rate_refusal_then_every_instance_slows_down_and_recovers(store):
    clock = Clock()
    limiter = RateLimiter.for_records(store, per_minute=6_000, batch_size=100, jitter_s=0, clock=clock)
    simulate(limiter, clock, 100, 10)
    before = limiter.reserve(100, max_wait_s=100).wait_s
    clock.t += before
    other = RateLimiter.for_records(store, per_minute=6_000, batch_size=100, jitter_s=0, clock=clock)
    other.penalize(pause_s=2.0)
    after = limiter.reserve(100, max_wait_s=100).wait_s
    assert after >= 2.0
    clock.t += 120  # the shared factor recovers within a minute
    item = store.limits.get("LIMIT#records")
    assert limiter._factor(item, clock.t) == pytest.approx(1.0)


def test_given_an_account_refusal_then_the_breaker_opens_for_everyone_and_one_probe_closes_it(store):
    clock = Clock()
    a = CircuitBreaker(store, "Flow0001", open_s=60, clock=clock)
    b = CircuitBreaker(store, "Flow0001", open_s=60, clock=clock)
    assert a.check().allow
    a.trip("Phonon answered 401 IP Not Whitelisted", 401)
    state = b.check()
    assert not state.allow and state.wait_s == pytest.approx(60)
    assert "401" in state.reason
    assert CircuitBreaker(store, "Flow0009", clock=clock).check().allow  # another flow did not trip
    clock.t += 61
    first, second = a.check(), b.check()
    assert first.allow and first.probe
    assert not second.allow  # only one probe at a time
    a.close()
    assert b.check().allow


def test_given_a_failed_probe_then_the_breaker_reopens_for_longer(store):
    clock = Clock()
    br = CircuitBreaker(store, "Flow0002", open_s=60, clock=clock)
    br.trip("401", 401)
    clock.t += 61
    assert br.check().probe
    br.trip("401 again", 401)
    assert br.check().wait_s == pytest.approx(120)


def test_other_flows_are_not_affected_by_an_open_breaker(store):
    clock = Clock()
    CircuitBreaker(store, "Flow0003", clock=clock).trip("expired", 211)
    assert CircuitBreaker(store, "Flow0004", clock=clock).check().allow
    # and the flow that was refused did trip (the check above is not vacuous)
    tripped = CircuitBreaker(store, "Flow0003", clock=clock).check()
    assert not tripped.allow and tripped.reason == "expired"


def test_given_latency_that_varies_by_the_allowance_then_no_window_of_arrivals_exceeds_the_limit(store):
    # Given 30,000/min, 500-call chunks and arrivals 0.3-1.3 s after the send (spread = J = 1 s)
    import random as _random

    rng = _random.Random(5)
    clock = Clock()
    limiter = RateLimiter.for_records(store, per_minute=30_000, batch_size=500, jitter_s=1.0, clock=clock)
    sends = simulate(limiter, clock, 500, 400)
    arrivals = sorted((t + rng.uniform(0.3, 1.3), n) for t, n in sends)
    # Then no 60 s window of arrivals holds more than the limit, whatever the draw
    assert max_window(arrivals) <= 30_000
    # and the worst case for the window (oldest sends late, newest early) fits too
    worst = sorted((t + (1.3 if t < sends[len(sends) // 2][0] else 0.3), n) for t, n in sends)
    assert max_window(worst) <= 30_000
    # and once the backlog is deep the pace is 60 / 61.1 of the limit, not the token bucket's 0.975
    late = [s for s in sends if s[0] >= sends[0][0] + 60]
    rate = sum(n for _, n in late[:-1]) / (late[-1][0] - late[0][0]) * 60
    assert rate == pytest.approx(30_000 * 60 / 61.1, rel=0.005)


def test_given_a_full_bucket_then_the_burst_is_at_most_one_chunk_or_one_second(store):
    clock = Clock()
    limiter = RateLimiter.for_records(store, per_minute=6_000, batch_size=20, jitter_s=1.0, clock=clock)
    sends = simulate(limiter, clock, 20, 30)
    # B = max(20, 100) records at once, then the limit's pace: 100/s
    assert max_window(sends, window=0.001) <= 100
    assert max_window(sends, window=1.0) <= 100 + 100


def test_the_window_log_stays_small_whatever_the_chunk_size(store):
    clock = Clock()
    # one-call chunks at 600/min: a send every 0.1 s, each in a bucket of its own
    limiter = RateLimiter.for_records(store, per_minute=600, batch_size=1, jitter_s=1.0, clock=clock)
    sends = simulate(limiter, clock, 1, 75)
    log = store.limits.get("LIMIT#records")["log"].split(",")
    assert 400 <= len(log) <= (60 + 1.0) / 0.1 + 2  # the window's buckets, older ones pruned
    assert max_window(sends) <= 600


@pytest.mark.parametrize(("rate", "asked", "used"), [
    (30_000, None, 500), (6_000, None, 100), (600, None, 10), (30, None, 1),
    (60_000, 1_000, 1_000), (30_000, 1_000, 500), (30_000, 50, 50),
])
def test_a_chunk_is_never_more_than_one_seconds_worth_of_the_limit(rate, asked, used):
    from phonon_outbound.settings import Settings, fit_batch_size

    assert fit_batch_size(rate, asked) == used
    settings = Settings(records_per_minute=rate, **({"batch_size": asked} if asked else {}))
    assert settings.batch_size == used  # what ingest chunks by and the limiter's burst is built on


def test_a_chunk_bigger_than_the_burst_is_counted_in_full(store):
    # Given 500-call chunks queued before the rate was lowered to 6,000/min (burst 100)
    clock = Clock()
    limiter = RateLimiter.for_records(store, per_minute=6_000, batch_size=100, jitter_s=1.0, clock=clock)
    sends = simulate(limiter, clock, 500, 150)
    # Then every window still holds at most the limit, at the limit's pace
    assert max_window(sends) <= 6_000
    assert len(sends) >= 20


def test_a_chunk_bigger_than_the_whole_limit_goes_alone_in_its_window(store):
    clock = Clock()
    limiter = RateLimiter.for_records(store, per_minute=300, batch_size=5, jitter_s=1.0, clock=clock)
    first = limiter.reserve(500, max_wait_s=600)
    assert first.granted
    clock.t += first.wait_s
    second = limiter.reserve(500, max_wait_s=600)
    assert second.granted and second.wait_s >= 61.0  # not before the first one left the window


def test_given_senders_that_come_back_late_at_random_then_no_window_exceeds_the_limit(store):
    # Given four dispatchers sharing 6,000/min in 100-call chunks (J = 1 s), each of which comes
    # back to the limiter at a random moment (busy recording its last answer, waking late), so
    # the moments granted fall anywhere inside the log's 0.1 s buckets, not on their edges
    import heapq
    import random as _random

    rng = _random.Random(23)
    clock = Clock()
    jitter = 1.0
    limiters = [RateLimiter.for_records(store, per_minute=6_000, batch_size=100, jitter_s=jitter, clock=clock)
                for _ in range(4)]
    ready = [(clock.t + rng.uniform(0, 0.5), i) for i in range(len(limiters))]
    heapq.heapify(ready)
    grants: list[tuple[float, int]] = []
    arrivals: list[tuple[float, int]] = []
    end = clock.t + 300
    while ready and clock.t < end:
        at, i = heapq.heappop(ready)
        clock.t = max(clock.t, at)
        res = limiters[i].reserve(100, max_wait_s=30)
        assert res.granted
        granted = clock.t + res.wait_s
        grants.append((granted, 100))
        # it sends late at random (within the jitter allowance), and is back a random while later
        sent = granted + rng.uniform(0, jitter)
        arrivals.append((sent, 100))
        heapq.heappush(ready, (sent + rng.uniform(0.0, 0.35), i))
    grants.sort()
    arrivals.sort()
    assert len(grants) > 250  # a deep backlog: the window rule is what holds the pace
    # Then no W = 60 + J seconds of granted moments, and no 60 s of sends, hold more than the limit
    assert max_window(grants, window=60.0 + jitter) <= 6_000
    assert max_window(arrivals, window=60.0) <= 6_000
