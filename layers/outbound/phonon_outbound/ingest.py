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

import base64
import gzip
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from .chunking import CallTooLarge, Chunk, Chunker
from .contacts import FileRejected, ParseOptions, RejectedRow, ValidRow, open_contacts
from .flows import FlowSecrets, UnknownFlow, resolve_flow
from .jobs import JobFinisher
from .observability import count, logger
from .settings import Settings
from .store import Store

MAX_BATCH_BYTES = 1_000_000  # SendMessageBatch carries at most 1 MiB in all; keep a margin
MAX_BATCH_ENTRIES = 10
INGEST_LEASE_S = 16 * 60  # longer than one Lambda run: a live ingest is never taken over


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None

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
                   size=obj.get("size"))


@dataclass
class IngestResult:
    status: str  # done | paused | duplicate | rejected
    job: str
    rows: int = 0
    chunks: int = 0
    rejected: int = 0
    reason: str = ""
    notes: list[str] = field(default_factory=list)


def chunk_message(job: str, flow: str, chunk_no: int, chunk: Chunk, warnings: dict[int, str] | None = None) -> str:
    """The SQS body of one chunk (no security-id). The calls, correlation key included, travel
    gzip-compressed (level 1) and base64-encoded: a 500-call chunk shrinks from ~150 KB to
    ~20 KB, so ten full chunks fit in one 1 MiB SendMessageBatch. Decompression gives back
    the very bytes the chunker measured, so the request body is the same on every attempt."""
    doc: dict = {"v": 2, "job": job, "flow": flow, "chunk": chunk_no, "rows": chunk.rows,
                 "calls_gz": base64.b64encode(gzip.compress(chunk.calls_json, compresslevel=1, mtime=0)).decode()}
    if warnings:
        warn = {str(r): warnings.pop(r) for r in chunk.rows if r in warnings}
        if warn:
            doc["warn"] = warn  # e.g. a dropped invalid number: reported with the ACCEPTED row
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


