"""Control of a running campaign: pause, resume, cancel or cap one job, or pause / resume / cap
one flow (docs/operating.md, "Pause, resume, cancel" and "Cap a job's or a flow's rate").

`ControlService.apply(action, target)` is the one entry of the three ways in: the
`phonon-outbound pause|resume|cancel|limit` command (devkit, against a stack or the local run), the
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
job, the same cap set twice); a `limit`'s answer adds `rate_cap` (calls per minute, None = no
cap). An unknown job, key or version is `UnknownTarget`; a malformed request `ControlError`
(`ControlTarget.of` checks every target: one of job, key or flow; a flow id is 8 letters or
digits; a key or version at most 1,024 UTF-8 bytes, S3's limit).
Reasons are an operator's free text: they go into the job item and the report (CANCELLED rows),
never into a log line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .flows import FLOW_ID_RE, not_a_flow_id
from .observability import count, logger, mask_numbers
from .records import MAX_JOB_ID_CHARS, Job
from .store import Store

ACTIONS = ("pause", "resume", "cancel", "limit")
PHONON_LIMIT = 30_000  # Phonon's own limit, calls per minute: the highest cap when the stack's limit is not known
NO_CAP = ("none", "0")
MAX_REASON_CHARS = 300
MAX_KEY_BYTES = 1024  # S3's longest object key, in UTF-8 bytes (not characters)
# AWS error codes that mean "this request, as given, can never succeed" (DynamoDB, S3, SQS):
# retrying them only walks the event into the DLQ. Throttling and 5xx are not among them.
REFUSED_CODES = frozenset({"ValidationException", "ValidationError", "InvalidParameterValue", "InvalidArgument",
                           "KeyTooLongError"})
INCOMING = "incoming/"


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
            if name == "key":  # S3 keys may begin or end with spaces: a key is matched exactly
                return value if value.strip() else ""
            return value.strip()

        target = ControlTarget(text("job"), text("key"), text("version"), text("flow"))
        # An over-long name cannot be a key of ours (DynamoDB would refuse it with an error the
        # caller cannot read): refused here, with the rule, never the value. Keys and versions
        # are bounded in UTF-8 bytes, as S3 bounds keys: 1,000 CJK characters are ~3,000 bytes.
        for name in ("job", "key", "version", "flow"):
            try:
                size = len(getattr(target, name).encode("utf-8"))
            except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800"): no key can hold it
                raise ControlError(f"'{name}' is not valid text") from None
            if name in ("key", "version") and size > MAX_KEY_BYTES:
                raise ControlError(f"'{name}' is longer than {MAX_KEY_BYTES} bytes (UTF-8)")
        if len(target.job) > MAX_JOB_ID_CHARS:
            raise ControlError(f"'job' is longer than {MAX_JOB_ID_CHARS} characters")
        if target.flow and FLOW_ID_RE.fullmatch(target.flow) is None:
            raise ControlError(not_a_flow_id(target.flow))  # the rule, and the value only when it is one
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
    """An operator's reason fit for the job item and the report: one line, bounded, any phone-like
    number (however it is written) masked to its last 3 digits."""
    text = mask_numbers(" ".join(str(text or "").split()))[:MAX_REASON_CHARS]
    return text or default


def job_of_key(store: Store, bucket: str, key: str, version: str = "") -> str | None:
    """The key's newest job (by upload time, `store.jobs.jobs_for_key`), or the job of that
    version of it; None when there is none. A key given without `incoming/` is looked up with it
    too (`a.csv` = `incoming/a.csv`). Control and `phonon-outbound status` name jobs this way."""
    keys = [key] + ([INCOMING + key] if not key.startswith(INCOMING) else [])
    for k in keys:
        items = store.jobs.jobs_for_key(bucket, k)
        if version:
            items = [i for i in items if str(i.get("version") or "") == version]
        if items:
            return str(items[-1].get("job", "")) or None
    return None


def refused_by_aws(err: Exception) -> str:
    """The AWS error code when `err` says the request as given can never succeed (a botocore
    ClientError whose code is in REFUSED_CODES, e.g. DynamoDB's ValidationException), else "".
    Only the code is ever shown: an AWS message may quote the value it refused."""
    response = getattr(err, "response", None)
    code = str(((response or {}).get("Error") or {}).get("Code") or "") if isinstance(response, dict) else ""
    return code if code in REFUSED_CODES else ""


def finisher_settled(store: Store, reports: Any) -> Callable[[str], None]:
    """The report request of a cancel: when every chunk of the job is queued (ingest done), ask
    `reports.settled(job, meta)` — `reporting.ReportRequests` (`wiring.reports()` in the
    functions, the CLI's against a stack or the local run: a message on the report queue, the
    report function writes; in-line without a queue) or a `JobFinisher` (writes in-line).
    Before ingest is done, the last chunk's settling asks for it."""
    def settled(job: str) -> None:
        meta = Job.from_item(store.jobs.get_job(job))
        if meta.ingest_done:  # every chunk queued: settling them finishes the job
            reports.settled(job, meta)
    return settled


def parse_cap(value: Any, limit: int | None = PHONON_LIMIT) -> int | None:
    """A `limit` request's value: calls per minute, a whole number from 1 to `limit` (the global
    rate limit; None: not known yet, no upper bound checked), or 0 / "none" to remove the cap
    (None). Anything else is a ControlError that says what is expected, never the value (the
    ingest function logs a refusal's reason)."""
    highest = f"{limit:,}" if limit is not None else "the global limit"
    expected = f"calls per minute, a whole number from 1 to {highest} (the rate limit), or 0 / none to remove the cap"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ControlError(f"limit needs a value: {expected}")
    if isinstance(value, bool):
        raise ControlError(f"the cap must be {expected}")
    if isinstance(value, str):
        text = value.strip().lower()
        if text in NO_CAP:
            return None
        if not (text.isascii() and text.isdigit()):
            raise ControlError(f"the cap must be {expected}")
        if len(text.lstrip("0")) > 12:  # int() refuses over 4,300 digits with a ValueError; no cap is this long
            raise ControlError(f"the cap is out of range: {expected}")
        value = int(text)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise ControlError(f"the cap must be {expected}")
    if value == 0:
        return None
    if value < 0 or (limit is not None and value > limit):
        raise ControlError(f"the cap is out of range: {expected}")
    return value


class ControlService:
    def __init__(self, store: Store, bucket: str, settled: Callable[[str], None], max_per_minute: int = PHONON_LIMIT):
        self.store = store
        self.bucket = bucket
        self.settled = settled  # a report request for a job that may now be settled
        self.max_per_minute = max_per_minute  # the global rate limit: no cap may exceed it

    def apply(self, action: str, target: ControlTarget | dict[str, Any], reason: str = "",
              per_minute: Any = None) -> dict[str, Any]:
        """Carry out `action` on `target`. `per_minute`: a `limit`'s value (`parse_cap`)."""
        action = str(action or "").strip().lower()
        if action not in ACTIONS:
            # the value only when it is short: an event may carry up to 256 KB of it
            shown = f" {action!r}" if 0 < len(action) <= 32 else ""
            raise ControlError(f"unknown action{shown}: pause, resume, cancel or limit")
        # Every target passes ControlTarget.of's checks, however it was built.
        target = ControlTarget.of(target if isinstance(target, dict) else asdict(target))
        cap = parse_cap(per_minute, self.max_per_minute) if action == "limit" else None
        if target.flow:
            if action == "limit":
                return self._flow_limit(target.flow, cap)
            return self._flow(action, target.flow, reason)
        job, meta = self.resolve(target)
        out: dict[str, Any] = {"action": action, "job": job}
        if target.key:
            out.update(key=meta.key or target.key, version=meta.version)
        if action == "limit":
            out.update(self._limit(job, meta, cap))
        else:
            out.update(getattr(self, f"_{action}")(job, meta, reason))
        logger.info("job control", extra={"job": job, "action": action, "state": out["state"],
                                          "already": out["already"],
                                          **({"rate_cap": out["rate_cap"]} if action == "limit" else {})})
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
        job = job_of_key(self.store, self.bucket, key, version)
        if job is None:
            what = f"key {key}" + (f" version {version}" if version else "")
            raise UnknownTarget(f"no job for {what} (in bucket {self.bucket})")
        return job

    # ------------------------------------------------------------------ job actions
    def _state(self, meta: Job) -> str:
        """What the job does now, as dispatch obeys it: held by its own pause or by its flow's."""
        if meta.cancelled_reason:
            return "cancelled"
        if meta.completed:
            return "completed"
        if meta.paused_reason or (meta.flow and self.store.jobs.flow_paused(meta.flow)):
            return "paused"
        return "running"

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

    def _limit(self, job: str, meta: Job, cap: int | None) -> dict[str, Any]:
        if meta.cancelled_reason or meta.completed:  # nothing left to send: the cap stays as it was
            return {"state": self._state(meta), "already": True, "rate_cap": meta.rate_cap}
        done = self.store.jobs.set_job_cap(job, cap)
        if done:
            count("JobsCapped" if cap is not None else "JobCapsRemoved", 1)
        now = Job.from_item(self.store.jobs.get_job(job))
        return {"state": self._state(now), "already": not done, "rate_cap": now.rate_cap}

    # ------------------------------------------------------------------ flows
    def _flow_limit(self, flow: str, cap: int | None) -> dict[str, Any]:
        done = self.store.jobs.set_flow_cap(flow, cap)
        paused, now_cap = self.store.jobs.flow_control(flow)
        logger.info("flow control", extra={"flow": flow, "action": "limit", "already": not done, "rate_cap": cap})
        return {"action": "limit", "flow": flow, "state": "paused" if paused else "running", "already": not done,
                "rate_cap": now_cap}

    def _flow(self, action: str, flow: str, reason: str) -> dict[str, Any]:
        if action == "cancel":
            raise ControlError("a flow can be paused, resumed or capped; cancel names one job (job or key)")
        if action == "pause":
            done = self.store.jobs.pause_flow(flow, clean_reason(reason, "paused by an operator"))
        else:
            done = self.store.jobs.resume_flow(flow)
        paused = bool(self.store.jobs.flow_paused(flow))
        logger.info("flow control", extra={"flow": flow, "action": action, "already": not done})
        return {"action": action, "flow": flow, "state": "paused" if paused else "running", "already": not done}


__all__ = ["ACTIONS", "PHONON_LIMIT", "REFUSED_CODES", "ControlError", "ControlService", "ControlTarget",
           "UnknownTarget", "clean_reason", "finisher_settled", "job_of_key", "parse_cap", "refused_by_aws"]
