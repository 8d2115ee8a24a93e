"""The global rate limiter and the per-flow circuit breaker, shared by every dispatcher.

Both live in the state table and change only through conditional writes on a version number,
so any number of Lambda instances (or local workers) share one view.

Why our own limiter instead of a library: powertools has none, and the limit must hold across
processes. The algorithm is GCRA (the "virtual scheduling" form of a token bucket) with
*reservations*: a caller atomically moves the theoretical arrival time (TAT) forward by its
cost and learns the moment it may send. It then sleeps until that moment, or, when that is
further away than it can wait, takes nothing and hands its message back for later.

Arithmetic (docs/rate-limit.md has the long form). With bucket capacity B (records) and
refill rate r (records/s) no 60 s window can hold more than B + 60·r sends. Phonon counts on
arrival, and arrival = send + latency, so latency jitter J (seconds) can squeeze up to r·J more
into a window. We therefore refill at
    r = (limit_per_minute - B - limit_per_minute·J/60) / 60
which for 30,000/min, B = 500 (one chunk) and J = 0.5 s is 29,250/min: 0.975 of the limit
sustained, and never a window above it. B = max(one chunk, one second's worth).

Back-pressure: a rate refusal from the API (429) halves the shared rate factor and pushes the
TAT forward, so every instance slows at once; the factor recovers linearly over a minute.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from .store import Store

RECOVERY_S = 60.0
MIN_FACTOR = 0.125


@dataclass(frozen=True)
class Reservation:
    granted: bool
    wait_s: float  # granted: sleep this long, then send; not granted: try again after this long


class RateLimiter:
    def __init__(self, store: Store, name: str, per_minute: int, burst: float,
                 jitter_allowance_s: float = 0.5, clock: Callable[[], float] = time.time):
        self.store = store
        self.pk = f"LIMIT#{name}"
        self.per_minute = per_minute
        self.burst = float(burst)
        margin = self.burst + per_minute * jitter_allowance_s / 60.0
        # Never below half the limit: a tiny limit with a big chunk cannot keep the window
        # guarantee at all, and the README says to lower --batch-size then.
        self.rate = max(per_minute * 0.5, per_minute - margin) / 60.0
        self.clock = clock

    @classmethod
    def for_records(cls, store: Store, per_minute: int, batch_size: int, jitter_s: float,
                    clock: Callable[[], float] = time.time) -> RateLimiter:
        return cls(store, "records", per_minute, max(batch_size, per_minute / 60.0), jitter_s, clock)

    @classmethod
    def for_requests(cls, store: Store, per_minute: int,
                     clock: Callable[[], float] = time.time) -> RateLimiter:
        return cls(store, "requests", per_minute, max(1.0, per_minute / 60.0), 0.0, clock)

    def _factor(self, item: dict, now: float) -> float:
        factor = float(item.get("factor", 1.0))
        since = now - float(item.get("factor_at", now))
        return min(1.0, factor + (1.0 - factor) * max(0.0, since) / RECOVERY_S) if factor < 1 else 1.0

    def reserve(self, n: int, max_wait_s: float) -> Reservation:
        """Reserve n units. Granted: the caller sleeps `wait_s` then sends. Not granted: nothing
        was taken; the caller should come back after `wait_s`."""
        n = min(float(n), self.burst)
        for _ in range(50):
            now = self.clock()
            item = self.store.get_item(self.pk)
            tat = float(item["tat"]) if item else now
            factor = self._factor(item or {}, now)
            rate = self.rate * factor
            tau = (self.burst - n) / rate
            start = max(now, tat - tau)
            wait = start - now
            if wait > max_wait_s:
                return Reservation(False, wait - max_wait_s / 2 if max_wait_s else wait)
            new_tat = max(tat, start) + n / rate
            attrs = {"tat": new_tat, "ver": (item or {}).get("ver", 0) + 1, "factor": factor, "factor_at": now}
            expect = {"ver": item["ver"]} if item else None
            if self.store.put_if(self.pk, attrs, expect):
                return Reservation(True, wait)
            time.sleep(random.uniform(0.001, 0.02))
        return Reservation(False, 1.0)

    def penalize(self, pause_s: float = 2.0) -> None:
        """The API refused for rate: every instance slows down (shared), then recovers."""
        for _ in range(20):
            now = self.clock()
            item = self.store.get_item(self.pk)
            tat = float(item["tat"]) if item else now
            factor = max(MIN_FACTOR, self._factor(item or {}, now) * 0.5)
            attrs = {"tat": max(tat, now) + pause_s, "ver": (item or {}).get("ver", 0) + 1,
                     "factor": factor, "factor_at": now}
            if self.store.put_if(self.pk, attrs, {"ver": item["ver"]} if item else None):
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
    refusal reopens it for twice as long (up to 15 minutes)."""

    MAX_OPEN_S = 900.0

    def __init__(self, store: Store, flow: str, open_s: float = 60.0, clock: Callable[[], float] = time.time):
        self.store = store
        self.pk = f"BREAKER#{flow}"
        self.open_s = open_s
        self.clock = clock

    def check(self) -> BreakerState:
        item = self.store.get_item(self.pk)
        if not item or not item.get("open"):
            return BreakerState(True)
        now = self.clock()
        if now < float(item["open_until"]):
            return BreakerState(False, wait_s=float(item["open_until"]) - now, reason=item.get("reason", ""))
        if now < float(item.get("probe_until", 0)):
            return BreakerState(False, wait_s=float(item["probe_until"]) - now, reason=item.get("reason", ""))
        attrs = {**item, "probe_until": now + 60.0, "ver": item["ver"] + 1}
        attrs.pop("pk", None)
        attrs.pop("sk", None)
        if self.store.put_if(self.pk, attrs, {"ver": item["ver"]}):
            return BreakerState(True, probe=True, reason=item.get("reason", ""))
        return BreakerState(False, wait_s=5.0, reason=item.get("reason", ""))

    def trip(self, reason: str, code: int | None) -> None:
        for _ in range(20):
            now = self.clock()
            item = self.store.get_item(self.pk)
            last = float(item.get("open_for", 0)) if item and item.get("open") else 0.0
            open_for = min(self.MAX_OPEN_S, last * 2 if last else self.open_s)
            attrs = {"open": True, "open_until": now + open_for, "open_for": open_for, "reason": reason,
                     "code": code if code is not None else -1, "opened_at": now, "probe_until": 0.0,
                     "ver": (item or {}).get("ver", 0) + 1}
            if self.store.put_if(self.pk, attrs, {"ver": item["ver"]} if item else None):
                return

    def close(self) -> None:
        for _ in range(20):
            item = self.store.get_item(self.pk)
            if not item or not item.get("open"):
                return
            attrs = {"open": False, "ver": item["ver"] + 1, "closed_at": self.clock()}
            if self.store.put_if(self.pk, attrs, {"ver": item["ver"]}):
                return

    def state(self) -> dict | None:
        return self.store.get_item(self.pk)