class IngestService:
    def __init__(self, settings: Settings, store: Store, s3: Any, sqs: Any, secrets: FlowSecrets,
                 finisher: JobFinisher, throttle: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.store = store
        self.s3 = s3
        self.sqs = sqs
        self.secrets = secrets
        self.finisher = finisher
        self.throttle = throttle  # the local runner's back-pressure on a shallow emulated queue
        self.clock = clock

    @property
    def correlation_name(self) -> str:
        return f"$flow.key.{self.settings.correlation_key}"

    # ------------------------------------------------------------------ entry point
    def ingest(self, obj: ObjectRef, remaining_s: Callable[[], float]) -> IngestResult:
        job = obj.job_id
        claim = self.store.claim_object(obj.identity, job, INGEST_LEASE_S, self.clock())
        if claim == "duplicate":
            logger.info("duplicate notification ignored", extra={"job": job, "key": obj.key})
            return IngestResult("duplicate", job)
        meta = self.store.get_job(job) if claim == "resume" else None
        if meta and meta.get("ingest_done"):  # the last run died after finishing: only the report may be owed
            self.store.renew_object(obj.identity, 0, done=True)
            if not meta.get("completed"):
                self.finisher.maybe_finalize(job, meta)
            return IngestResult("duplicate", job)
        try:
            result = self._run(obj, job, meta, remaining_s)
        except Exception:
            # Let the next attempt (Lambda retry of the async S3 invoke) resume at once.
            self.store.renew_object(obj.identity, -1)
            raise
        if result.status == "paused":
            self.store.renew_object(obj.identity, -1)  # the continuation may claim it at once
        else:
            self.store.renew_object(obj.identity, 0, done=True)
        return result

    # ------------------------------------------------------------------ the work
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

    def _run(self, obj: ObjectRef, job: str, meta: dict | None, remaining_s: Callable[[], float]) -> IngestResult:
        started = self.clock()
        body, head = self._open(obj)
        size = int(head.get("ContentLength") or obj.size or 0)
        metadata = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        base = {"bucket": obj.bucket, "key": obj.key, "version": obj.version_id or "", "etag": obj.etag or "",
                "size": size, "created_at": int(started)}
        try:
            if size > self.settings.max_file_bytes:
                raise FileRejected(f"file is {size:,} bytes, larger than the configured limit of "
                                   f"{self.settings.max_file_bytes:,} bytes")
            # The reader validates the whole file first (nothing is sent from a file that turns
            # out broken at row N), then reads it again: a fresh GET of the same version.
            contacts = open_contacts(body, obj.key, self._parse_options(metadata),
                                     stream_factory=lambda: self._open(obj)[0])
            if meta:
                flow = meta["flow"]
            else:
                flow, source = resolve_flow(metadata.get("flow-id"), contacts.flow_id, obj.key,
                                            self.settings.default_flow_id)
                if not flow:
                    raise FileRejected("no flow for this file: give it S3 metadata 'flow-id', a 'flow-id' in "
                                       "the JSON, an incoming/<flow-id>/ prefix, or set the default flow")
                base["flow_source"] = source
            security_id = self.secrets.security_id(flow)
        except (FileRejected, UnknownFlow) as err:
            body.close()
            return self._reject_file(job, base, err.reason)
        if not meta:
            meta = {**base, "flow": flow, "status": "INGESTING", "checkpoint_row": 0, "next_chunk": 0,
                    "chunks_settled": 0, "api_requests": 0, "ingest_done": False}
            self.store.put_job(job, meta)
        try:
            return self._stream(obj, job, meta, flow, security_id, contacts, remaining_s)
        except FileRejected as err:  # detected before any row was yielded
            return self._reject_file(job, {**base, **meta}, err.reason)
        finally:
            contacts.close()
            body.close()

    def _stream(self, obj: ObjectRef, job: str, meta: dict, flow: str, security_id: str, contacts: Any,
                remaining_s: Callable[[], float]) -> IngestResult:
        s = self.settings
        checkpoint = int(meta.get("checkpoint_row", 0))
        next_chunk = int(meta.get("next_chunk", 0))
        chunker = Chunker(batch_size=s.batch_size, security_id_len=len(security_id), flow_id=flow)
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
            nonlocal checkpoint
            while pending and (all_ or len(pending) >= MAX_BATCH_ENTRIES):
                batch, size = [], 0
                while pending and len(batch) < MAX_BATCH_ENTRIES:
                    nbytes = len(pending[0][2].encode())
                    if batch and size + nbytes > MAX_BATCH_BYTES:
                        break
                    batch.append(pending.pop(0))
                    size += nbytes
                self._send_batch(batch)
                flush_rejected()
                checkpoint = batch[-1][1].rows[-1]
                self.store.update_job(job, checkpoint_row=checkpoint, next_chunk=batch[-1][0] + 1)

        def flush_rejected() -> None:
            if rejected:
                self.store.put_rows(job, rejected)
                rejected.clear()

        rows_seen = 0
        for item in contacts.rows(start_row=checkpoint):
            last_row = item.row
            rows_seen += 1
            if isinstance(item, ValidRow):
                call = item.call
                call["keys"].append({"name": self.correlation_name, "value": f"{job}.{item.row}"})
                if item.warnings:
                    warnings[item.row] = "; ".join(item.warnings)
                try:
                    queue_chunks(chunker.add(item.row, call))
                except CallTooLarge as err:
                    warnings.pop(item.row, None)
                    n_rejected += 1
                    rejected.append({"row": item.row, "status": "REJECTED", "cid": item.client_id,
                                     "reason": str(err)})
                if len(pending) >= MAX_BATCH_ENTRIES:
                    send_pending(False)
            elif isinstance(item, RejectedRow):
                n_rejected += 1
                rejected.append({"row": item.row, "status": "REJECTED", "cid": item.client_id, "reason": item.reason})
                if len(rejected) >= 500:  # row items are idempotent puts: flush any time
                    flush_rejected()
            if rows_seen % 2000 == 0 and remaining_s() < s.ingest_time_margin_s:
                # Pause: queue what is complete, drop the partial chunk (the continuation
                # rebuilds it from the same rows) and checkpoint behind the last queued chunk.
                send_pending(True)
                flush_rejected()
                if not chunker.pending_rows:
                    checkpoint = last_row
                    self.store.update_job(job, checkpoint_row=checkpoint, next_chunk=next_chunk)
                logger.info("ingest paused", extra={"job": job, "checkpoint_row": checkpoint})
                return IngestResult("paused", job, rows=last_row, chunks=next_chunk, rejected=n_rejected)

        queue_chunks(chunker.flush())
        send_pending(True)
        flush_rejected()
        total_rows = max(last_row, checkpoint)
        count("RowsIngested", rows_seen)
        meta = self.store.update_job(job, ingest_done=True, total_rows=total_rows, chunks_total=next_chunk,
                                     checkpoint_row=total_rows, next_chunk=next_chunk, status="DISPATCHING",
                                     notes=list(getattr(contacts, "notes", []) or []))
        logger.info("ingest done", extra={"job": job, "rows": total_rows, "chunks": next_chunk})
        if int(meta.get("chunks_settled", 0)) >= next_chunk:
            self.finisher.finalize(job)
        return IngestResult("done", job, rows=total_rows, chunks=next_chunk, rejected=n_rejected,
                            notes=list(getattr(contacts, "notes", []) or []))

    def _send_batch(self, batch: list[tuple[int, Chunk, str]]) -> None:
        if self.throttle:
            self.throttle()
        entries = [{"Id": str(no), "MessageBody": body} for no, _, body in batch]
        for attempt in range(6):
            resp = self.sqs.send_message_batch(QueueUrl=self.settings.chunk_queue_url, Entries=entries)
            failed = {f["Id"] for f in resp.get("Failed", [])}
            if not failed:
                count("ChunksQueued", len(batch))
                return
            entries = [e for e in entries if e["Id"] in failed]
            time.sleep(min(2.0, 0.1 * 2**attempt))
        raise RuntimeError(f"SQS refused {len(entries)} chunk messages after retries")

    def _reject_file(self, job: str, base: dict, reason: str) -> IngestResult:
        logger.warning("file rejected", extra={"job": job, "key": base.get("key"), "reason": reason})
        count("FilesRejected", 1)
        self.store.put_job(job, {**base, "created_at": int(base.get("created_at") or self.clock()),
                                 "flow": base.get("flow", ""), "status": "REJECTED", "error": reason,
                                 "ingest_done": True, "total_rows": 0, "chunks_total": 0, "chunks_settled": 0,
                                 "api_requests": 0})
        self.finisher.finalize(job)
        return IngestResult("rejected", job, reason=reason)
