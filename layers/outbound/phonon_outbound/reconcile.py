"""Missed flow-end webhooks: the reconciler (docs/operating.md, "Missed webhooks: the reconciler").

Phonon pushes a flow-end webhook after every call; a push that never reaches us (our endpoint
down, a network fault, Phonon's own retries given up) would leave the row's outcome missing for
good. A scheduled function (every 5 minutes, on only when the account-specific Pull API URL is
set) asks Phonon's Pull API v2 for the calls still without an outcome and feeds each record it
gets back through the webhook's own path (`WebhookService.handle(…, source="pull")`), so a
pulled outcome is validated, matched and stored exactly as a pushed one.

What it asks, per run:

- the jobs whose report is written but not final (`store.jobs.awaiting_outcomes()`);
- in each, the ACCEPTED rows without an outcome (`outcome_at`) whose chunk settled more than
  `reconcile_after_s` ago (the chunk outcome item's `at`; a push normally arrives within
  minutes, so a row younger than that is not missing yet);
- by phonon-uuid when the row has one (the 200 answer shape), else by the request-id of the
  request that carried it (the bulk endpoint's 202 shape gives no uuid; Phonon's FAQ says the
  pull works "by phonon-uuid or request-id"). A request-id brings back every call of its
  request, so request-ids are grouped by how many calls they stand for, not only by count;
- in requests of at most `reconcile_batch` (≤ 200) ids, one flow (and so one security-id)
  per request.

Answers: `200` with records → each record whose uuid or correlation ref we asked for is
handled (records for rows that have their outcome already are skipped; a record asked for by
uuid that carries no `keys` is matched to the row asked about, see `_take`); an answer larger
than the client's cap (api.client.PULL_MAX_ANSWER_BYTES) is not read on (counted as an error); `213 No Data
Available` → "not yet", the rows stay pending for the next run; HTTP 429 / 5xx / no answer →
back off (Retry-After, else doubling) and try again while the invocation has time, else the
next run; an account- or flow-level refusal (401/403, "Invalid Security ID", 211, 212, 301,
304) → nothing more for that flow in this run, logged as an error. The work per invocation is
bounded by the time the invocation has left. Security-ids and phone numbers are never logged;
the metrics are ReconcileRequests, ReconcilePulled, ReconcileNoData, ReconcileErrors.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .api.client import ApiAnswer
from .dispatch import safe_reason
from .flows import FlowSecrets, UnknownFlow
from .observability import count, logger
from .records import Job, row_ref
from .settings import Settings
from .status import Status
from .store import Store
from .webhook import WebhookError, WebhookService, parse_push

UUIDS = "phonon-uuids"
REQUEST_IDS = "request-ids"
# Where an answer's records may be: Phonon does not publish the pull API's answer, so the first
# list found under one of these names is read (the simulator answers with "data").
RECORD_KEYS = ("data", "records", "call-details", "callDetails", "results")
MAX_TRIES = 3  # one pull request, when Phonon answers 429 / 5xx / nothing
BACKOFF_S = 2.0
ACCOUNT_CODES = {401, 211, 212, 301, 304}  # the account or flow is refused: stop asking for the flow


@dataclass
class Ask:
    """One id to ask for, and the pending rows (`<job>.<row>` refs) it stands for."""

    kind: str  # UUIDS | REQUEST_IDS
    id: str
    refs: set[str] = field(default_factory=set)
    weight: int = 1  # calls it may bring back (a request-id: every call of its request)


def records_of(payload: Any) -> list[dict]:
    """The records in a pull answer's JSON (see RECORD_KEYS)."""
    if not isinstance(payload, dict):
        return []
    for key in RECORD_KEYS:
        value = payload.get(key)
        if isinstance(value, list):
            return [r for r in value if isinstance(r, dict)]
        if isinstance(value, dict):
            return [value]
    return []


def verdict(answer: ApiAnswer) -> str:
    """ok | no_data | retry | refused | failed."""
    status, code = answer.http_status, answer.code
    if status is None or status == 429 or status >= 500 or code in (500, 206):
        return "retry"
    if code == 213:
        return "no_data"
    if code == 200:
        return "ok"
    if status in (401, 403) or code in ACCOUNT_CODES or (
            code == 202 and "security" in (answer.message or "").lower()):
        return "refused"
    return "failed"


