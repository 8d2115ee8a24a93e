"""Report requests and the report function (docs/operating.md, "Outcomes in the report and the
report function").

A job's report is written when its last chunk settles and again as flow-end outcomes arrive:

- `ReportRequests.settled(job)` — the job may have settled (ingest, dispatch, the watchdog, a
  cancel): write now. `ReportRequests.outcome(job)` — an outcome arrived (the webhook, the
  reconciler): write again, at most once per `report_debounce_s` per job.
- The debounce is one conditional update of the job's `report_next_at` (`store.jobs.
  claim_report_slot`): the next write is booked at max(now, the last booked write + debounce,
  the first write + debounce). The winner sends one message to the report queue with
  `DelaySeconds` up to that instant; everyone else sees a booking in the future and does
  nothing (that write will read their outcome too). So two outcomes within a minute queue one write.
- The report function (`ReportService.handle`) writes: the first write goes through the
  finalize lease (`store.jobs.claim_finalize`, the `Outbound Job Completed` event once); later
  writes replace the CSV and summary under the same lease (`claim_finalize(rewrite=True)`), so
  two writes of one job never overlap and an older read never lands after a newer one. S3 puts
  are whole-object: a writer dying half-way leaves the previous report, and the next trigger
  writes it again. A write whose lease another writer holds is asked again when the lease is
  released or runs out (a delayed message), never dropped.
- The write is final (`report_final`, the job leaves the `AWAITING#` index) when every ACCEPTED
  row has its outcome, or `report_final_wait_s` after the first write. Something must fire that
  last one when no outcome comes any more: the report function's own schedule (every 5
  minutes, `ReportService.sweep`) asks for a write of every awaiting job whose outcomes are all
  in (the job's `outcomes` counter against its accepted rows) or whose wait is over. It books
  that write like an outcome does (`claim_report_slot`, `SWEEP_BOOKING_S` ahead) and skips a
  job with a booking in the future, so a report function with a backlog is not asked again
  every run; the write gives a booking still in the future back (`report_next_at` = its start)
  before it reads the rows, so an outcome arriving after it books the next write. A "final"
  request for a job whose report is final already is answered without a rewrite. The
  schedule lives on the report function, not the watchdog, so one function owns reports: the
  watchdog only alarms, and asks (`settled`) for the report of a job whose writer died.

With no report queue (`report_queue_url == ""`: unit tests, the fakes) the requests write in-line
with `JobFinisher`; an outcome then writes at once when its booked slot is now, and otherwise
leaves the write to the next outcome or the sweep.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from .observability import count, logger
from .records import MAX_JOB_ID_CHARS, Job
from .store import Store

MAX_DELAY_S = 900  # SQS's longest DelaySeconds; a longer wait is asked for again when it ends
KINDS = ("settled", "outcome", "final")  # a request's `kind` (schemas/report-request.json)
BUSY_RETRY_S = 30  # a write that found another writer at work asks again this soon at the latest
SWEEP_PERIOD_S = 300  # the report function's schedule (template.yaml, FinalWrites)
# The sweep books the write it asks for this far ahead: the next run (one period later, give or
# take the schedule's jitter) still sees it booked and does not ask again.
SWEEP_BOOKING_S = SWEEP_PERIOD_S + 60


class ReportBusy(Exception):
    """Another writer holds the job's finalize lease (it may be writing)."""


class ReportRequests:
    def __init__(self, store: Store, finisher: Callable[[], Any], sqs: Any = None, queue_url: str = "",
                 debounce_s: float = 60.0, clock: Callable[[], float] = time.time):
        self.store = store
        self._finisher = finisher  # a factory: the webhook never imports jobs.py unless it writes in-line
        self.sqs = sqs
        self.queue_url = queue_url
        self.debounce_s = debounce_s
        self.clock = clock

    def send(self, job: str, kind: str, delay_s: float = 0) -> None:
        """One request to the report function, delivered after `delay_s` (at most 900 s)."""
        delay = max(0, min(MAX_DELAY_S, math.ceil(delay_s)))
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps({"job": job, "kind": kind}),
                              DelaySeconds=delay)
        count("ReportsRequested", 1)

    def settled(self, job: str, meta: Job | Mapping[str, Any] | None = None) -> bool:
        """The job may have settled (with its item when the caller has it: then nothing is sent
        for a job whose chunks are not all settled). In-line: whether a report was written."""
        if not self.queue_url:
            return bool(self._finisher().settled(job, meta))
        if meta is not None:
            m = meta if isinstance(meta, Job) else Job.from_item(meta)
            if not m.all_chunks_settled:
                return False
        self.send(job, "settled")
        return False

    def outcome(self, job: str, meta: Job | Mapping[str, Any] | None = None) -> bool:
        """An outcome of the job arrived (`meta`: its item after the `outcomes` count, when the
        caller has it). Books the next write (debounced); True when this call booked it."""
        m = meta if isinstance(meta, Job) else Job.from_item(meta if meta is not None else self.store.jobs.get_job(job))
        if not m.completed:  # not written yet: the first write (when the job settles) includes it
            return False
        now = int(self.clock())
        if m.report_next_at > now:  # a write is booked: it will read this outcome too
            return False
        floor = (m.report_next_at or m.report_written_at) + self.debounce_s
        at = int(max(now, math.ceil(floor)))
        if not self.store.jobs.claim_report_slot(job, m.report_next_at, at):
            return False  # another caller booked it meanwhile
        if self.queue_url:
            try:
                self.send(job, "outcome", at - now)
            except Exception:
                # The outcome is stored; only the request is lost. Give the booking back (unless
                # someone moved it since), or every later outcome would see a write booked that
                # never comes, until the sweep's final write. The caller (the webhook, the
                # reconciler) goes on: failing it would not ask again (a replayed push adds nothing).
                logger.exception("report request not sent: the booking is given back", extra={"job": job})
                count("ReportRequestsFailed", 1)
                self.store.jobs.claim_report_slot(job, at, m.report_next_at)
                return False
        elif at <= now:
            self._finisher().finalize(job, force=True)
        return True


