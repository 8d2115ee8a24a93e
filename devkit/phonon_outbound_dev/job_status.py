"""`phonon-outbound status`: how far a campaign has got, and where one call went (issue 12
item 4; docs/operating.md, "Watching a campaign").

Everything here reads; nothing writes. The picture of a job comes from three places:

- the job's META item (one GetItem): rows read by ingest (`checkpoint_row`, `row_count` from
  the validation pre-pass), chunks queued (`next_chunk`) and settled, the per-status counters
  of settled chunks (accepted, failed, duplicate, cancelled), requests, outcomes arrived
  (`outcomes`), pause and cancel reasons;
- the job's OUT# items (one Query, every settled chunk's outcomes in one item with `at`, the
  moment it settled): the calls per minute over time, and "now" = the calls of the chunks
  settled in the last 60 s. Why the ledger and not two samples of the counters a few seconds
  apart: it answers at once (no wait in the command), it is the same number for every reader
  and it gives the history the HTML chart draws. Its grain is one chunk (≤ one second's
  worth of the limit), fine on a 60 s window. Cost: the Query reads every OUT# item of the
  job (one per 500 rows, ~3 KB in the 202 answer shape, ~26 KB in the 200 shape): a 100,000-row job
  is ~200 items, ~0.6 to ~5 MB of reads;
- the outcome mix (the rows' `outcome` fields, written by the webhook) from
  `store.rows.iter_outcomes`, which reads every row item: only for jobs up to
  `OUTCOME_ROWS_MAX` rows unless asked for (`--outcomes`), since a million-row job's read
  takes minutes.

The lookup of one call: by phonon-uuid a GetItem on the results table; by client-identifier
or request-id a filtered Scan of the results table (reads the whole table: an operator's
command, not a hot path; docs/operating.md says what it costs), and with a job also that
job's own rows (which finds rows that were never accepted too). What a found call's row became
(status, outcome, duration in seconds, DTMF, …) is read from the row's own record
(`store.rows.get_outcome`, two reads per call), as the report reads it: the results item holds
the push as it came.

Without --stack and with no run live, the last finished local run's snapshot
(`<state dir>/last-run.json`, written by the runner; stack.py) is read instead: its jobs'
pictures as they ended, and lookups in the results CSVs the run wrote (`report_lookup`).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from phonon_outbound.control import job_of_key
from phonon_outbound.records import Job, JobStatus
from phonon_outbound.reports import GROUP_METRICS, PENDING, neutralize, outcome_group
from phonon_outbound.store import decode_outcomes, job_pk
from phonon_outbound.store.common import Control, FlowControl
from phonon_outbound.watchdog import active_jobs  # every job not completed: the watchdog's ActiveJobs

OUTCOME_ROWS_MAX = 20_000  # above this the outcome mix is read only on request (--outcomes)
MIN_SPAN_S = 10  # "calls per minute while sending" needs at least this much sending to measure
RATE_WINDOW_S = 60  # "calls per minute now": calls of the chunks settled in the last minute
MAX_ACTIVE_SHOWN = 50  # status without --job shows at most this many active jobs
MAX_MATCHES = 20  # a lookup lists at most this many calls

# The mix's groups: the layer's one outcome table (reports.OUTCOME_GROUPS), then the rows waiting.
MIX_ORDER = (*GROUP_METRICS, "waiting")
SENT = ("accepted", "failed")  # rows whose request reached Phonon (a call placed or refused)
SETTLED = ("accepted", "failed", "duplicate", "cancelled", "suppressed")


# ---------------------------------------------------------------------- reading
def settled_chunks(store: Any, job: str) -> list[dict]:
    """Every settled chunk of the job: {"at": epoch s, "chunk": n, "rows": n, <status>: n},
    oldest first, from its OUT# item (the outcomes of a chunk too big for one item were written
    as row items: those chunks are missing here, and said so by `counted_rows`)."""
    out = []
    for item in store.rows.iter_chunk_items(job):
        counts = Counter(str(r.get("status", "")).lower() for r in decode_outcomes(item["outcomes"]))
        out.append({"at": int(item.get("at", 0)), "chunk": int(item.get("chunk", 0)),
                    "rows": int(item.get("n", sum(counts.values()))), **{k: counts.get(k, 0) for k in SETTLED}})
    return sorted(out, key=lambda c: (c["at"], c["chunk"]))


def bin_seconds(chunks: list[dict]) -> int:
    """The chart's time step: a minute, or 10 s when everything settled within 10 minutes
    (a short run would otherwise be two or three bars, the first and last minute cut short)."""
    if not chunks:
        return 60
    return 60 if chunks[-1]["at"] - chunks[0]["at"] >= 600 else 10


def per_minute(chunks: Iterable[dict], keys: tuple[str, ...] = SENT, bin_s: int = 60) -> list[tuple[int, int]]:
    """(bin start, calls) for every `bin_s` step from the first settled chunk to the last, empty
    steps included (the chart's x axis is time)."""
    counts: Counter[int] = Counter()
    for c in chunks:
        counts[c["at"] // bin_s * bin_s] += sum(int(c.get(k, 0)) for k in keys)
    if not counts:
        return []
    first, last = min(counts), max(counts)
    return [(m, counts.get(m, 0)) for m in range(first, last + bin_s, bin_s)]


def rate_now(chunks: Iterable[dict], now: float, keys: tuple[str, ...] = SENT) -> int:
    """Calls of the chunks settled in the last `RATE_WINDOW_S` seconds (calls per minute now)."""
    return sum(sum(int(c.get(k, 0)) for k in keys) for c in chunks if now - RATE_WINDOW_S < c["at"] <= now + 1)


def outcome_mix(rows: Iterable[dict]) -> dict[str, Any]:
    """The flow-end outcomes of the accepted rows: {"groups": {answered, no answer, failed,
    delivered, other, waiting}, "values": {raw outcome: n}}. A row without `outcome_at` has
    no outcome yet (waiting); rows that were never accepted are not counted."""
    groups: Counter[str] = Counter()
    values: Counter[str] = Counter()
    for r in rows:
        status = str(r.get("status") or "").upper()
        # as the report counts them: ACCEPTED rows, and rows only a webhook's phonon-uuid speaks
        # for (no status: the report writes them ACCEPTED); a FAILED row a push came for is not one
        if status != "ACCEPTED" and (status or not r.get("phonon_uuid")):
            continue
        value = str(r.get("outcome") or "").upper()
        if not r.get("outcome_at") or not value or value == "PENDING":
            groups["waiting"] += 1
            continue
        values[value] += 1
        groups[outcome_group(value)] += 1
    return {"groups": {k: groups.get(k, 0) for k in MIX_ORDER}, "values": dict(values)}


def job_state(job: Job, paused: str = "") -> str:
    """ingesting | sending | paused | cancelled | waiting for the calling window | waiting for
    outcomes | completed | rejected | failed."""
    if job.status == JobStatus.REJECTED:
        return "rejected"
    if job.status == JobStatus.FAILED:
        return "failed"
    if job.cancelled_reason or job.status == JobStatus.CANCELLED:
        return "cancelled"
    if job.completed or job.status == JobStatus.COMPLETED:
        if job.accepted > job.outcomes and not job.report_final:
            return "waiting for outcomes"
        return "completed"
    if job.paused_reason or paused:
        return "paused"
    if job.window_wait:
        return "waiting for the calling window"
    if not job.ingest_done:
        return "ingesting"
    return "sending"


@dataclass
class JobPicture:
    """What `status --job` shows (and the HTML report draws)."""

    job: str
    file: str
    flow: str
    state: str
    rows: int | None  # rows in the file (pre-pass count; exact once ingest is done)
    rows_read: int
    chunks_queued: int
    chunks_total: int | None
    chunks_settled: int
    counts: dict[str, int]  # settled rows per status (rejected only once the job completes)
    sent: int  # rows whose request reached Phonon (accepted + failed)
    requests: int
    outcomes: int  # flow-end outcomes arrived
    calls_per_minute: int  # now (last 60 s)
    limit: int  # the records-per-minute limit
    eta_s: int | None
    reason: str = ""  # why paused / cancelled / rejected / failed
    rows_queued: int = 0  # valid rows ingest put on the queue (in chunks_queued chunks)
    created_at: int | None = None
    updated_at: int = 0
    timeline: list[tuple[int, int]] = field(default_factory=list)  # (bin start, calls in it)
    bin_s: int = 60  # the timeline's step
    achieved_per_minute: int | None = None  # calls per minute while sending (achieved_rate)
    mix: dict[str, Any] | None = None  # outcome_mix, when read
    mix_skipped: str = ""  # why the mix was not read
    job_cap: int | None = None  # calls per minute an operator capped the job at (`phonon-outbound limit`)
    flow_cap: int | None = None  # ... its flow at (every job of the flow together); read while it runs

    @property
    def cap(self) -> int | None:
        """The cap that binds the job: the smaller of its own and its flow's (None: none)."""
        return Control(job_cap=self.job_cap, flow_cap=self.flow_cap).cap

    def cap_text(self) -> str:
        """"60 calls/min (the job's)", "100 calls/min (flow Flow1234's; the job's own is 200)", or ""."""
        if self.cap is None:
            return ""
        if self.flow_cap is not None and self.cap == self.flow_cap and self.flow_cap != self.job_cap:
            own = f"; the job's own is {self.job_cap:,}" if self.job_cap is not None else ""
            return f"{self.cap:,} calls/min (flow {self.flow}'s{own})"
        return f"{self.cap:,} calls/min (the job's" + (
            f"; flow {self.flow}'s is {self.flow_cap:,}" if self.flow_cap is not None else "") + ")"

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["timeline"] = [{"start": m, "calls": n} for m, n in self.timeline]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobPicture:
        """The picture `to_dict` gave (the last local run's snapshot keeps them); unknown keys ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["timeline"] = [(int(t["start"]), int(t["calls"])) for t in d.get("timeline") or []]
        return cls(**values)


def picture(store: Any, job_id: str, limit: int, now: float | None = None, outcomes: bool | None = None,
            chunks: list[dict] | None = None) -> JobPicture | None:
    """The job's picture, or None when there is no such job. `outcomes`: read the outcome mix
    (None: only for jobs up to OUTCOME_ROWS_MAX rows). `chunks`: its `settled_chunks`, when the
    caller has read them already."""
    now = time.time() if now is None else now
    item = store.jobs.get_job(job_id)
    if not item:
        return None
    job = Job.from_item({**item, "pk": job_pk(job_id)})
    chunks = settled_chunks(store, job_id) if chunks is None else chunks
    counts = {k: int(getattr(job, k, 0)) for k in ("accepted", "failed", "duplicate", "cancelled")}
    for k, v in (job.counts or {}).items():  # the final counts, once written, include rejected and suppressed
        if k != "rows":
            counts[k] = int(v)
    sent = counts.get("accepted", 0) + counts.get("failed", 0)
    rows = job.total_rows if job.ingest_done else (job.row_count or None)
    settled_rows = sum(counts.values())
    rate_rows = rate_now(chunks, now, SETTLED)  # rows settled in the last minute, whatever their status
    eta: int | None = None
    if job.completed:
        eta = 0
    elif rows and rate_rows:
        eta = int(max(0, rows - settled_rows - counts.get("rejected", 0)) / rate_rows * 60)
    # the flow's control item (its pause and cap), read once while the job can still be held by it
    flow = store.jobs.flow_control(job.flow) if not (job.completed or job.cancelled_reason) else FlowControl()
    state = job_state(job, flow.paused)
    reason = {"paused": job.paused_reason, "cancelled": job.cancelled_reason, "rejected": job.error,
              "failed": job.failure}.get(state, "") or ""
    if state == "paused" and not reason:
        reason = f"flow {job.flow} paused"
    pic = JobPicture(
        job=job_id, file=job.key, flow=job.flow, state=state, rows=rows, rows_read=job.checkpoint_row,
        rows_queued=job.rows_queued,
        chunks_queued=job.next_chunk, chunks_total=job.chunks_total, chunks_settled=job.chunks_settled,
        counts=counts, sent=sent, requests=job.api_requests, outcomes=job.outcomes,
        calls_per_minute=rate_now(chunks, now), limit=limit, eta_s=eta, reason=reason,
        created_at=job.created_at, updated_at=job.updated_at, bin_s=bin_seconds(chunks),
        achieved_per_minute=achieved_rate(chunks), job_cap=job.rate_cap,
        # the flow's cap matters (and is read) only while the job still sends
        flow_cap=flow.cap)
    pic.timeline = per_minute(chunks, bin_s=pic.bin_s)
    read_mix = outcomes if outcomes is not None else (rows or 0) <= OUTCOME_ROWS_MAX
    if read_mix:
        pic.mix = outcome_mix(store.rows.iter_outcomes(job_id))
        if state == "completed" and pic.mix["groups"]["waiting"]:
            # the rows say what the `outcomes` counter cannot: it also counts a push that came
            # before its chunk settled for a row that then settled FAILED (job_state)
            pic.state = "waiting for outcomes"
    else:
        pic.mix_skipped = f"{rows:,} rows: give --outcomes to read every row's outcome"
    return pic


# ---------------------------------------------------------------------- a local run's summary
def achieved_rate(chunks: list[dict]) -> int | None:
    """Calls per minute while sending: the calls of every settled chunk over the time they took.
    Chunks settle one interval apart, so n chunks span n intervals (the first one's included):
    (last − first) · n / (n − 1). None with fewer than two chunks or under `MIN_SPAN_S` of
    sending: the moments are whole seconds, so a shorter span could be off by more than 10 %."""
    if len(chunks) < 2:
        return None
    span = (chunks[-1]["at"] - chunks[0]["at"]) * len(chunks) / (len(chunks) - 1)
    if span < MIN_SPAN_S:
        return None
    return int(sum(sum(int(c.get(k, 0)) for k in SENT) for c in chunks) / span * 60)


def mix_from_report(path: Any) -> dict[str, Any] | None:
    """The outcome mix from a local results CSV (its `outcome` column, docs/contract.md; a
    report without the column counts every accepted row as waiting). None if unreadable."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return outcome_mix({"status": r.get("status", ""), "outcome": (r.get("outcome") or "").lstrip("'"),
                                "outcome_at": 1 if (r.get("outcome") or "PENDING") != "PENDING" else 0}
                               for r in csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError):
        return None


def run_summary(pictures: list[JobPicture], chunks: list[dict], limit: int, dead_letters: int,
                webhooks: int) -> dict[str, Any]:
    """The picture of a whole local run (`run` prints it; JSON under "picture")."""
    groups: Counter[str] = Counter()
    for p in pictures:
        if p.mix is not None:
            groups.update(p.mix["groups"])
    timeline = per_minute(chunks)  # whole minutes: the busiest one
    return {"calls_sent": sum(p.sent for p in pictures), "calls_per_minute": achieved_rate(chunks), "limit": limit,
            "peak_minute": max((n for _, n in timeline), default=0),
            "outcomes": {k: groups.get(k, 0) for k in MIX_ORDER}, "dead_letters": dead_letters,
            "webhooks_received": webhooks,
            "jobs": [{"job": p.job, "file": p.file, "state": p.state, "sent": p.sent, "outcomes": p.outcomes,
                      **p.counts} for p in pictures]}


def summary_lines(s: dict[str, Any], safe: Any = str) -> list[str]:
    """A run's summary in a few lines."""
    rate = s.get("calls_per_minute")
    lines = [f"calls: {s['calls_sent']:,} sent"
             + (f" at {rate:,}/min while sending" if rate is not None else "")
             + f" (limit {s['limit']:,}/min; busiest minute {s['peak_minute']:,})"]
    mix = s["outcomes"]
    lines.append("outcomes: " + (", ".join(f"{mix[k]:,} {k}" for k in MIX_ORDER if mix.get(k)) or "none"))
    lines.append(f"dead letters: {s['dead_letters']:,}; webhooks received: {s['webhooks_received']:,}")
    for j in s["jobs"] if len(s["jobs"]) > 1 else ():
        lines.append(f"  {safe(j['file'] or j['job'])}: {j['state']}, {j['sent']:,} sent, "
                     f"{j.get('accepted', 0):,} accepted, {j['outcomes']:,} outcomes")
    return lines


# ---------------------------------------------------------------------- lookup of one call
RESULT_ATTR = {"uuid": "phonon-uuid", "cid": "client-identifier", "request_id": "request-id"}
ROW_ATTR = {"uuid": "phonon_uuid", "cid": "cid", "request_id": "request_id"}
# What a lookup shows of a call's fate, taken from the row's own record (store.rows.get_outcome:
# the chunk's outcome and what the webhook recorded on the row, the report's own fields; `duration`
# in whole seconds). The results item holds the push as it came (`status` COMPLETED, `duration`
# in the push's own unit): it is used only for what no row record has (an unmatched push).
ROW_FIELDS = ("status", "outcome", "duration", "attempts", "hangup_cause", "dtmf", "ended_at", "delivery")


def _call(source: str, item: dict) -> dict[str, Any]:
    """One found call in one shape, whichever table it came from (no phone numbers)."""
    def get(*names: str) -> Any:
        for n in names:
            if item.get(n) not in (None, ""):
                return item[n]
        return ""

    return {"source": source, "job": get("job"), "row": get("row"), "file": get("file"),
            "client_identifier": get("client-identifier", "cid"), "status": get("status"),
            "phonon_uuid": get("phonon-uuid", "phonon_uuid"), "request_id": get("request-id", "request_id"),
            "outcome": get("outcome"), "duration": get("duration"), "attempts": get("attempts"),
            "hangup_cause": get("hangup_cause"), "dtmf": get("dtmf"), "ended_at": get("ended_at"),
            "delivery": get("delivery"), "reason": get("reason")}


def _result_call(store: Any, item: dict) -> dict[str, Any]:
    """A results item as a call: its ids and file, and the call's fate from the row's record
    when the item names a job and row that has one (ROW_FIELDS); an unmatched push's item as it
    is, without its `duration` (the push's own unit, not seconds) and with its `call_end` as
    `ended_at`."""
    job, row = str(item.get("job") or ""), str(item.get("row") or "")
    record = store.rows.get_outcome(job, int(row)) if job and row.isdigit() else None
    if record is None:
        return _call("results", {**{k: v for k, v in item.items() if k != "duration"},
                                 "ended_at": item.get("call_end")})
    ids = {k: record.get(k) for k in ("cid", "request_id", "phonon_uuid", "reason")}
    return _call("results", {**ids, **{k: v for k, v in item.items() if k not in ROW_FIELDS},
                             **{k: record.get(k) for k in ROW_FIELDS}})


def lookup(store: Any, by: str, value: str, job: str | None = None) -> list[dict[str, Any]]:
    """The calls whose phonon-uuid / client-identifier / request-id (`by`: uuid | cid |
    request_id) is `value`: from the results table (each with its row's record, `_result_call`),
    and with `job` from that job's rows too (a row the results table lacks: never accepted, or its
    uuid not known yet)."""
    found: list[dict[str, Any]] = []
    if by == "uuid":
        item = store.results.get_result(value)
        items: Iterable[dict] = [item] if item else []
    else:
        items = store.results.find_results(RESULT_ATTR[by], value)
    for item in items:
        if job and str(item.get("job", "")) != job:
            continue
        found.append(_result_call(store, item))
        if len(found) >= MAX_MATCHES:
            return found
    if job:
        seen = {(str(c["job"]), str(c["row"])) for c in found}
        for row in store.rows.iter_outcomes(job):
            if str(row.get(ROW_ATTR[by], "")) == value and (job, str(row.get("row"))) not in seen:
                found.append(_call("rows", {**row, "job": job}))
                if len(found) >= MAX_MATCHES:
                    break
    return found


# ---------------------------------------------------------------------- the last local run
def _report_text(cell: str) -> str:
    """A results CSV cell as the value it was written from: the report puts an apostrophe before
    a formula character at the start or after a `;` (reports.neutralize); taken off where putting
    it back gives the cell again (a value that itself began with `'=` reads as without it)."""
    lead = cell[1:] if cell.startswith("'") else cell
    for candidate in (lead.replace(";'", ";"), lead, cell.replace(";'", ";")):
        if candidate != cell and neutralize(candidate) == cell:
            return candidate
    return cell


def _number(text: str) -> Any:
    return int(text) if text.isdigit() else text


def report_call(entry: dict[str, Any], line: dict[str, str]) -> dict[str, Any]:
    """One line of a results CSV (reports.HEADER) as a call in `lookup`'s shape (`duration_s`
    as `duration`; PENDING, no outcome yet, as an empty outcome, as `lookup` shows it)."""
    cells = {k: _report_text(v or "") for k, v in line.items() if k}
    outcome = cells.get("outcome", "")
    return _call("report", {
        "job": entry.get("job"), "file": entry.get("file"), "row": _number(cells.get("row", "")),
        **{k: cells.get(k) for k in ("client-identifier", "status", "phonon-uuid", "request-id", "reason",
                                      "hangup_cause", "dtmf", "ended_at", "delivery")},
        "outcome": "" if outcome == PENDING else outcome, "duration": _number(cells.get("duration_s", "")),
        "attempts": _number(cells.get("attempts", ""))})


def report_lookup(entries: list[dict[str, Any]], by: str, value: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The calls whose phonon-uuid / client-identifier / request-id is `value` in the results
    CSVs of these snapshot entries (read a line at a time), at most MAX_MATCHES; and the reports
    that could not be read."""
    import csv

    column, wanted = RESULT_ATTR[by], neutralize(value)
    found: list[dict[str, Any]] = []
    unreadable: list[str] = []
    for entry in entries:
        path = str(entry.get("results_csv") or "")
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                for line in csv.DictReader(fh):
                    if line.get(column) == wanted:
                        found.append(report_call(entry, line))
                        if len(found) >= MAX_MATCHES:
                            return found, unreadable
        except (OSError, csv.Error, UnicodeDecodeError) as err:
            unreadable.append(f"{path} ({getattr(err, 'strerror', None) or err})")
    return found, unreadable


def _snapshot_jobs(snap: dict[str, Any], job: str | None, key: str | None) -> list[dict[str, Any]]:
    """The snapshot's entries: every one, the job's, or the newest upload of the key (with or without `incoming/`)."""
    entries = [e for e in snap.get("jobs") or [] if isinstance(e, dict)]
    if job:
        return [e for e in entries if e.get("job") == job]
    if key:
        keys = {key, f"incoming/{key}"} if not key.startswith("incoming/") else {key}
        return [e for e in entries if e.get("key") in keys][-1:]
    return entries


def last_run_status(args: Any, not_running: str, by: str, value: str) -> int:
    """`status` without --stack once no run is live: the last finished run's snapshot
    (`<state dir>/last-run.json`, stack.py): its jobs' final pictures, or the calls found in the
    results CSVs it wrote."""
    import json
    import sys

    from .cli import EXIT_OK, EXIT_USAGE, safe
    from .stack import read_last_run

    try:
        snap = read_last_run(args.state_dir)
    except ValueError as err:
        return _usage(f"{not_running}; {err}")
    if snap is None:
        return _usage(f"{not_running}, and no finished run is kept in {safe(args.state_dir)} (a run keeps its jobs' final "
                      f"picture there for status, unless it ran with --no-state)")
    if args.version:
        return _usage("--version: the last local run keeps no S3 versions; give --key alone")
    ended = str(snap.get("ended_at") or "an unknown time")
    said = f"from the last local run, which ended at {safe(ended)} (no run is running now)"
    entries = _snapshot_jobs(snap, args.job, args.key)
    if (args.job or args.key) and not entries:
        return _usage(f"no job {safe(args.job or args.key)} in the last local run (ended at {safe(ended)})")
    last_run = {"ended_at": ended, "state_dir": str(args.state_dir)}
    if by:
        calls, unreadable = report_lookup(entries, by, value)
        for text in unreadable:
            print(f"phonon-outbound: warning: the report {safe(text)} cannot be read: not searched", file=sys.stderr)
        if args.json:
            print(json.dumps({"calls": calls, "last_run": last_run}, default=str))
        else:
            print("\n".join([said, "", *(call_lines(calls, safe) if calls else ["no such call"])]))
        return EXIT_OK if calls else EXIT_USAGE
    if args.job or args.key:
        entry = entries[0]
        if not entry.get("picture"):
            return _usage(f"{safe(entry.get('file') or entry.get('job'))} made no job in the last local run"
                          + (f": {safe(entry['error'])}" if entry.get("error") else ""))
        pic = JobPicture.from_dict(entry["picture"])
        if args.html and (problem := _write_page(args.html, pic, f"{pic.job} (last local run, ended {ended})")):
            return _usage(problem)
        if args.json:
            print(json.dumps({**pic.to_dict(), "report": entry.get("results_csv"), "summary": entry.get("summary_json"),
                              "last_run": last_run}, default=str))
        else:
            print("\n".join([said, "", *picture_lines(pic, safe), f"report: {safe(entry.get('results_csv'))}"]
                            + ([f"html: {safe(args.html)}"] if args.html else [])))
        return EXIT_OK
    if args.json:
        print(json.dumps({"last_run": {**last_run, "run": snap.get("run")}, "limit": snap.get("limit"),
                          "jobs": [{**(e.get("picture") or {"job": e.get("job"), "file": e.get("file"),
                                                             "error": e.get("error", "")}),
                                    "report": e.get("results_csv"), "summary": e.get("summary_json")}
                                   for e in entries]}, default=str))
        return EXIT_OK
    lines = [said + "; its jobs as they ended:"]
    if isinstance(snap.get("run"), dict):
        with contextlib.suppress(KeyError, TypeError):  # a snapshot of another version: the jobs still say it
            lines.extend(summary_lines(snap["run"], safe))
    for e in entries:
        lines.append("")
        if e.get("picture"):
            lines.extend(picture_lines(JobPicture.from_dict(e["picture"]), safe))
        else:
            lines.append(f"file: {safe(e.get('file'))}: no job" + (f" ({safe(e['error'])})" if e.get("error") else ""))
        lines.append(f"report: {safe(e.get('results_csv'))}")
    print("\n".join(lines))
    return EXIT_OK


# ---------------------------------------------------------------------- text
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def mix_text(mix: dict[str, Any] | None, skipped: str = "") -> str:
    if mix is None:
        return f"not read ({skipped})" if skipped else "not read"
    groups = mix["groups"]
    parts = [f"{groups[k]:,} {k}" for k in MIX_ORDER if groups.get(k)]
    return ", ".join(parts) or "none yet"


def picture_lines(p: JobPicture, safe: Any = str) -> list[str]:
    """The job's picture as short aligned lines (values from data through `safe`)."""
    c = p.counts
    rows = [
        ("job", safe(p.job)),
        ("file", safe(p.file) or "-"),
        ("flow", safe(p.flow) or "-"),
        ("state", p.state + (f": {safe(p.reason)}" if p.reason else "")),
        ("rows", f"{_n(p.rows)} in the file, {p.rows_read:,} read by ingest, {p.rows_queued:,} queued"),
        ("chunks", f"{p.chunks_queued:,} queued" + (f" of {p.chunks_total:,}" if p.chunks_total is not None else "")
         + f", {p.chunks_settled:,} settled"),
        ("sent", f"{p.sent:,} calls in {p.requests:,} requests"),
        ("settled", ", ".join(f"{v:,} {k}" for k, v in c.items() if v or k == "accepted")),
        ("outcomes", f"{p.outcomes:,} of {c.get('accepted', 0):,} accepted arrived"),
        ("outcome mix", mix_text(p.mix, p.mix_skipped)),
        ("calls/min", f"{p.calls_per_minute:,} now" + (f", {p.achieved_per_minute:,} while sending"
                                                          if p.achieved_per_minute is not None else "")
         + f" (limit {p.limit:,})"),
        *([("cap", safe(p.cap_text()))] if p.cap is not None else []),
        ("ETA", "done" if p.eta_s == 0 else duration(p.eta_s) if p.eta_s is not None else "unknown (nothing settled in the last minute)"),
    ]
    width = max(len(k) for k, _ in rows)
    return [f"{k + ':':<{width + 1}} {v}" for k, v in rows]


def active_lines(pictures: list[JobPicture], safe: Any = str) -> list[str]:
    """One aligned line per job: id, state, settled of rows, calls/min, ETA, file."""
    if not pictures:
        return ["no active jobs"]
    head = ("JOB", "STATE", "SETTLED", "CALLS/MIN", "ETA", "FILE")
    table = [head] + [(safe(p.job), p.state, f"{sum(p.counts.values()):,}/{_n(p.rows)}",
                       f"{p.calls_per_minute:,}" + (f" (cap {p.cap:,})" if p.cap is not None else ""),
                       duration(p.eta_s) if p.eta_s is not None else "-", safe(p.file)) for p in pictures]
    widths = [max(len(r[i]) for r in table) for i in range(len(head) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in table]


def call_lines(calls: list[dict[str, Any]], safe: Any = str) -> list[str]:
    out: list[str] = []
    for c in calls:
        shown = [(k, v) for k, v in c.items() if v not in ("", None) and k != "source"]
        width = max(len(k) for k, _ in shown)
        out.extend(f"{k + ':':<{width + 1}} {safe(v)}" for k, v in shown)
        out.append("")
    return out[:-1]


# ---------------------------------------------------------------------- the command
def add_parser(sub: Any) -> None:
    """`status` on the `phonon-outbound` parser (cli.py registers it)."""
    from pathlib import Path

    from .cli import STATE_DIR

    st = sub.add_parser(
        "status", help="how far jobs have got (a deployed stack or the local run), or where one call went",
        description="Per job: rows read, chunks queued and settled, calls sent, accepted, failed, flow-end "
                    "outcomes arrived, calls per minute now (the calls of the chunks settled in the last minute) "
                    "against the limit, the ETA at that rate and the state. Without --job: every active job. "
                    "--uuid / --client-id / --request-id find one call (the last two read the whole results "
                    "table: docs/operating.md). With --stack a deployed stack; without, the local run in progress, or "
                    "once none is, the last finished run as it left its state directory (its jobs' final pictures; "
                    "lookups search its results CSVs; nothing is kept by a run with --no-state). "
                    "Exit status: 0 found, 2 usage error or nothing found.")
    which = st.add_mutually_exclusive_group()
    which.add_argument("--job", metavar="ID", help="one job, by id")
    which.add_argument("--key", metavar="KEY", help="the newest job of this S3 key (incoming/… or the file name)")
    st.add_argument("--version", metavar="V", help="with --key: the job of this S3 object version")
    call = st.add_mutually_exclusive_group()
    call.add_argument("--uuid", metavar="U", help="find the call with this phonon-uuid")
    call.add_argument("--client-id", metavar="C", help="find the calls with this client-identifier")
    call.add_argument("--request-id", metavar="R", help="find the calls of this request-id")
    st.add_argument("--outcomes", action="store_true",
                    help=f"read every row's outcome for the outcome mix also for jobs over {OUTCOME_ROWS_MAX:,} rows")
    st.add_argument("--html", type=Path, metavar="FILE",
                    help="with --job or --key (not with a lookup): write the job's one-page HTML report")
    st.add_argument("--json", action="store_true", help="one JSON object on stdout")
    st.add_argument("--stack", metavar="NAME", help="a deployed stack (default: the local run in progress)")
    st.add_argument("--region", metavar="REGION", help="AWS region of the stack")
    st.add_argument("--profile", metavar="NAME", help="AWS named profile to use")
    st.add_argument("--state-dir", type=Path, default=STATE_DIR, metavar="DIR",
                    help="without --stack: the local run's state directory, where a live run is found and a "
                         "finished run's snapshot is kept (default ./.phonon-outbound)")


def connect_target(args: Any) -> Any:
    """The stack or the live local run (devkit stack.py, `connect`)."""
    from .stack import connect

    return connect(args.stack, args.region, args.profile, None if args.stack else args.state_dir)


def rate_limit(target: Any, stack: str | None) -> int:
    """The records-per-minute limit: a deployed stack's RecordsPerMinute parameter (its
    settings as `connect` builds them from the outputs do not carry it), else the settings'
    (the local run's own)."""
    limit = int(getattr(target.settings, "records_per_minute", 0) or 0)
    session = getattr(target, "session", None)
    if stack and session is not None:
        try:
            described = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
            for p in described.get("Parameters", []):
                if p.get("ParameterKey") == "RecordsPerMinute":
                    return int(p["ParameterValue"])
        except Exception:  # noqa: BLE001 - the settings' value rather than no answer
            pass
    return limit


def _queues(target: Any) -> dict[str, int]:
    """Messages waiting in each queue the target names (ApproximateNumberOfMessages); {} when unknown."""
    out: dict[str, int] = {}
    sqs: Any = getattr(target, "sqs", None)
    queues = getattr(target, "queues", None) or {} if sqs is not None else {}
    for name, url in sorted(queues.items()):
        try:
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
            out[name] = int(attrs["Attributes"].get("ApproximateNumberOfMessages", 0))
        except Exception:  # noqa: BLE001 - a queue we may not read is left out, not fatal
            continue
    return out


def _write_page(path: Any, pic: JobPicture, title: str) -> str:
    """`--html`: one job's page at `path`; "" when written, else what went wrong (a usage error)."""
    from .cli import safe
    from .html import write_report

    try:
        write_report(path, [pic], title=f"phonon-outbound job {title}")
    except OSError as err:
        return f"--html {safe(path)} could not be written ({safe(err.strerror or err)})"
    return ""


def _usage(text: str) -> int:
    """One line on stderr (`cli._err`), exit 2. Said here rather than raised: under `python -m
    phonon_outbound_dev.cli` the module that catches UsageError is `__main__`, not the `.cli`
    this module imports."""
    from .cli import EXIT_USAGE, _err

    _err(text)
    return EXIT_USAGE


def cmd_status(args: Any) -> int:
    """`status`; with --html, a page file the checks created but nothing was written to is removed."""
    created = bool(args.html) and not Path(args.html).exists()
    try:
        return _status(args)
    finally:
        try:
            if created and Path(args.html).is_file() and Path(args.html).stat().st_size == 0:
                Path(args.html).unlink()
        except OSError:
            pass


def _status(args: Any) -> int:
    import json

    from .cli import EXIT_OK, EXIT_USAGE, UsageError, safe, usable_file
    from .stack import NotRunning

    usage = _usage
    for option, given in (("--uuid", args.uuid), ("--client-id", args.client_id), ("--request-id", args.request_id),
                          ("--job", args.job), ("--key", args.key), ("--version", args.version)):
        if given is not None and not str(given).strip():  # empty: not "every job" (as pause/cancel refuse it)
            return usage(f"{option} needs a value")
    by, value = next(((b, v) for b, v in (("uuid", args.uuid), ("cid", args.client_id),
                                          ("request_id", args.request_id)) if v), ("", ""))
    if args.version and not args.key:
        return usage("--version needs --key")
    if args.html and not (args.job or args.key):
        return usage("--html needs --job or --key (one job's report)")
    if args.html and by:
        return usage("--html writes one job's page: not with --uuid, --client-id or --request-id")
    if args.stack is None and (args.region or args.profile):
        return usage("--region and --profile need --stack")
    if args.html:
        try:  # as `run --html`: a folder or a place that cannot be written is said before anything is read
            usable_file(args.html, "--html")
        except UsageError as err:
            return usage(str(err))
    try:
        target = connect_target(args)
    except NotRunning as err:  # no run is live: the last finished one, if its snapshot was kept
        return last_run_status(args, safe(str(err)), by, value)
    except Exception as err:  # noqa: BLE001 - no stack, no local run, no credentials: one line, exit 2
        return usage(safe(str(err) or type(err).__name__))
    store = target.store
    limit = rate_limit(target, args.stack)
    job_id = args.job
    if args.key:
        job_id = job_of_key(store, target.bucket, args.key, args.version or "")
        if not job_id:
            return usage(f"no job for key {safe(args.key)}" + (f" version {safe(args.version)}" if args.version else ""))
    if by:
        calls = lookup(store, by, value, job_id)
        if args.json:
            print(json.dumps({"calls": calls}, default=str))
        else:
            print("\n".join(call_lines(calls, safe)) if calls else "no such call")
        return EXIT_OK if calls else EXIT_USAGE
    if job_id:
        pic = picture(store, job_id, limit, outcomes=True if args.outcomes else None)
        if pic is None:
            return usage(f"no job {safe(job_id)}")
        if args.html and (problem := _write_page(args.html, pic, job_id)):
            return usage(problem)
        if args.json:
            print(json.dumps(pic.to_dict(), default=str))
        else:
            print("\n".join(picture_lines(pic, safe)))
            if args.html:
                print(f"html: {safe(args.html)}")
        return EXIT_OK
    jobs = active_jobs(store)
    pictures = [p for p in (picture(store, j, limit, outcomes=False) for j in jobs[-MAX_ACTIVE_SHOWN:]) if p]
    queues = _queues(target)
    if args.json:
        print(json.dumps({"active_jobs": [p.to_dict() for p in pictures], "active_total": len(jobs),
                          "queues": queues, "limit": limit}, default=str))
        return EXIT_OK
    lines = active_lines(pictures, safe)
    if len(jobs) > len(pictures):
        lines.append(f"(the {len(pictures)} most recently written of {len(jobs):,} active jobs)")
    total = sum(p.calls_per_minute for p in pictures)
    lines.append(f"calls/min now: {total:,} (limit {limit:,})")
    if queues:
        lines.append("queues: " + ", ".join(f"{safe(k)} {v:,}" for k, v in queues.items()))
    print("\n".join(lines))
    return EXIT_OK


__all__ = ["JobPicture", "active_jobs", "add_parser", "cmd_status", "lookup", "outcome_mix", "per_minute", "picture", "rate_now",
           "settled_chunks"]