class Reconciler:
    def __init__(self, settings: Settings, store: Store, client_factory: Callable[[], Any], secrets: FlowSecrets,
                 webhook: WebhookService, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.store = store
        self.client_factory = client_factory
        self.secrets = secrets
        self.webhook = webhook
        self.sleep = sleep
        self.clock = clock
        self.margin_s = settings.api_connect_timeout_s + settings.api_read_timeout_s + 5.0

    # ------------------------------------------------------------------ one run
    def run(self, now: float | None = None, remaining_s: Callable[[], float] | None = None,
            jobs: Iterable[str] | None = None) -> dict[str, Any]:
        """Ask for the missing outcomes of `jobs` (default: every job awaiting outcomes) and
        store what comes back. Returns what was done (counts, no ids)."""
        self._stats: Counter[str] = Counter()
        self._remaining = remaining_s
        self._stopped: set[str] = set()  # flows refused (or out of time) in this run
        if not self.settings.pull_api_url:
            return {"off": True}
        now = self.clock() if now is None else now
        if jobs is None:
            jobs = self.store.jobs.awaiting_outcomes()
        self._client = self.client_factory()
        try:
            self._run(jobs, now)
        finally:
            close = getattr(self._client, "close", None)
            if close is not None:
                close()
        summary = {k: self._stats[k] for k in ("jobs", "asked", "requests", "pulled", "no_data", "known",
                                               "errors", "not_due")}
        if self._stats["out_of_time"]:
            summary["out_of_time"] = True
        logger.info("reconciler run", extra=summary)
        return summary

    def _run(self, jobs: Iterable[str], now: float) -> None:
        batch = self.settings.reconcile_batch
        pending: dict[tuple[str, str], list[Ask]] = {}
        for job, item in self._in_turn(jobs):
            if self._out_of_time():
                return
            self._stats["jobs"] += 1
            try:
                for flow, ask in self._due(job, item, now):
                    if flow in self._stopped:
                        continue
                    asks = pending.setdefault((flow, ask.kind), [])
                    if asks and (len(asks) >= batch or sum(a.weight for a in asks) + ask.weight > batch):
                        if self._out_of_time():  # a big job's backlog: the next run goes on
                            return
                        self._pull(flow, ask.kind, asks)
                        asks.clear()
                    asks.append(ask)
            finally:
                self._served(job, now)
        for (flow, kind), asks in pending.items():
            if asks and flow not in self._stopped and not self._out_of_time():
                self._pull(flow, kind, asks)

    def _in_turn(self, jobs: Iterable[str]) -> list[tuple[str, dict]]:
        """The jobs (with their items; unknown ones dropped), least recently reconciled first.
        A run is bounded by the invocation's time, so a fixed order (the index's) would serve
        the same first jobs every run and starve the later ones; each job served gets
        `reconciled_at` (`_served`, also when its turn was cut short by time), which puts it
        behind the others next run. Ties (never reconciled: 0) keep the given order."""
        items = [(job, item) for job in jobs if (item := self.store.jobs.get_job(job))]
        return sorted(items, key=lambda pair: int(pair[1].get("reconciled_at") or 0))

    def _served(self, job: str, now: float) -> None:
        try:
            self.store.jobs.update_job(job, reconciled_at=int(now))
        except Exception:  # the rotation is best effort: the run's pulls matter more
            logger.warning("reconciler: could not note the job's turn", extra={"job": job}, exc_info=True)

    def _out_of_time(self) -> bool:
        if self._remaining is not None and self._remaining() < self.margin_s:
            self._stats["out_of_time"] = 1
            return True
        return False

    # ------------------------------------------------------------------ what is due
    def _due(self, job: str, item: dict, now: float) -> Iterator[tuple[str, Ask]]:
        """(flow, Ask) for the job's accepted rows still without an outcome, settled more
        than `reconcile_after_s` before `now`. Stops (asking nothing more for the job) when
        the invocation runs out of time while reading the rows: the next run reads them again."""
        meta = Job.from_item(item)
        # Not skipped on the job's `outcomes` counter (Job.all_outcomes_in): it can over-count (a
        # push that came before its chunk settled is counted as ACCEPTED; the row may then settle
        # FAILED), and a job skipped on it would keep rows without an outcome for good. The rows
        # are read instead. The cost stays bounded: only jobs awaiting outcomes (report written,
        # not final) are read, one paged query of their outcome items each, cut short by the
        # invocation's time (checked per row) and served least recently reconciled first.
        if not meta.flow:
            return
        cutoff = now - self.settings.reconcile_after_s
        by_request: dict[str, Ask] = {}
        chunk: tuple[int, int, float | None] = (0, -1, None)  # first row, last row, settled at
        for row in self.store.rows.iter_outcomes(job):
            if self._out_of_time():  # a big job: the rest of its rows wait for the next run
                return
            if row.get("status") != Status.ACCEPTED:
                continue
            n = int(row["row"])
            request_id = str(row.get("request_id") or "")
            ask = None
            if request_id:
                ask = by_request.setdefault(request_id, Ask(REQUEST_IDS, request_id, weight=0))
                ask.weight += 1
            if row.get("outcome_at"):
                continue
            at = row.get("at")
            if at is None:
                if not chunk[0] <= n <= chunk[1]:
                    found = self.store.rows.find_outcome(job, n)
                    chunk = ((int(str(found["sk"])[len("OUT#"):]), int(found["last_row"]), found.get("at"))
                             if found else (n, n, None))
                at = chunk[2]
            if at is None or float(at) > cutoff:
                self._stats["not_due"] += 1
                continue
            uuid = str(row.get("phonon_uuid") or "")
            if uuid:
                yield meta.flow, Ask(UUIDS, uuid, {row_ref(job, n)})
            elif ask is not None:
                ask.refs.add(row_ref(job, n))
        for ask in by_request.values():
            if ask.refs:
                yield meta.flow, ask

    # ------------------------------------------------------------------ one pull request
    def _pull(self, flow: str, kind: str, asks: list[Ask]) -> None:
        try:
            security_id = self.secrets.security_id(flow)
        except UnknownFlow as err:
            logger.warning("reconciler: no security-id for the flow", extra={"flow": flow, "reason": err.reason})
            self._stopped.add(flow)
            return
        ids = [a.id for a in asks]
        body = json.dumps({"security-id": security_id, "flow-id": flow, kind: ids, "fetch-attempt": "ALL"},
                          separators=(",", ":")).encode("utf-8")
        self._stats["asked"] += len(ids)
        wait = BACKOFF_S
        for attempt in range(MAX_TRIES):
            answer = self._client.post(body)
            self._stats["requests"] += 1
            count("ReconcileRequests", 1)
            what = verdict(answer)
            if what != "retry":
                break
            wait = answer.retry_after_s if answer.retry_after_s is not None else wait
            left = self._remaining() if self._remaining is not None else float("inf")
            if attempt + 1 == MAX_TRIES or left - wait < self.margin_s:
                break
            self.sleep(wait)
            wait *= 2
        if what == "ok":
            self._take(records_of(answer.payload), asks)
        elif what == "no_data":
            self._stats["no_data"] += 1
            count("ReconcileNoData", 1)
        else:
            self._stats["errors"] += 1
            count("ReconcileErrors", 1)
            extra = {"flow": flow, "http_status": answer.http_status, "code": answer.code,
                     "answer": safe_reason(answer.message) if answer.message else answer.message,
                     "error": safe_reason(answer.error) if answer.error else answer.error}
            if what == "refused":
                self._stopped.add(flow)
                logger.error("reconciler: the pull API refused the flow; nothing more is asked for it in this run",
                             extra=extra)
            elif what == "retry":
                self._stopped.add(flow)  # Phonon is busy or down: the next run asks again
                logger.warning("reconciler: the pull API did not answer; the next run asks again", extra=extra)
            elif answer.code is None:  # no documented answer (not JSON, too large, …): the reason, never the body
                logger.warning("reconciler: the pull API's answer was not usable", extra=extra)
            else:
                logger.warning("reconciler: the pull API refused a request", extra=extra)

    def _take(self, records: list[dict], asks: list[Ask]) -> None:
        """Hand each record we asked for to the webhook's path (as a push with source "pull").

        A record asked for by its phonon-uuid is handed over with the row's ref
        (`expected_ref`): the pull API's record format is not published, and a record without
        `keys` could not be matched to its row otherwise (the webhook refuses one whose own ref
        names another row). A request-id stands for many calls, so a record pulled by one gets
        no expected ref: one without a ref of its own cannot be told apart from its request's
        other calls, and is counted as an error, not guessed."""
        by_uuid = {a.id: next(iter(a.refs)) for a in asks if a.kind == UUIDS and len(a.refs) == 1}
        uuids = {a.id for a in asks if a.kind == UUIDS}
        refs = set().union(*(a.refs for a in asks if a.kind == REQUEST_IDS))
        pulled = 0
        for record in records:
            raw = json.dumps(record, ensure_ascii=False)
            try:
                push = parse_push(raw)
                own_ref = self.webhook.correlation_ref(push)
                if push.phonon_uuid not in uuids and (own_ref is None or own_ref not in refs):
                    if own_ref is None and refs:
                        raise WebhookError(400, "a record pulled by request-id has no correlation ref")
                    self._stats["known"] += 1  # a call of the request whose outcome we have already
                    continue
                self.webhook.handle(raw, source="pull", expected_ref=by_uuid.get(push.phonon_uuid))
            except WebhookError as err:
                self._stats["errors"] += 1
                count("ReconcileErrors", 1)
                logger.warning("reconciler: a pulled record was not stored",
                               extra={"status": err.status, "reason": err.message})
                continue
            pulled += 1
        self._stats["pulled"] += pulled
        if pulled:
            count("ReconcilePulled", pulled)


__all__ = ["Ask", "Reconciler", "records_of", "verdict"]