class ReportService:
    """The report function: a request → a report write; the schedule → the final writes owed."""

    def __init__(self, store: Store, finisher: Any, requests: ReportRequests, final_wait_s: float = 3600.0,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.finisher = finisher
        self.requests = requests
        self.final_wait_s = final_wait_s
        self.clock = clock

    def handle(self, body: str) -> str:
        """One queue message `{"job": id, "kind": "settled" | "outcome" | "final"}`. Returns what
        was done; raises nothing for a message that is not such a request (it is dropped and
        logged, without its content: a retry could not mend it, and a job id over DynamoDB's key
        limit would fail every receive until the DLQ)."""
        problem = _request_problem(body)
        if problem:
            logger.warning("report request dropped: not a report request", extra={"problem": problem})
            return "dropped"
        doc = json.loads(body)
        job, kind = doc["job"], doc["kind"]
        try:
            if kind == "final" and Job.from_item(self.store.jobs.get_job(job)).report_final:
                return "already final"  # an earlier request wrote it (a backlog); a later outcome asks its own
            return self.write(job, final=kind == "final")
        except ReportBusy:
            # A live writer releases the lease when it is done (seconds); a dead one's lease runs
            # out. Ask again after whichever comes first, looking every BUSY_RETRY_S.
            meta = Job.from_item(self.store.jobs.get_job(job))
            wait = min(BUSY_RETRY_S, max(1.0, meta.finalizing - self.clock() + 1))
            if self.requests.queue_url:
                self.requests.send(job, kind, wait)
            logger.info("report writer busy: asked again", extra={"job": job, "wait_s": int(wait)})
            return "busy"

    def write(self, job: str, final: bool = False) -> str:
        item = self.store.jobs.get_job(job)
        if item is None:
            return "unknown"
        meta = Job.from_item(item)
        if not meta.completed:
            if not meta.all_chunks_settled:
                return "not settled"
            if self.finisher.maybe_finalize(job, meta):
                return "written"
            again = Job.from_item(self.store.jobs.get_job(job))
            if not again.completed and again.finalizing > self.clock():
                raise ReportBusy(job)
            return "not written"
        now = int(self.clock())
        if meta.report_next_at > now:
            # A write booked for later (the sweep's): this one is it. Give the booking back first,
            # at this write's start, so an outcome arriving after the rows are read books the
            # next write instead of taking it for this one (ReportRequests.outcome).
            self.store.jobs.claim_report_slot(job, meta.report_next_at, now)
        if not self.finisher.finalize(job, force=True, final=final):
            raise ReportBusy(job)  # another write of this job is under way: asked again after it
        return "rewritten"

    def sweep(self) -> list[str]:
        """The schedule: every awaiting job whose outcomes are all in, or whose final wait is
        over, gets a (final) write requested, booked (`claim_report_slot`) `SWEEP_BOOKING_S`
        ahead; a job with a write booked in the future is left to it. Returns the ids asked for."""
        asked = []
        now = self.clock()
        for job in self.store.jobs.awaiting_outcomes():
            meta = Job.from_item(self.store.jobs.get_job(job))
            if not meta.completed or meta.report_final:
                self.store.jobs.note_awaiting(job, False)
                continue
            overdue = now - meta.report_written_at >= self.final_wait_s
            if not meta.all_outcomes_in and not overdue:
                continue
            if not self.requests.queue_url:  # in-line: written now, nothing is left waiting
                try:
                    self.write(job, final=overdue)
                    asked.append(job)
                except Exception:  # one job must not stop the others; the next run asks again
                    logger.exception("could not write a job's final report", extra={"job": job})
                continue
            if meta.report_next_at > now:  # a write is booked (an outcome's, or this sweep's last run)
                continue
            at = int(now) + SWEEP_BOOKING_S
            if not self.store.jobs.claim_report_slot(job, meta.report_next_at, at):
                continue  # someone booked it meanwhile
            try:
                # "final" only when the wait is over. With every outcome in by the job's counter,
                # the write decides from the rows (the counter can run ahead of them: a push
                # that came before its chunk settled), so a row still without its outcome keeps
                # the job awaiting, and reconciled, until then.
                self.requests.send(job, "final" if overdue else "outcome")
                asked.append(job)
            except Exception:  # one job must not stop the others; the next run asks again
                logger.exception("could not request a job's final report", extra={"job": job})
                self.store.jobs.claim_report_slot(job, at, meta.report_next_at)  # unless moved since
        return asked


def _request_problem(body: str) -> str:
    """What makes `body` no report request ("" when it is one): the schema's rules
    (schemas/report-request.json), said without quoting the values."""
    try:
        doc = json.loads(body)
    except ValueError:
        return "not JSON"
    if not isinstance(doc, dict):
        return "not a JSON object"
    job = doc.get("job")
    if not isinstance(job, str) or not 0 < len(job) <= MAX_JOB_ID_CHARS:
        return f"'job' is not a string of 1 to {MAX_JOB_ID_CHARS} characters"
    if doc.get("kind") not in KINDS:
        return f"'kind' is not one of {', '.join(KINDS)}"
    return ""


__all__ = ["KINDS", "ReportBusy", "ReportRequests", "ReportService"]
