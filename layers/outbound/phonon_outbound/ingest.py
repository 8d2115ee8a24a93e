"""Ingest: an S3 object → validated rows → API-sized chunks on SQS; rejected rows recorded.

Exactly-once over at-least-once S3 notifications:
- the job id is derived from the object's identity (bucket, key, version or ETag), and the
  object is claimed with a conditional write, so a duplicate notification does nothing;
- chunk boundaries depend only on the file, so a run resumed from a checkpoint (after a crash
  or a deliberate pause near the Lambda time limit) rebuilds exactly the chunks the first run
  built; chunks it had already queued are queued again byte for byte and the dispatcher's
  chunk ledger drops them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, unquote_plus

from botocore.exceptions import ClientError

from . import suppression, windows
from .chunking import SECURITY_ID_LEN, CallTooLarge, Chunk, Chunker, lane_for, queue_for
from .contacts import FileRejected, ParseOptions, RejectedRow, ValidRow, open_contacts
from .control import INCOMING, MAX_KEY_BYTES, clean_reason
from .flows import FlowSecrets, UnknownFlow, resolve_flow
from .intake import request_origin
from .jobs import ReportTrigger, report_keys, upload_stamp
from .observability import count, logger
from .records import ChunkMessage, Job, JobStatus, chunk_message_group, row_ref
from .settings import Settings
from .status import Status
from .store import Store

MAX_BATCH_BYTES = 1_000_000  # SendMessageBatch carries at most 1 MiB in all; keep a margin
MAX_BATCH_ENTRIES = 10
# The object claim's lease: this invocation's remaining time plus a little. A live ingest is
# never taken over (it cannot outlive its invocation); a crashed or timed-out one is taken over
# by Lambda's retry (a minute later at the earliest).
LEASE_SLACK_S = 5.0
MAX_PREPASS_PAUSES = 2  # a pre-pass that runs out of time in a fresh invocation too: reject
CANCEL_PREFIX = "cancel/"  # cancel/<key> (or cancel/<key without incoming/>): the emergency brake


def marker_reason(marker_key: str) -> str:
    """Why a `cancel/` marker cancels a job (its control request, or a new job that finds it)."""
    return f"cancelled by a file under {CANCEL_PREFIX}: {marker_key}"


# S3 answers for an object (version) that is not there: GetObject's NoSuchKey / NoSuchVersion,
# HeadObject's bare 404, and 405 for a version that is a delete marker.
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound", "405", "MethodNotAllowed"})
_EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)


class PrepassOutOfTime(Exception):
    """The validation pre-pass reached the invocation's time margin (see _Deadline)."""


class _Deadline:
    """The object's byte stream as the contact reader's pre-pass reads it, with a watch on the
    invocation's remaining time: below the margin, the next read raises PrepassOutOfTime.
    (The reader takes any object with read(); its own code stays free of Lambda concerns.)
    Disarmed once the pre-pass is done: the row pass watches the time itself."""

    def __init__(self, body: Any, remaining_s: Callable[[], float], margin_s: float):
        self.body = body
        self.remaining_s = remaining_s
        self.margin_s = margin_s
        self.armed = True

    def read(self, n: int = -1) -> bytes:
        if self.armed and self.remaining_s() < self.margin_s:
            raise PrepassOutOfTime
        return self.body.read(n)

    def close(self) -> None:
        self.body.close()


