"""Control of a running campaign: pause, resume or cancel one job, or pause / resume one flow
(docs/operating.md, "Pause, resume, cancel").

`ControlService.apply(action, target)` is the one entry of the three ways in: the
`phonon-outbound pause|resume|cancel` command (devkit, against a stack or the local run), the
EventBridge event `Outbound Control` and a file dropped under `cancel/` (both through the
ingest function, ingest_events.py). A target names a job by its id, by its file's key (the key's
newest job; with a version, that upload's job) or a flow by its id.

What each action writes, and who obeys it:
- pause: the job item's `paused_reason` (a flow: its `FLOWCTL#<flow>` item, store/jobs.py).
  Dispatch reads `store.jobs.control(job, flow)` when a chunk starts and again right before
  every request; a paused chunk is handed back with a delay of `pause_poll_s` (a copy re-queued:
  no receive is spent, it never drifts towards the DLQ) and comes back to look again.
- resume: removes it; the next look sends.
- cancel: `store.jobs.cancel_job` (`cancelled_reason`), then a report request for the job: the
  chunks still queued settle CANCELLED as dispatch meets them (even while paused: a cancel wins
  over a pause), and whoever settles the last one writes the report; when every chunk has
  settled already (ingest done), the request writes it now.

The answer says what happened: {"action", "job" | "flow", "state", "already"} — `already` true
when nothing changed (paused twice, resumed a running job, cancelled a cancelled or finished
job). An unknown job, key or version is `UnknownTarget`; a malformed request `ControlError`.
Reasons are an operator's free text: they go into the job item and the report (CANCELLED rows),
never into a log line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .observability import count, logger
from .records import MAX_JOB_ID_CHARS, Job
from .store import Store

ACTIONS = ("pause", "resume", "cancel")
MAX_REASON_CHARS = 300
MAX_KEY_CHARS = 1024  # S3's longest object key
INCOMING = "incoming/"
_LONG_DIGITS = re.compile(r"\d{7,}")


class ControlError(ValueError):
    """A control request that cannot be carried out as given (bad action, no target, …)."""


class UnknownTarget(LookupError):
    """The job, key or version named is not known (never ingested, or past its retention)."""


@dataclass(frozen=True)
class ControlTarget:
    job: str = ""
    key: str = ""
    version: str = ""
    flow: str = ""

    @staticmethod
    def of(doc: dict[str, Any]) -> ControlTarget:
        """From a control event's detail (or the CLI's options): exactly one of job, key, flow."""
        def text(name: str) -> str:
            value = doc.get(name)
            if value is None:
                return ""
            if not isinstance(value, str):
                raise ControlError(f"'{name}' must be text")
            return value.strip()

        target = ControlTarget(text("job"), text("key"), text("version"), text("flow"))
        # An over-long name cannot be a key of ours (DynamoDB would refuse it with an error the
        # caller cannot read): refused here, with the rule, never the value.
        for name, limit in (("job", MAX_JOB_ID_CHARS), ("key", MAX_KEY_CHARS), ("version", MAX_KEY_CHARS),
                            ("flow", MAX_JOB_ID_CHARS)):
            if len(getattr(target, name)) > limit:
                raise ControlError(f"'{name}' is longer than {limit} characters")
        named = [n for n in ("job", "key", "flow") if getattr(target, n)]
        if len(named) != 1:
            raise ControlError("name exactly one of job, key (with an optional version) or flow")
        if target.version and not target.key:
            raise ControlError("a version goes with a key")
        return target

    def describe(self) -> str:
        if self.job:
            return f"job {self.job}"
        if self.flow:
            return f"flow {self.flow}"
        return f"key {self.key}" + (f" version {self.version}" if self.version else "")


def clean_reason(text: Any, default: str) -> str:
    """An operator's reason fit for the job item and the report: one line, bounded, any run of
    7+ digits (a phone number) masked to its last 3 digits."""
    text = " ".join(str(text or "").split())
    text = _LONG_DIGITS.sub(lambda m: "•" * (len(m.group()) - 3) + m.group()[-3:], text)
    text = text[:MAX_REASON_CHARS]
    return text or default


def finisher_settled(store: Store, finisher: Any) -> Callable[[str], None]:
    """The report request of today's code path (the one a deleted input file takes,
    IngestService.cancel_key): write the report when every chunk of the job has settled.
    TODO(issue 12, report): replace by `wiring.reports().settled` once the report function
    lands (docs/contract.md's report requests); it takes the same job id."""
    def settled(job: str) -> None:
        meta = Job.from_item(store.jobs.get_job(job))
        if meta.ingest_done:  # every chunk queued: settling them finishes the job
            finisher.settled(job, meta)  # JobFinisher in-line, or reporting.ReportRequests (the report queue)
    return settled


class ControlService:
    def __init__(self, store: Store, bucket: str, settled: Callable[[str], None]):
        self.store = store
        self.bucket = bucket
        self.settled = settled  # a report request for a job that may now be settled

    def apply(self, action: str, target: ControlTarget | dict[str, Any], reason: str = "") -> dict[str, Any]:
        action = str(action or "").strip().lower()
        if action not in ACTIONS:
            raise ControlError(f"unknown action {action!r}: pause, resume or cancel")
        target = target if isinstance(target, ControlTarget) else ControlTarget.of(target)
        if target.flow:
            return self._flow(action, target.flow, reason)
        job, meta = self.resolve(target)
        out: dict[str, Any] = {"action": action, "job": job}
        if target.key:
            out.update(key=meta.key or target.key, version=meta.version)
        out.update(getattr(self, f"_{action}")(job, meta, reason))
        logger.info("job control", extra={"job": job, "action": action, "state": out["state"],
                                          "already": out["already"]})
        return out

    # ------------------------------------------------------------------ targets
    def resolve(self, target: ControlTarget) -> tuple[str, Job]:
        """(job id, its item) of a job target; UnknownTarget when there is none."""
        job = target.job
        if not job:
            job = self._job_of_key(target.key, target.version)
        item = self.store.jobs.get_job(job)
        if item is None:
            raise UnknownTarget(f"no such job: {job}")
        return job, Job.from_item(item)

    def _job_of_key(self, key: str, version: str) -> str:
        """The key's newest job (by upload time), or the job of that version of it. A key given
        without `incoming/` is looked up with it too (`a.csv` = `incoming/a.csv`)."""
        keys = [key] + ([INCOMING + key] if not key.startswith(INCOMING) else [])
        for k in keys:
            items = self.store.jobs.jobs_for_key(self.bucket, k)
            if version:
                items = [i for i in items if str(i.get("version") or "") == version]
            if items:
                return str(items[-1].get("job", ""))
        what = f"key {key}" + (f" version {version}" if version else "")
        raise UnknownTarget(f"no job for {what} (in bucket {self.bucket})")

    # ------------------------------------------------------------------ job actions
    @staticmethod
    def _state(meta: Job) -> str:
        if meta.cancelled_reason:
            return "cancelled"
        if meta.completed:
            return "completed"
        return "paused" if meta.paused_reason else "running"

    def _pause(self, job: str, meta: Job, reason: str) -> dict[str, Any]:
        if meta.cancelled_reason or meta.completed:  # nothing left to hold
            return {"state": self._state(meta), "already": True}
        done = self.store.jobs.pause_job(job, clean_reason(reason, "paused by an operator"))
        if done:
            count("JobsPaused", 1)
            return {"state": "paused", "already": False}
        return {"state": self._state(Job.from_item(self.store.jobs.get_job(job))), "already": True}

    def _resume(self, job: str, meta: Job, reason: str) -> dict[str, Any]:
        done = self.store.jobs.resume_job(job)
        state = self._state(Job.from_item(self.store.jobs.get_job(job)))
        return {"state": state, "already": not done}

    def _cancel(self, job: str, meta: Job, reason: str) -> dict[str, Any]:
        done = self.store.jobs.cancel_job(job, clean_reason(reason, "cancelled by an operator"))
        if done:
            count("JobsCancelled", 1)
        if not meta.completed:  # asked again on a repeat: a cancel whose writer died before asking
            self.settled(job)
        state = self._state(Job.from_item(self.store.jobs.get_job(job)))
        return {"state": state, "already": not done}

    # ------------------------------------------------------------------ flows
    def _flow(self, action: str, flow: str, reason: str) -> dict[str, Any]:
        if action == "cancel":
            raise ControlError("a flow can be paused or resumed; cancel names one job (job or key)")
        if action == "pause":
            done = self.store.jobs.pause_flow(flow, clean_reason(reason, "paused by an operator"))
        else:
            done = self.store.jobs.resume_flow(flow)
        paused = bool(self.store.jobs.flow_paused(flow))
        logger.info("flow control", extra={"flow": flow, "action": action, "already": not done})
        return {"action": action, "flow": flow, "state": "paused" if paused else "running", "already": not done}


__all__ = ["ACTIONS", "ControlError", "ControlService", "ControlTarget", "UnknownTarget", "clean_reason",
           "finisher_settled"]
