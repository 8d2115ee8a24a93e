"""Finishing a job: the results report and summary in S3, the `Outbound Job Completed` event and
the task token's answer (both built and sent by events_out.py; docs/events-out.md).

The report streams every row's outcome in row order (`store.rows.iter_outcomes`: the settled
chunks' outcome items merged with the row items, both read a page at a time) into a spooled
temporary file, so memory stays flat whatever the file's size. Every data row has an outcome by
the time the job is settled; a row without one (which would be a bug, or an aborted local run)
is written as FAILED with a reason that says so instead of silently missing from the report.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from . import events_out
from .observability import count, logger
from .records import Job, JobStatus
from .reports import PENDING, STATUSES, ReportWriter, outcome_cells, placed_anyway, summary_dict
from .status import Status
from .store import Store

WEBHOOK_ONLY_REASON = ("accepted: known from Phonon's flow-end webhook; the API's answer to the request was "
                       "not recorded")


def upload_stamp(when: datetime) -> str:
    """`20261130T161057.123Z`: the UTC upload time in a report's name (sorts by time)."""
    when = when.astimezone(UTC)
    return when.strftime("%Y%m%dT%H%M%S.") + f"{when.microsecond // 1000:03d}Z"


def report_keys(key: str, stamp: str | None = None) -> tuple[str, str]:
    """Where a report goes: `reports/<input key>.<upload stamp>.results.csv` / `.summary.json`,
    so every upload (object version) of one key has its own report. Without a stamp: the
    name reports had before per-upload names (jobs created before them have no stamp)."""
    base = f"reports/{key}.{stamp}" if stamp else f"reports/{key}"
    return f"{base}.results.csv", f"{base}.summary.json"


def job_report_keys(meta: Job | Mapping[str, Any], job: str = "") -> tuple[str, str]:
    """The report keys fixed on the job item at its creation (`report_csv_key`,
    `report_summary_key`); the old unstamped names for a job that has none."""
    meta = meta if isinstance(meta, Job) else Job.from_item(meta)
    if meta.report_csv_key and meta.report_summary_key:
        return meta.report_csv_key, meta.report_summary_key
    return report_keys(meta.key or job)


class ReportTrigger(Protocol):
    """What ingest and dispatch call when a job may have settled: `JobFinisher` (writes in-line)
    or `reporting.ReportRequests` (asks the report function on AWS)."""

    def settled(self, job: str, meta: Job | Mapping[str, Any] | None = None) -> bool: ...


