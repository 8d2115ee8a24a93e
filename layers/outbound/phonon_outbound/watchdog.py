"""The stale-job watchdog: jobs that have not moved for `stale_job_minutes`.

Every way a chunk can fail ends with its rows' outcomes (dispatch.py), but the last resort —
a dispatcher that cannot even write those outcomes (DynamoDB down for every retry, a bug) —
leaves a job that never completes and a file without a report. Nothing in the pipeline would
notice, so a scheduled function looks: every job item carries `active_shard = "A"` until it
completes and `updated_at` (epoch seconds) on every write, indexed by the state table's GSI
`active-jobs` (hash `active_shard`, range `updated_at`), so one Query finds the jobs whose
last write is older than the threshold, however many jobs there are.

A stale job whose every chunk has settled only lacks its report: its writer died (the report
claim is a lease, `store.jobs.claim_finalize`) and nothing else would come back to it. Once the
lease has run out the watchdog asks the report function for it (`reporting.ReportRequests.
settled`: a "settled" request on the report queue) and writes nothing itself: a report of a
million rows takes minutes, longer than this 60 s function may run, and a watchdog killed
half-way would leave the lease taken and the report unwritten again. A job whose report was
requested is not counted stale on that run; if the report function cannot write it, its own
dead-letter queue's alarm says so.

It emits the metric `StaleJobs` (namespace PhononOutbound, the count, 0 included so the alarm
always has data) and `ActiveJobs` (every job not completed, for the dashboard) and logs the stale jobs' ids and ages — ids only: a job's file name may
itself name a person.
"""

from __future__ import annotations

import time
from typing import Any

from .observability import count, logger
from .records import Job
from .settings import DEFAULT_BATCH_SIZE
from .store import Store
from .store.common import ACTIVE_INDEX, Control, FlowControl

MAX_LOGGED_JOBS = 100


def stale_jobs(store: Store, stale_s: float, now: float | None = None,
               active: list[tuple[str, int]] | None = None) -> list[dict[str, Any]]:
    """Active jobs whose `updated_at` is more than `stale_s` seconds ago, oldest first
    (`store.jobs.stale_jobs`, the `active-jobs` index): [{"job": id, "updated_at": epoch s,
    "idle_s": seconds}]. `active`: every active job's (id, updated_at), when the caller has
    read them already (`check`: the same Query gives `ActiveJobs`)."""
    now = time.time() if now is None else now
    cutoff = int(now - stale_s)
    pairs = store.jobs.stale_jobs(cutoff) if active is None else (p for p in active if p[1] < cutoff)
    return [{"job": job, "updated_at": updated, "idle_s": int(now - updated)} for job, updated in pairs]


def active_jobs(store: Store, now: float | None = None) -> list[str]:
    """Every job not completed (the `active-jobs` index, keys only: one Query), newest write
    last; `status` lists these."""
    now = time.time() if now is None else now
    return [job for job, _ in store.jobs.stale_jobs(int(now) + 1)]


def recover_reports(reports: Any, metas: dict[str, Job], now: float) -> list[str]:
    """Ask the report function (`reports`: `reporting.ReportRequests`) for the report of every
    stale job (`metas`: their items, read once by `check`) that only lacks it (every chunk
    settled, ingest done with them, not completed) and whose finalize lease is free (a writer
    holding it is at work, or its lease has not run out yet). Returns the ids of the jobs whose
    report was requested."""
    requested = []
    for job, meta in metas.items():
        if meta.completed or not meta.all_chunks_settled or meta.finalizing > now:
            continue
        try:
            reports.settled(job, meta)
            requested.append(job)
        except Exception:  # one job's failure must not stop the others; the next run asks again
            logger.exception("could not request a stale job's report", extra={"job": job})
    return requested


def _paused(meta: Job, flow: FlowControl) -> bool:
    """Whether the job or its flow is paused, as `store.jobs.control` says, from the job's item
    and its flow's control item already read (a cancelled job's flow pause does not hold it)."""
    return bool(meta.paused_reason) or (not meta.cancelled_reason and bool(flow.paused))


def cap_allowance_s(meta: Job, flow_cap: int | None) -> float:
    """How long one chunk of a capped job may take at its cap (its own or its flow's, the
    smaller: `Control.cap`; control.py, `limit`): a job an operator slowed down is still by
    choice that long between chunks. 0 for a job without a cap."""
    cap = Control(job_cap=meta.rate_cap, flow_cap=None if meta.cancelled_reason else flow_cap).cap
    if cap is None:
        return 0.0
    chunk = -(-meta.rows_queued // meta.next_chunk) if meta.next_chunk else DEFAULT_BATCH_SIZE  # its mean chunk
    return 60.0 * chunk / cap


def check(store: Store, stale_minutes: float, now: float | None = None, reports: Any = None) -> dict[str, Any]:
    """Find the stale jobs, ask the report function (with `reports`) for the reports only they
    lack, emit `StaleJobs` for the rest, log their ids; returns {"stale_jobs": n, "jobs": [ids],
    "reports_requested": [ids]}."""
    now = time.time() if now is None else now
    active = list(store.jobs.stale_jobs(int(now) + 1))  # every job not completed: one Query of the index
    jobs = stale_jobs(store, stale_minutes * 60, now, active)
    metas = {j["job"]: Job.from_item(store.jobs.get_job(j["job"])) for j in jobs}  # each stale job's item, once
    requested = recover_reports(reports, metas, now) if reports is not None else []
    if requested:
        logger.warning("reports requested for stale jobs", extra={"jobs": requested[:MAX_LOGGED_JOBS]})
        jobs = [j for j in jobs if j["job"] not in set(requested)]
    # A job an operator paused (or whose flow is paused) is still by choice: no alarm for it
    # (docs/operating.md, "Pause, resume, cancel"); it is stale again once resumed and idle.
    # each stale job's flow control item (its pause and cap), once; none for a cancelled job
    flows = {j["job"]: store.jobs.flow_control(metas[j["job"]].flow) if not metas[j["job"]].cancelled_reason
             else FlowControl() for j in jobs}
    paused = [j["job"] for j in jobs if _paused(metas[j["job"]], flows[j["job"]])]
    if paused:
        logger.info("paused jobs are not counted as stale", extra={"jobs": paused[:MAX_LOGGED_JOBS]})
        jobs = [j for j in jobs if j["job"] not in set(paused)]
    # A capped job sends a chunk per chunk / cap minutes: not stale until that long past the threshold.
    capped = [j["job"] for j in jobs
              if j["idle_s"] <= stale_minutes * 60 + cap_allowance_s(metas[j["job"]], flows[j["job"]].cap)]
    if capped:
        logger.info("capped jobs are not counted as stale yet", extra={"jobs": capped[:MAX_LOGGED_JOBS]})
        jobs = [j for j in jobs if j["job"] not in set(capped)]
    count("StaleJobs", len(jobs))
    count("ActiveJobs", len(active))
    if jobs:
        logger.warning("jobs have not moved", extra={
            "stale_jobs": len(jobs), "stale_after_minutes": stale_minutes,
            "jobs": [{"job": j["job"], "idle_s": j["idle_s"]} for j in jobs[:MAX_LOGGED_JOBS]]})
    else:
        logger.info("no stale jobs", extra={"stale_after_minutes": stale_minutes})
    return {"stale_jobs": len(jobs), "jobs": [j["job"] for j in jobs], "reports_requested": requested}


__all__ = ["ACTIVE_INDEX", "active_jobs", "cap_allowance_s", "check", "recover_reports", "stale_jobs"]