def _error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def parse_event_time(value: Any) -> datetime | None:
    """An event's ISO 8601 time (S3 `eventTime`, EventBridge `time`) as an aware datetime; None
    when absent, unreadable, or a placeholder such as sample events' 1970-01-01."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when if when >= _EPOCH_2000 else None


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    event_time: str | None = None  # the event's time of the upload (ISO 8601), when it gave one
    raw_key: str | None = None  # the key exactly as the event spelled it

    def candidates(self) -> list[str]:
        """The keys to try, in order: the key, then the event's spelling as given, URL-decoded
        (form and percent encoding). S3 event notifications URL-encode keys (AWS's "Event
        message structure": "red flower.jpg" arrives as "red+flower.jpg"); AWS's page on the
        EventBridge event structure documents no encoding and its examples show plain keys,
        so EventBridge keys are taken as given first (powertools' data class decodes them:
        the sources disagree). A key with a literal `+` or `%` is then still found."""
        raw = self.raw_key if self.raw_key is not None else self.key
        out: list[str] = []
        for k in (self.key, raw, unquote_plus(raw), unquote(raw)):
            if k and k not in out:
                out.append(k)
        return out

    @property
    def identity(self) -> str:
        version = self.version_id or (self.etag or "").strip('"') or "-"
        return f"{self.bucket}/{self.key}#{version}"

    @property
    def job_id(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()[:20]

    @classmethod
    def from_s3_record(cls, record: dict) -> ObjectRef:
        s3 = record["s3"]
        obj = s3["object"]
        return cls(bucket=s3["bucket"]["name"], key=unquote_plus(obj["key"]),
                   version_id=obj.get("versionId") or None, etag=obj.get("eTag") or None,
                   size=obj.get("size"), event_time=record.get("eventTime") or None, raw_key=obj["key"])

    @classmethod
    def from_eventbridge(cls, event: dict) -> ObjectRef:
        d = event["detail"]
        obj = d.get("object") or {}
        return cls(bucket=d["bucket"]["name"], key=obj["key"], version_id=obj.get("version-id") or None,
                   etag=obj.get("etag") or None, size=obj.get("size"), event_time=event.get("time") or None,
                   raw_key=obj["key"])


@dataclass
class IngestResult:
    status: str  # done | paused | duplicate | rejected | cancelled
    job: str
    rows: int = 0
    chunks: int = 0
    rejected: int = 0
    reason: str = ""
    notes: list[str] = field(default_factory=list)


def chunk_message(job: str, flow: str, chunk_no: int, chunk: Chunk, warnings: dict[int, str] | None = None) -> str:
    """The SQS body of one chunk (`records.ChunkMessage` v2, no security-id). The calls,
    correlation key included, travel gzip-compressed (level 1) and base64-encoded: a 500-call
    chunk shrinks from ~150 KB to ~20 KB, so ten full chunks fit in one 1 MiB SendMessageBatch.
    Decompression gives back the very bytes the chunker measured, so the request body is the
    same on every attempt. The chunk's rows' warnings (e.g. a dropped invalid number, reported
    with the ACCEPTED row) are taken out of `warnings` into the message."""
    warn = {str(r): warnings.pop(r) for r in chunk.rows if r in warnings} if warnings else {}
    return ChunkMessage.pack(job, flow, chunk_no, chunk.rows, chunk.calls_json, warn).to_json()


@dataclass
class IngestService:
    """An object → its job, its rows validated, its valid calls in chunks on SQS (the clients
    and the store are passed in: `wiring.ingest_service()` on AWS, fakes in unit tests)."""

    settings: Settings
    store: Store
    s3: Any
    sqs: Any
    secrets: FlowSecrets
    finisher: ReportTrigger  # the report requests (reporting.py), or a JobFinisher writing in-line
    throttle: Callable[[], None] | None = None  # the local runner's back-pressure on a shallow emulated queue
    clock: Callable[[], float] = time.time

    @property
    def correlation_name(self) -> str:
        return f"$flow.key.{self.settings.correlation_key}"

    # ------------------------------------------------------------------ entry point
    def ingest(self, obj: ObjectRef, remaining_s: Callable[[], float]) -> IngestResult:
        obj, head, missing = self._resolve(obj)
        job = obj.job_id
        lease = max(0.0, remaining_s()) + LEASE_SLACK_S
        claim = self.store.jobs.claim_object(obj.identity, job, lease, self.clock())
        if claim == "duplicate":
            logger.info("duplicate notification ignored", extra={"job": job, "key": obj.key})
            return IngestResult("duplicate", job)
        meta = self._job(job)
        if meta and meta.ingest_done:  # the last run died after finishing: only the report may be owed
            self.store.jobs.renew_object(obj.identity, 0, done=True)
            if not meta.completed:
                self.finisher.settled(job, meta)
            return IngestResult("duplicate", job)
        try:
            result = self._run(obj, job, meta, head, missing, remaining_s)
        except Exception:
            # Let the next attempt (Lambda retry of the async S3 invoke) resume at once.
            self.store.jobs.renew_object(obj.identity, -1)
            raise
        if result.status == "paused":
            self.store.jobs.renew_object(obj.identity, -1)  # the continuation may claim it at once
        else:
            self.store.jobs.renew_object(obj.identity, 0, done=True)
        return result

    def fail(self, obj: ObjectRef, reason: str) -> IngestResult:
        """End the object's job after Lambda gave up on it (the async invoke's on-failure
        destination): a whole-file rejection when nothing was queued yet, else the unsent rest
        is cancelled. Either way the report and the completion event follow."""
        try:
            obj, head, _ = self._resolve(obj)
        except ClientError:
            head = None
        job = obj.job_id
        meta = self._job(job)
        if meta and meta.completed:
            return IngestResult("duplicate", job)
        count("IngestFailed", 1)
        logger.error("ingest failed", extra={"job": job, "key": obj.key, "reason": reason})
        self.store.jobs.renew_object(obj.identity, 0, done=True)  # nothing retries it any more
        if meta and meta.ingest_done:  # everything was queued; only the report was owed
            self.finisher.settled(job, meta)
            return IngestResult("done", job, reason=reason)
        if meta is None:
            meta = self._create_job(obj, job, head)
        return self._end_early(job, meta, reason)

    def cancel_key(self, obj: ObjectRef, reason: str, version: str | None = None) -> list[str]:
        """Cancel the active jobs of a deleted key (of one version when `version` is given):
        dispatch sends nothing more for them, their unsent rows end CANCELLED."""
        done: list[str] = []
        seen: set[str] = set()
        for key in obj.candidates():
            for item in self.store.jobs.jobs_for_key(obj.bucket, key):
                job = str(item.get("job", ""))
                if not job or job in seen or (version and item.get("version") and item["version"] != version):
                    continue
                seen.add(job)
                if self.store.jobs.cancel_job(job, reason):
                    done.append(job)
                    meta = self._job(job)
                    if meta and meta.ingest_done:  # every chunk queued: settling them finishes the job
                        self.finisher.settled(job, meta)
        if done:
            logger.info("jobs cancelled", extra={"key": obj.key, "jobs": done, "reason": reason})
            count("JobsCancelled", len(done))
        return done

    # ------------------------------------------------------------------ the work
    def _job(self, job: str) -> Job | None:
        item = self.store.jobs.get_job(job)
        return None if item is None else Job.from_item(item)

    def _resolve(self, obj: ObjectRef) -> tuple[ObjectRef, dict | None, str | None]:
        """The object as it exists: the first of its candidate keys that S3 knows (HeadObject),
        with its head; or (obj, None, S3's error code) when none resolves."""
        extra = {"VersionId": obj.version_id} if obj.version_id else {}
        first: str | None = None
        for key in obj.candidates():
            try:
                head = self.s3.head_object(Bucket=obj.bucket, Key=key, **extra)
            except ClientError as err:
                code = _error_code(err)
                if code not in MISSING_CODES:
                    raise
                first = first or code
                continue
            return replace(obj, key=key), head, None
        return obj, None, first

    def _key_deleted(self, obj: ObjectRef) -> bool:
        """Is the key's current version a delete marker? (The version we read may still exist.)"""
        try:
            self.s3.head_object(Bucket=obj.bucket, Key=obj.key)
        except ClientError as err:
            headers = err.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            return _error_code(err) in MISSING_CODES and str(headers.get("x-amz-delete-marker")).lower() == "true"
        return False

    def _cancel_marker_since(self, obj: ObjectRef, head: dict | None) -> str:
        """The key of a `cancel/` marker for this file uploaded after it (or within the same
        second: S3 keeps LastModified to the second), or "". Two HEADs per new job."""
        uploaded = self._upload_time(obj, head).replace(microsecond=0)
        short = obj.key[len(INCOMING):] if obj.key.startswith(INCOMING) else obj.key
        for marker in dict.fromkeys((CANCEL_PREFIX + short, CANCEL_PREFIX + obj.key)):
            if len(marker.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:  # no such object can exist
                continue  # (S3 would answer 400 KeyTooLong, not 404)
            try:
                got = self.s3.head_object(Bucket=obj.bucket, Key=marker)
            except ClientError as err:
                if _error_code(err) in MISSING_CODES:
                    continue
                raise
            when = got.get("LastModified")
            if isinstance(when, datetime) and when >= uploaded:
                return marker
        return ""

    def _missing_reason(self, obj: ObjectRef, code: str) -> str:
        if code in ("405", "MethodNotAllowed"):
            what = "the version is a delete marker"
        elif code in ("404", "NotFound"):
            what = "NoSuchVersion" if obj.version_id else "NoSuchKey"
        else:
            what = code
        return f"the object no longer exists ({what}): it was deleted before it could be read"

    def _upload_time(self, obj: ObjectRef, head: dict | None) -> datetime:
        when = parse_event_time(obj.event_time)
        if when is None and head and isinstance(head.get("LastModified"), datetime):
            when = head["LastModified"]
        if when is None:
            when = datetime.fromtimestamp(self.clock(), UTC)
        return when.astimezone(UTC)

    def _create_job(self, obj: ObjectRef, job: str, head: dict | None) -> Job:
        """The job's META item and its KEY# index entry, once. The report's name is fixed here:
        the key and the upload time, made unique among the key's reports (two uploads within
        one millisecond, or an event time with whole seconds only, get the next free one)."""
        uploaded = self._upload_time(obj, head)
        stamp_at = uploaded
        for _ in range(1000):
            if self.store.jobs.claim_report_name(obj.bucket, obj.key, upload_stamp(stamp_at), job):
                break
            stamp_at += timedelta(milliseconds=1)
        csv_key, summary_key = report_keys(obj.key, upload_stamp(stamp_at))
        size = int((head or {}).get("ContentLength") or obj.size or 0)
        item = {"bucket": obj.bucket, "key": obj.key, "version": obj.version_id or "", "etag": obj.etag or "",
                "size": size, "created_at": int(self.clock()), "uploaded_at": uploaded.isoformat(timespec="milliseconds"),
                "report_csv_key": csv_key, "report_summary_key": summary_key, "status": JobStatus.VALIDATING.value,
                "checkpoint_row": 0, "next_chunk": 0, "chunks_settled": 0, "api_requests": 0, "ingest_done": False,
                **request_origin(obj.key, (head or {}).get("Metadata"))}
        meta = Job.from_item(item if self.store.jobs.create_job(job, item) else self.store.jobs.get_job(job) or item)
        self.store.jobs.index_job(obj.bucket, obj.key, job, {"version": obj.version_id or "", "uploaded_at": meta.uploaded_at})
        return meta

    def _open(self, obj: ObjectRef) -> tuple[Any, dict]:
        kwargs: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
        if obj.version_id:
            kwargs["VersionId"] = obj.version_id
        resp = self.s3.get_object(**kwargs)
        return resp["Body"], resp

    def _parse_options(self, metadata: dict | None = None) -> ParseOptions:
        """The reader's options: the settings' caps, and the object's own column mapping
        (S3 metadata ``phone-columns`` / ``id-column``, docs/contact-files.md "Mapping")."""
        from .contacts import mapping_from_metadata, parse_options  # noqa: PLC0415 - kept in this hunk

        return parse_options(self.settings, **mapping_from_metadata(metadata))

    def _run(self, obj: ObjectRef, job: str, meta: Job | None, head: dict | None, missing: str | None,
             remaining_s: Callable[[], float]) -> IngestResult:
        new = meta is None
        if meta is None:
            meta = self._create_job(obj, job, head)
        if missing:
            return self._end_early(job, meta, self._missing_reason(obj, missing))
        if new and obj.version_id and self._key_deleted(obj):
            # The delete's event may have come first (EventBridge does not keep order), when
            # there was no job to cancel yet: the file must not be sent anyway.
            return self._end_early(job, meta, "the input file was deleted before it was read")
        if new and (marker := self._cancel_marker_since(obj, head)):
            # The marker's event may have come first, when there was no job to cancel yet (its
            # answer was "not found"): the file it names must not be sent anyway.
            self.store.jobs.cancel_job(job, clean_reason(marker_reason(marker), ""))
            meta = self._job(job) or meta
        if meta.cancelled_reason and (meta.next_chunk or meta.row_count):
            # the rows are counted already: no need to read the file again to report them
            return self._end_early(job, meta, meta.cancelled_reason)
        try:
            body, got = self._open(obj)
        except ClientError as err:
            if _error_code(err) in MISSING_CODES:
                return self._end_early(job, meta, self._missing_reason(obj, _error_code(err)))
            raise
        size = int(got.get("ContentLength") or obj.size or 0)
        metadata = {k.lower(): v for k, v in (got.get("Metadata") or {}).items()}
        stream = _Deadline(body, remaining_s, self.settings.ingest_time_margin_s)
        flow, flow_source = meta.flow, meta.flow_source
        try:
            if size > self.settings.max_file_bytes:
                raise FileRejected(f"file is {size:,} bytes, larger than the configured limit of "
                                   f"{self.settings.max_file_bytes:,} bytes")
            # The reader validates the whole file first (nothing is sent from a file that turns
            # out broken at row N), then reads it again: a fresh GET of the same version.
            try:
                contacts = open_contacts(stream, obj.key, self._parse_options(metadata),
                                         stream_factory=lambda: self._open(obj)[0])
            except PrepassOutOfTime:
                body.close()
                return self._pause_prepass(job, meta)
            stream.armed = False
            if not flow:
                resolved, source = resolve_flow(metadata.get("flow-id"), contacts.flow_id, obj.key,
                                                self.settings.default_flow_id)
                if not resolved:
                    raise FileRejected("no flow for this file: give it S3 metadata 'flow-id', a 'flow-id' in "
                                       "the JSON, an incoming/<flow-id>/ prefix, or set the default flow")
                flow, flow_source = resolved, source
            self.secrets.check(flow)  # DescribeSecret: ingest never reads a security-id
        except (FileRejected, UnknownFlow) as err:
            body.close()
            return self._reject_file(job, meta, err.reason)
        if meta.status == JobStatus.VALIDATING or not meta.flow:
            row_count = int(getattr(contacts, "row_count", 0) or 0)
            meta = Job.from_item(self.store.jobs.update_job(
                job, flow=flow, flow_source=flow_source, status=JobStatus.INGESTING.value,
                row_count=row_count, lane=lane_for(row_count, self.settings)))  # fixed before any chunk is queued
        try:
            if meta.cancelled_reason:
                # Cancelled before any row was queued (a cancel/ marker or a control request that
                # came first, a deleted file): nothing is sent, and with the rows counted by the
                # validation pass every row of the report says CANCELLED, with the reason.
                return self._end_early(job, meta, meta.cancelled_reason)
            return self._stream(obj, job, meta, flow, contacts, remaining_s)
        except FileRejected as err:  # detected before any row was yielded
            return self._reject_file(job, meta, err.reason)
        finally:
            contacts.close()
            body.close()

    def _pause_prepass(self, job: str, meta: Job) -> IngestResult:
        pauses = meta.prepass_pauses + 1
        if pauses > MAX_PREPASS_PAUSES:
            return self._reject_file(job, meta, "the file could not be validated within one run of the ingest "
                                                "function: split it into smaller files")
        self.store.jobs.update_job(job, prepass_pauses=pauses)
        logger.info("ingest paused in the validation pre-pass", extra={"job": job, "pauses": pauses})
        return IngestResult("paused", job)

    def _stream(self, obj: ObjectRef, job: str, meta: Job, flow: str, contacts: Any,
                remaining_s: Callable[[], float]) -> IngestResult:
        s = self.settings
        checkpoint = meta.checkpoint_row
        next_chunk = meta.next_chunk
        rows_queued = meta.rows_queued  # counted with the checkpoint: a resumed ingest goes on from it
        chunker = Chunker(batch_size=s.batch_size, security_id_len=SECURITY_ID_LEN, flow_id=flow)
        cancelled: list[str] = []  # the job's cancelled_reason, seen on a checkpoint write
        pending: list[tuple[int, Chunk, str]] = []  # (chunk no, chunk, message body)
        rejected: list[dict] = []
        warnings: dict[int, str] = {}
        last_row = checkpoint
        n_rejected = 0

        def queue_chunks(chunks: list[Chunk]) -> None:
            nonlocal next_chunk
            for chunk in chunks:
                pending.append((next_chunk, chunk,
                                chunk_message(job, flow, next_chunk, chunk, warnings)))
                next_chunk += 1

        def send_pending(all_: bool) -> None:
            nonlocal checkpoint, rows_queued
            while pending and (all_ or len(pending) >= MAX_BATCH_ENTRIES):
                batch: list[tuple[int, Chunk, str]] = []
                size = 0
                while pending and len(batch) < MAX_BATCH_ENTRIES:
                    nbytes = len(pending[0][2].encode())
                    if batch and size + nbytes > MAX_BATCH_BYTES:
                        break
                    batch.append(pending.pop(0))
                    size += nbytes
                self._send_batch(batch, job, meta.lane)
                flush_rejected()
                checkpoint = batch[-1][1].rows[-1]
                rows_queued += sum(len(chunk.rows) for _, chunk, _ in batch)
                now = Job.from_item(self.store.jobs.update_job(job, checkpoint_row=checkpoint, rows_queued=rows_queued,
                                                          next_chunk=batch[-1][0] + 1))
                if now.cancelled_reason:
                    cancelled.append(now.cancelled_reason)
                    return

        def flush_rejected() -> None:
            if rejected:
                self.store.rows.put_rows(job, rejected)
                rejected.clear()

        rows_seen = 0
        # The calling window first (docs/calling-windows.md): a row it rejects is not looked up in
        # the suppression list and is no contact for the frequency cap's count within this file.
        windowed = (windows.screen_row(row, flow, s, self.clock()) for row in contacts.rows(start_row=checkpoint))
        for item in suppression.screen(s, self.store.rows, job, flow, windowed):
            last_row = item.row
            rows_seen += 1
            if isinstance(item, ValidRow):
                call = item.call
                call["keys"].append({"name": self.correlation_name, "value": row_ref(job, item.row)})
                if item.warnings:
                    warnings[item.row] = "; ".join(item.warnings)
                try:
                    queue_chunks(chunker.add(item.row, call))
                except CallTooLarge as err:
                    warnings.pop(item.row, None)
                    n_rejected += 1
                    rejected.append({"row": item.row, "status": Status.REJECTED.value, "cid": item.client_id,
                                     "reason": str(err)})
                if len(pending) >= MAX_BATCH_ENTRIES:
                    send_pending(False)
                    if cancelled:  # the file was deleted (or the job cancelled): send nothing more
                        flush_rejected()
                        return self._end_early(job, self._job(job) or meta, cancelled[0])
            elif isinstance(item, RejectedRow):
                n_rejected += 1
                rejected.append({"row": item.row, "status": Status.REJECTED.value, "cid": item.client_id,
                                 "reason": item.reason})
                if len(rejected) >= 500:  # row items are idempotent puts: flush any time
                    flush_rejected()
            if rows_seen % 2000 == 0 and remaining_s() < s.ingest_time_margin_s:
                # Pause: queue what is complete, drop the partial chunk (the continuation
                # rebuilds it from the same rows) and checkpoint behind the last queued chunk.
                send_pending(True)
                flush_rejected()
                if cancelled:
                    return self._end_early(job, self._job(job) or meta, cancelled[0])
                if not chunker.pending_rows:
                    checkpoint = last_row
                    self.store.jobs.update_job(job, checkpoint_row=checkpoint, next_chunk=next_chunk)
                logger.info("ingest paused", extra={"job": job, "checkpoint_row": checkpoint})
                return IngestResult("paused", job, rows=last_row, chunks=next_chunk, rejected=n_rejected)

        queue_chunks(chunker.flush())
        send_pending(True)
        flush_rejected()
        if cancelled:
            return self._end_early(job, self._job(job) or meta, cancelled[0])
        total_rows = max(last_row, checkpoint)
        count("RowsIngested", rows_seen)
        meta = Job.from_item(self.store.jobs.update_job(
            job, ingest_done=True, total_rows=total_rows, chunks_total=next_chunk, checkpoint_row=total_rows,
            next_chunk=next_chunk, status=JobStatus.DISPATCHING.value, notes=list(getattr(contacts, "notes", []) or [])))
        logger.info("ingest done", extra={"job": job, "rows": total_rows, "chunks": next_chunk})
        if meta.chunks_settled >= next_chunk:
            self.finisher.settled(job, meta)
        return IngestResult("done", job, rows=total_rows, chunks=next_chunk, rejected=n_rejected,
                            notes=list(getattr(contacts, "notes", []) or []))

    def _send_batch(self, batch: list[tuple[int, Chunk, str]], job: str, lane: str = "") -> None:
        """Queue the chunks on the job's lane (chunking.lane_for). MessageGroupId = the job: on
        AWS a standard queue whose messages carry one serves its groups fairly (SQS fair
        queues), so jobs that share a lane share it fairly too."""
        queue_url = queue_for(lane, self.settings)
        if self.throttle and queue_url == self.settings.chunk_queue_url:  # the express lane holds small jobs only
            self.throttle()
        entries = [{"Id": str(no), "MessageBody": body, "MessageGroupId": chunk_message_group(job)}
                   for no, _, body in batch]
        for attempt in range(6):
            resp = self.sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            failed = {f["Id"] for f in resp.get("Failed", [])}
            if not failed:
                count("ChunksQueued", len(batch))
                return
            entries = [e for e in entries if e["Id"] in failed]
            time.sleep(min(2.0, 0.1 * 2**attempt))
        raise RuntimeError(f"SQS refused {len(entries)} chunk messages after retries")

    def _reject_file(self, job: str, meta: Job, reason: str) -> IngestResult:
        logger.warning("file rejected", extra={"job": job, "key": meta.key, "reason": reason})
        count("FilesRejected", 1)
        self.store.jobs.update_job(job, flow=meta.flow, status=JobStatus.REJECTED.value, error=reason, ingest_done=True,
                              total_rows=0, chunks_total=0)
        self.finisher.settled(job)
        return IngestResult("rejected", job, reason=reason)

    def _end_early(self, job: str, meta: Job, reason: str) -> IngestResult:
        """End a job whose file will not be (fully) read: the object is gone, the job was
        cancelled, or Lambda gave up. Nothing queued yet: a whole-file rejection. Else the job
        is cancelled with this reason (dispatch sends nothing more) and every row after the
        last queued chunk is reported CANCELLED; the report follows once the queued chunks
        are settled."""
        if meta.next_chunk == 0 and not meta.cancelled_reason:
            return self._reject_file(job, meta, reason)
        self.store.jobs.cancel_job(job, reason)
        total = max(meta.row_count, meta.checkpoint_row)
        chunks = meta.next_chunk
        meta = Job.from_item(self.store.jobs.update_job(job, ingest_done=True, total_rows=total, chunks_total=chunks,
                                                   status=JobStatus.DISPATCHING.value))
        logger.warning("ingest ended early", extra={"job": job, "reason": reason, "chunks": chunks})
        self.finisher.settled(job, meta)
        return IngestResult("cancelled", job, rows=total, chunks=chunks, reason=reason)