class JobFinisher:
    def __init__(self, store: Store, s3: Any, bucket: str, events: events_out.EventsOut | None = None,
                 final_wait_s: float = 3600.0, clock: Any = time.time):
        self.store = store
        self.s3 = s3
        self.bucket = bucket
        self.events = events  # None: no events, no task-token answers (unit tests)
        self.final_wait_s = final_wait_s  # the report is final this long after its first write at the latest
        self.clock = clock

    def settled(self, job: str, meta: Job | Mapping[str, Any] | None = None) -> bool:
        """The job may have settled: write its first report once every chunk has (the finalize
        lease decides who), or write it again when it was written already (a redriven chunk)."""
        meta = meta if isinstance(meta, Job) else Job.from_item(meta if meta is not None else self.store.jobs.get_job(job))
        if meta.completed:
            return self.finalize(job, force=True)
        return self.maybe_finalize(job, meta)

    def maybe_finalize(self, job: str, meta: Job | Mapping[str, Any]) -> bool:
        """Write the report if every chunk of the job has settled (`meta`: its item, or the Job)."""
        if (meta if isinstance(meta, Job) else Job.from_item(meta)).all_chunks_settled:
            return self.finalize(job)
        return False

    def finalize(self, job: str, force: bool = False, missing_reason: str | None = None,
                 final: bool = False) -> bool:
        """Write the report once (the caller that wins `claim_finalize`), or again with force
        (e.g. after flow-end webhooks brought phonon-uuids and outcomes). The write is the
        final one (`report_final`) when no ACCEPTED row waits for its outcome any more, when
        `final_wait_s` has passed since the first write, or with `final`.

        Every write holds the job's finalize lease, so writes of one job never overlap: without
        it a slow writer that read the rows before a final write could upload its older CSV
        after it and mark the report not final again. False when another writer holds the lease
        (the report function asks again when it runs out: reporting.ReportBusy)."""
        if not self.store.jobs.claim_finalize(job, rewrite=force):
            return False
        try:
            return self._write(job, force, missing_reason, final)
        finally:
            self.store.jobs.release_finalize(job)  # done, or failed: a redelivery or the next trigger writes

    def _write(self, job: str, force: bool, missing_reason: str | None, final: bool = False) -> bool:
        meta = Job.from_item(self.store.jobs.get_job(job))
        total = meta.total_rows
        counts = dict.fromkeys(STATUSES, 0)
        missing = 0
        pending = 0  # ACCEPTED rows whose flow-end outcome has not arrived
        csv_key, summary_key = job_report_keys(meta, job)
        cancelled = meta.cancelled_reason
        # Rows without an outcome: an aborted run's rows, the rows a failed ingest never read
        # (`missing_reason` on the job), or the rows a cancelled job never sent (CANCELLED).
        fill_status = Status.CANCELLED if cancelled and not missing_reason else Status.FAILED
        fill_reason = (missing_reason or meta.missing_reason
                       or (f"not sent: {cancelled}" if cancelled else None)
                       or "no outcome was recorded for this row (internal error; please report it)")
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, mode="w+b") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            writer = ReportWriter(text)
            expected = 1
            filled: list[dict] = []

            def fill_to(row: int) -> None:
                nonlocal expected, missing
                while expected < row:
                    filled.append({"row": expected, "status": fill_status, "reason": fill_reason})
                    writer.write(expected, "", fill_status, "", "", fill_reason)
                    counts[fill_status] += 1
                    missing += 1
                    expected += 1

            last = total if meta.ingest_done and not meta.rejected else None
            for item in self.store.rows.iter_outcomes(job):
                row = int(item["row"])
                if row < expected or (last is not None and row > last):
                    continue
                fill_to(row)
                status = item.get("status")
                if status is None:  # only a webhook's phonon-uuid: Phonon ran the call, our answer was lost
                    status = Status.ACCEPTED if item.get("phonon_uuid") else Status.FAILED
                    item["reason"] = (WEBHOOK_ONLY_REASON if item.get("phonon_uuid") else fill_reason)
                counts[status] = counts.get(status, 0) + 1
                cells = outcome_cells(status, item)
                pending += cells == (PENDING,)
                writer.write(row, item.get("cid", ""), status, item.get("phonon_uuid", ""),
                             item.get("request_id", ""), placed_anyway(status, item, item.get("reason", "")), cells)
                expected = row + 1
            if not meta.rejected:
                fill_to(total + 1)
            text.flush()
            text.detach()  # keep `raw` open for the upload
            raw.seek(0)
            self.s3.upload_fileobj(raw, self.bucket, csv_key, ExtraArgs={"ContentType": "text/csv; charset=utf-8"})
        if filled and missing_reason:
            self.store.rows.put_rows(job, filled)
        if missing and not (missing_reason or meta.missing_reason or cancelled):
            logger.error("rows without outcome", extra={"job": job, "missing": missing})
        now = time.time()
        first_at = meta.report_written_at or int(self.clock())
        final = final or not pending or self.clock() - first_at >= self.final_wait_s
        summary = summary_dict(
            file=meta.key, flow=meta.flow, counts={**counts, "rows": total}, api_requests=meta.api_requests,
            timings={"elapsed_s": now - float(meta.created_at or now)},
            notes=list(meta.notes), report=f"s3://{self.bucket}/{csv_key}", error=meta.error or None,
            bucket=meta.bucket, job=job, started_at=meta.created_at, finished_at=round(now, 3),
            version=meta.version, uploaded_at=meta.uploaded_at,
            outcomes={"arrived": counts[Status.ACCEPTED] - pending, "pending": pending, "final": final},
            **({"cancelled_reason": cancelled} if cancelled else {}),
            **({"failure": meta.failure} if meta.failure else {}),
            **({"calling_window": dict(meta.window_wait)} if meta.window_wait else {}))
        self.s3.put_object(Bucket=self.bucket, Key=summary_key, Body=json.dumps(summary, indent=2).encode(),
                           ContentType="application/json")
        status_now = (JobStatus.REJECTED if meta.error else JobStatus.FAILED if meta.failure
                      else JobStatus.CANCELLED if cancelled else JobStatus.COMPLETED)
        self.store.jobs.update_job(job, status=status_now.value, completed=True, report_written_at=first_at,
                                   report_final=final,
                                   counts={k.lower(): v for k, v in counts.items()})
        if not force:
            count("FilesCompleted", 1)
            try:
                detail = events_out.job_completed(
                    meta, job=job, status=status_now, counts={s: summary[s.lower()] for s in STATUSES},
                    rows=summary["rows"], bucket=self.bucket, csv_key=csv_key, summary_key=summary_key,
                    completed_at=now)
            except Exception:  # never into the settle path: the report is written
                logger.exception("could not build the job-completed event", extra={"job": job})
            else:
                self._publish(detail, meta.task_token)
        # After the event: a failure here must not cost the job its one `Job Completed`.
        self.store.jobs.note_awaiting(job, not final)  # the report function's sweep (reporting.py)
        logger.info("report written", extra={"job": job, "report": csv_key, "pending_outcomes": pending, "final": final,
                                             **{k.lower(): v for k, v in counts.items()}})
        return True

    def _publish(self, detail: dict, task_token: str = "") -> None:
        """`Outbound Job Completed`, then the task token's answer; never raises (the report is
        written: a lost notification must not undo that)."""
        if self.events is not None:
            self.events.job_completed(detail, task_token)
