"""The stale-job watchdog: jobs that have not moved for `stale_job_minutes`.

Every way a chunk can fail ends with its rows' outcomes (dispatch.py), but the last resort —
a dispatcher that cannot even write those outcomes (DynamoDB down for every retry, a bug) —
leaves a job that never completes and a file without a report. Nothing in the pipeline would
notice, so a scheduled function looks: every job item carries `active_shard = "A"` until it
completes and `updated_at` (epoch seconds) on every write, indexed by the state table's GSI
`active-jobs` (hash `active_shard`, range `updated_at`), so one Query finds the jobs whose
last write is older than the threshold, however many jobs there are.

A stale job whose every chunk has settled only lacks its report: its writer died (the report
claim is a lease, `store.jobs.claim_finalize`) and nothing else would come back to it. The watchdog
writes that report itself once the lease has run out, so no file is left without one.

It emits the metric `StaleJobs` (namespace PhononOutbound, the count, 0 included so the alarm
always has data) and `ActiveJobs` (every job not completed, for the dashboard) and logs the stale jobs' ids and ages — ids only: a job's file name may
itself name a person.
"""

from __future__ import annotations

import time
from typing import Any

from .observability import count, logger
from .records import Job
from .store import Store
from .store.common import ACTIVE_INDEX

MAX_LOGGED_JOBS = 100


def stale_jobs(store: Store, stale_s: float, now: float | None = None) -> list[dict[str, Any]]:
    """Active jobs whose `updated_at` is more than `stale_s` seconds ago, oldest first
    (`store.jobs.stale_jobs`, the `active-jobs` index): [{"job": id, "updated_at": epoch s,
    "idle_s": seconds}]."""
    now = time.time() if now is None else now
    return [{"job": job, "updated_at": updated, "idle_s": int(now - updated)}
            for job, updated in store.jobs.stale_jobs(int(now - stale_s))]


def active_jobs(store: Store, now: float | None = None) -> list[str]:
    """Every job not completed (the `active-jobs` index, keys only: one Query), newest write
    last; `status` lists these."""
    now = time.time() if now is None else now
    return [job for job, _ in store.jobs.stale_jobs(int(now) + 1)]


def active_count(store: Store, now: float | None = None) -> int:
    """Jobs not completed (`active_jobs`): the metric `ActiveJobs`, emitted on every run (0
    included) for the dashboard."""
    return len(active_jobs(store, now))


def recover_reports(store: Store, finisher: Any, jobs: list[dict[str, Any]]) -> list[str]:
    """Write the report of every stale job that is only missing it (ingest done, every chunk
    settled, not completed); the report claim's lease decides who writes. Returns their ids."""
    written = []
    for j in jobs:
        item = store.jobs.get_job(j["job"])
        meta = Job.from_item(item)
        if not item or meta.completed or not meta.ingest_done:
            continue
        try:
            if finisher.settled(j["job"], meta):
                written.append(j["job"])
        except Exception:  # one job's failure must not stop the others; the next run retries
            logger.exception("could not write a stale job's report", extra={"job": j["job"]})
    return written


def _paused(store: Store, job: str) -> bool:
    """Whether the job or its flow is paused (`store.jobs.control`)."""
    meta = Job.from_item(store.jobs.get_job(job))
    return bool(store.jobs.control(job, meta.flow)[1])


def check(store: Store, stale_minutes: float, now: float | None = None, finisher: Any = None) -> dict[str, Any]:
    """Find the stale jobs, write the reports only they lack (with a finisher), emit
    `StaleJobs` for the rest, log their ids; returns {"stale_jobs": n, "jobs": [ids],
    "reports_written": [ids]}."""
    jobs = stale_jobs(store, stale_minutes * 60, now)
    recovered = recover_reports(store, finisher, jobs) if finisher is not None else []
    if recovered:
        logger.warning("reports written for stale jobs", extra={"jobs": recovered})
        jobs = [j for j in jobs if j["job"] not in set(recovered)]
    # A job an operator paused (or whose flow is paused) is still by choice: no alarm for it
    # (docs/operating.md, "Pause, resume, cancel"); it is stale again once resumed and idle.
    paused = [j["job"] for j in jobs if _paused(store, j["job"])]
    if paused:
        logger.info("paused jobs are not counted as stale", extra={"jobs": paused[:MAX_LOGGED_JOBS]})
        jobs = [j for j in jobs if j["job"] not in set(paused)]
    count("StaleJobs", len(jobs))
    count("ActiveJobs", active_count(store, now))
    if jobs:
        logger.warning("jobs have not moved", extra={
            "stale_jobs": len(jobs), "stale_after_minutes": stale_minutes,
            "jobs": [{"job": j["job"], "idle_s": j["idle_s"]} for j in jobs[:MAX_LOGGED_JOBS]]})
    else:
        logger.info("no stale jobs", extra={"stale_after_minutes": stale_minutes})
    return {"stale_jobs": len(jobs), "jobs": [j["job"] for j in jobs], "reports_written": recovered}


__all__ = ["ACTIVE_INDEX", "active_count", "active_jobs", "check", "recover_reports", "stale_jobs"]
