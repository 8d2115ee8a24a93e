"""The global rate limiter and the per-flow circuit breaker, shared by every dispatcher.

Both live in the state table and change only through conditional writes on a version number,
so any number of Lambda instances (or local workers) share one view.

Why our own limiter instead of a library: powertools has none, and the limit must hold across
processes. It is two rules checked in one conditional write, with *reservations*: a caller
asks for n records and learns the moment it may send; it then sleeps until that moment, or,
when that is further away than it can wait, takes nothing and hands its message back.

1. Pace and burst: GCRA (the "virtual scheduling" form of a token bucket) at the limit's own
   rate L/60 per second with a capacity B = max(one chunk, one second's worth): sends are
   spread evenly and never burst by more than B.
2. The window itself: a log of the granted sends (their send moments, in 0.1 s buckets) for
   the last W = 60 s + J, and a send is granted only at a moment when the log's sends in the
   W seconds before it, plus this one, are at most L. Phonon counts sends when they arrive,
   and arrival = send + latency; latency that varies by up to J seconds maps any 60 s window
   of arrivals onto at most W seconds of sends, so no 60 s window at Phonon can hold more
   than L. Grant moments never go backwards, so the check at each grant covers every window
   that ends after it.

A token bucket alone has to refill at (L − B − L·J/60)/60 to keep that promise after an idle
spell (a full bucket plus a minute of refill), which costs 2.5 % of the limit for good at
30,000/min; the window rule keeps the promise exactly, so the pace can be the limit itself
and the sustained rate is L·60/(W + 0.1) (0.982 of the limit with J = 1 s). docs/rate-limit.md
has the long form.

Back-pressure: a rate refusal from the API (429) halves the shared pace factor and pushes the
TAT forward, so every instance slows at once; the factor recovers linearly over a minute.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from .observability import count_by
from .store import Store
from .store.common import BREAKER, LIMIT

RECOVERY_S = 60.0
MIN_FACTOR = 0.125
WINDOW_S = 60.0
BUCKET_S = 0.1  # the log's resolution: a send counts as late as the end of its bucket


@dataclass(frozen=True)
class Reservation:
    granted: bool
    wait_s: float  # granted: sleep this long, then send; not granted: try again after this long


def _parse_log(text: str) -> list[tuple[int, int]]:
    """The window log, "bucket:n,bucket:n" (bucket = floor(send moment / BUCKET_S)), oldest first."""
    out = []
    for part in text.split(",") if text else ():
        k, _, n = part.partition(":")
        out.append((int(k), int(n)))
    return out


def _format_log(log: list[tuple[int, int]]) -> str:
    return ",".join(f"{k}:{n}" for k, n in log)


class RateLimiter:
    def __init__(self, store: Store, name: str, per_minute: int, burst: float,
                 jitter_allowance_s: float = 1.0, clock: Callable[[], float] = time.time,
                 keep_s: float | None = None):
        self.store = store
        self.items = store.limits
        self.pk = LIMIT + name
        self.per_minute = per_minute
        self.burst = float(burst)
        self.rate = per_minute / 60.0
        self.window_s = WINDOW_S + max(0.0, jitter_allowance_s)
        self.clock = clock
        # Set: each write gives the item an `expires_at` this long after its last reservation is
        # due (the state table's TTL removes it then). The global limiter's item stays; a cap's
        # (one per capped job or flow, `for_cap`) is of no use once its job has gone quiet.
        self.keep_s = keep_s

    @classmethod
    def for_records(cls, store: Store, per_minute: int, batch_size: int, jitter_s: float,
                    clock: Callable[[], float] = time.time) -> RateLimiter:
        return cls(store, "records", per_minute, max(batch_size, per_minute / 60.0), jitter_s, clock)

    @classmethod
    def for_requests(cls, store: Store, per_minute: int, jitter_s: float = 1.0,
                     clock: Callable[[], float] = time.time) -> RateLimiter:
        return cls(store, "requests", per_minute, max(1.0, per_minute / 60.0), jitter_s, clock)

    @classmethod
    def for_cap(cls, store: Store, scope: str, target: str, per_minute: int, jitter_s: float = 1.0,
                clock: Callable[[], float] = time.time) -> RateLimiter:
        """An operator's cap on one job (`scope` "job") or one flow ("flow"), in calls per minute
        (control.py, action `limit`): its own item, `LIMIT#cap-<scope>#<target>#<per_minute>`,
        so a new cap starts afresh instead of inheriting the old one's schedule (a slot booked
        minutes ahead at 10/min is not waited for at 1,000/min). Burst: one second's worth, so
        the calls are spread evenly; a chunk bigger than that is one burst of its own, and the
        next waits until the cap's pace has paid for it (n / rate), so a cap below one chunk a
        minute is still kept on average. Kept a day after its last reservation (TTL)."""
        return cls(store, f"cap-{scope}#{target}#{per_minute}", per_minute, max(1.0, per_minute / 60.0), jitter_s,
                   clock, keep_s=86_400.0)

    def _factor(self, item: dict, now: float) -> float:
        factor = float(item.get("factor", 1.0))
        since = now - float(item.get("factor_at", now))
        return min(1.0, factor + (1.0 - factor) * max(0.0, since) / RECOVERY_S) if factor < 1 else 1.0

    def _window_slot(self, log: list[tuple[int, int]], t: float, n: float) -> float:
        """The first moment >= t at which the sends logged in the window before it, plus n,
        are at most the limit. A bucket k counts until (k + 1)·BUCKET_S + W."""
        live = [(k, c) for k, c in log if (k + 1) * BUCKET_S + self.window_s > t]
        total = sum(c for _, c in live)
        for k, c in live:  # oldest first: each one leaves the window in turn
            if total + n <= self.per_minute or (n > self.per_minute and total == 0):
                return t
            total -= c
            t = max(t, (k + 1) * BUCKET_S + self.window_s)
        return t

    def _slot(self, item: dict, now: float, n: float) -> tuple[float, float, list[tuple[int, int]], float, float]:
        """(start, tat, log, factor, rate): the first moment n units may be sent, as the item
        stands at `now`, with what the item says."""
        tat = float(item.get("tat", now))
        last = float(item.get("last", 0.0))
        log = _parse_log(str(item.get("log", "")))
        factor = self._factor(item, now)
        rate = self.rate * factor
        tau = max(0.0, self.burst - n) / rate
        return self._window_slot(log, max(now, tat - tau, last), n), tat, log, factor, rate

    def next_slot(self, n: float) -> float:
        """Seconds from now until n units could be granted (0: at once), taking nothing: one
        read, no write (dispatch looks before it takes a chunk's lease)."""
        now = self.clock()
        return max(0.0, self._slot(self.items.get(self.pk) or {}, now, float(n))[0] - now)

    def reserve(self, n: float, max_wait_s: float) -> Reservation:
        """Reserve n units. Granted: the caller sleeps `wait_s` then sends. Not granted: nothing
        was taken; the caller should come back after `wait_s`."""
        # The true cost is logged, even above the burst: one chunk may be a burst of its own.
        # A chunk bigger than the whole limit (queued before the rate was lowered below one
        # chunk a minute) is sent alone in an otherwise empty window: the one case where a
        # window can exceed the limit. Ingest sizes new chunks below both (fit_batch_size).
        n = float(n)
        for _ in range(50):
            now = self.clock()
            item = self.items.get(self.pk) or {}
            start, tat, log, factor, rate = self._slot(item, now, n)
            wait = start - now
            if wait > max_wait_s:
                return Reservation(False, wait - max_wait_s / 2 if max_wait_s else wait)
            bucket = math.floor(start / BUCKET_S)
            keep = [(k, c) for k, c in log if (k + 1) * BUCKET_S + self.window_s > now]
            if keep and keep[-1][0] == bucket:
                keep[-1] = (bucket, keep[-1][1] + int(math.ceil(n)))
            else:
                keep.append((bucket, int(math.ceil(n))))
            attrs = {"tat": max(tat, start) + n / rate, "last": start, "log": _format_log(keep),
                     "ver": item.get("ver", 0) + 1, "factor": factor, "factor_at": now}
            if self.keep_s is not None:
                attrs["expires_at"] = int(attrs["tat"] + self.window_s + self.keep_s)
            if self.items.put_if_version(self.pk, attrs, item["ver"] if item else None):
                return Reservation(True, wait)
            time.sleep(random.uniform(0.001, 0.02))
        return Reservation(False, 1.0)

    def penalize(self, pause_s: float = 2.0) -> None:
        """The API refused for rate: every instance slows down (shared), then recovers."""
        for _ in range(20):
            now = self.clock()
            item = self.items.get(self.pk) or {}
            tat = float(item.get("tat", now))
            factor = max(MIN_FACTOR, self._factor(item, now) * 0.5)
            attrs = {**{k: v for k, v in item.items() if k not in ("pk", "sk")},
                     "tat": max(tat, now) + pause_s, "ver": item.get("ver", 0) + 1, "factor": factor,
                     "factor_at": now}
            if self.items.put_if_version(self.pk, attrs, item["ver"] if item else None):
                return
            time.sleep(random.uniform(0.001, 0.02))


@dataclass(frozen=True)
class BreakerState:
    allow: bool
    probe: bool = False
    wait_s: float = 0.0
    reason: str = ""


class CircuitBreaker:
    """Per flow. Open after an account-level refusal: nobody sends, messages are kept. When the
    open period ends one dispatcher wins the probe; its success closes the breaker, another
    refusal reopens it for twice as long (up to 15 minutes).

    The metric `CircuitOpen` (dimension `flow`; the dashboard's "circuit state per flow") is 1
    when the breaker opens and whenever a dispatcher finds it open, 0 when it closes: written
    only then, so a healthy flow costs nothing per chunk. Each flow that ever opened is one
    custom metric ($0.30 a month at CloudWatch's first price tier)."""

    MAX_OPEN_S = 900.0

    def __init__(self, store: Store, flow: str, open_s: float = 60.0, clock: Callable[[], float] = time.time):
        self.store = store
        self.items = store.limits
        self.pk = BREAKER + flow
        self.open_s = open_s
        self.clock = clock

    def check(self) -> BreakerState:
        item = self.items.get(self.pk)
        if not item or not item.get("open"):
            return BreakerState(True)
        now = self.clock()
        self._emit(1)
        if now < float(item["open_until"]):
            return BreakerState(False, wait_s=float(item["open_until"]) - now, reason=item.get("reason", ""))
        if now < float(item.get("probe_until", 0)):
            return BreakerState(False, wait_s=float(item["probe_until"]) - now, reason=item.get("reason", ""))
        attrs = {**item, "probe_until": now + 60.0, "ver": item["ver"] + 1}
        attrs.pop("pk", None)
        attrs.pop("sk", None)
        if self.items.put_if_version(self.pk, attrs, item["ver"]):
            return BreakerState(True, probe=True, reason=item.get("reason", ""))
        return BreakerState(False, wait_s=5.0, reason=item.get("reason", ""))

    def trip(self, reason: str, code: int | None) -> None:
        for _ in range(20):
            now = self.clock()
            item = self.items.get(self.pk)
            last = float(item.get("open_for", 0)) if item and item.get("open") else 0.0
            open_for = min(self.MAX_OPEN_S, last * 2 if last else self.open_s)
            attrs = {"open": True, "open_until": now + open_for, "open_for": open_for, "reason": reason,
                     "code": code if code is not None else -1, "opened_at": now, "probe_until": 0.0,
                     "ver": (item or {}).get("ver", 0) + 1}
            if self.items.put_if_version(self.pk, attrs, item["ver"] if item else None):
                self._emit(1)
                return

    def close(self) -> None:
        for _ in range(20):
            item = self.items.get(self.pk)
            if not item or not item.get("open"):
                return
            attrs = {"open": False, "ver": item["ver"] + 1, "closed_at": self.clock()}
            if self.items.put_if_version(self.pk, attrs, item["ver"]):
                self._emit(0)
                return

    def _emit(self, open_: int) -> None:
        count_by("CircuitOpen", open_, {"flow": self.pk[len(BREAKER):]})

    def state(self) -> dict | None:
        return self.items.get(self.pk)
