"""Phonon's flow-end webhook → the results item keyed by phonon-uuid.

Phonon pushes one JSON document per flow execution (phonon-api.md): `phonon-uuid`, `keys`
(the flow variables we sent, among them our correlation key), `callDetails[]` per attempt and,
in newer versions, `smsDetails[]` / `emailDetails[]`; some versions wrap it in `{"body": …}`;
fields appear only when there is data. Parsing is lenient on purpose: a push we cannot match
to a row is still stored (as unmatched) and acknowledged, so Phonon does not retry it forever.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from .observability import count, logger
from .store import Store, decode_outcomes


class WebhookError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def check(self, authorization: str | None) -> bool:
        if not authorization or not authorization.lower().startswith("basic "):
            return False
        try:
            user, _, pw = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        ok_user = hmac.compare_digest(user.encode(), self.username.encode())
        ok_pw = hmac.compare_digest(pw.encode(), self.password.encode())
        return ok_user and ok_pw

    @classmethod
    def from_secret(cls, raw: str | bytes) -> Credentials:
        data = json.loads(raw)
        return cls(str(data["username"]), str(data["password"]))


def _first(d: dict, *names: str) -> Any:
    for n in names:
        if d.get(n) not in (None, ""):
            return d[n]
    return None


def parse_push(body: str | bytes) -> dict:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookError(400, "body is not JSON") from None
    if isinstance(doc, dict) and isinstance(doc.get("body"), (dict, str)) and "phonon-uuid" not in doc:
        inner = doc["body"]
        doc = json.loads(inner) if isinstance(inner, str) else inner
    if not isinstance(doc, dict):
        raise WebhookError(400, "body is not a JSON object")
    uuid = _first(doc, "phonon-uuid", "phononUuid", "phononUUID", "uuid")
    if not uuid:
        raise WebhookError(400, "no phonon-uuid in the push")
    return doc


def outcome_of(doc: dict) -> dict:
    """The call's outcome in our own attribute names."""
    out: dict[str, Any] = {}
    attempts = doc.get("callDetails") or []
    if isinstance(attempts, list) and attempts:
        out["attempts"] = len(attempts)
        connected = [a for a in attempts if isinstance(a, dict) and (a.get("connectTime") or _num(a.get("duration")))]
        out["connected"] = bool(connected)
        last = connected[-1] if connected else attempts[-1]
        if isinstance(last, dict):
            if last.get("duration") not in (None, ""):
                out["duration"] = _num(last.get("duration"))  # as Phonon sends it (its samples: ms)
            if last.get("hangupCause"):
                out["hangup_cause"] = str(last["hangupCause"])
            if last.get("startTime"):
                out["call_start"] = str(last["startTime"])
            if last.get("endTime"):
                out["call_end"] = str(last["endTime"])
    for field, name in (("smsDetails", "sms_status"), ("emailDetails", "email_status")):
        details = doc.get(field) or []
        if isinstance(details, list) and details and isinstance(details[-1], dict):
            status = _first(details[-1], "deliveryStatus", "status")
            if status:
                out[name] = str(status)
    if doc.get("recordingUrls"):
        out["recordings"] = len(doc["recordingUrls"]) if isinstance(doc["recordingUrls"], list) else 1
    return out


def _num(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


class WebhookService:
    def __init__(self, store: Store, correlation_key: str = "OutboundRef"):
        self.store = store
        self.correlation_name = f"$flow.key.{correlation_key}"
        self.correlation_key = correlation_key
        self._jobs: dict[str, dict] = {}  # a job's key and flow never change: one read per job
        self._outcomes: dict[tuple[str, int], tuple[int, dict[int, dict]]] = {}

    def _job(self, job: str) -> dict:
        """The job's flow, key and (once ingest is done) row count; read once per job after that."""
        meta = self._jobs.get(job)
        if meta is None:
            meta = self.store.get_job(job) or {}
            if meta.get("ingest_done"):
                self._jobs[job] = {"flow": meta.get("flow"), "key": meta.get("key"), "ingest_done": True,
                                   "total_rows": int(meta.get("total_rows", 0))}
        return meta

    @staticmethod
    def _has_row(meta: dict, row: int) -> bool:
        """Rows are numbered from 1; once ingest is done we know the last one. A push naming
        another row must not invent a row in the report."""
        return row >= 1 and (not meta.get("ingest_done") or row <= int(meta.get("total_rows", 0)))

    def correlation_ref(self, doc: dict) -> str | None:
        keys = doc.get("keys") or []
        if isinstance(keys, dict):
            keys = [{"name": k, "value": v} for k, v in keys.items()]
        for k in keys if isinstance(keys, list) else []:
            if isinstance(k, dict) and k.get("name") in (self.correlation_name, self.correlation_key):
                return str(k.get("value", ""))
        return None

    def handle(self, body: str | bytes) -> dict:
        doc = parse_push(body)
        uuid = str(_first(doc, "phonon-uuid", "phononUuid", "phononUUID", "uuid"))
        attrs: dict[str, Any] = {**outcome_of(doc), "status": "COMPLETED", "webhook_at": int(time.time())}
        ref = self.correlation_ref(doc)
        matched = False
        if ref and "." in ref:
            job, _, row = ref.rpartition(".")
            meta = self._job(job) if row.isascii() and row.isdigit() and len(row) <= 12 else {}
            if meta and self._has_row(meta, int(row)):
                matched = True
                row_item = self.store.set_row_uuid(job, int(row), uuid)  # the report's phonon-uuid
                info = row_item if row_item.get("status") else self._outcome(job, int(row))
                attrs.update({"flow-id": meta.get("flow"), "job": job, "file": meta.get("key"), "row": int(row)})
                if info:
                    attrs.update({"client-identifier": info.get("cid"), "request-id": info.get("request_id"),
                                  "numbers": info.get("numbers")})
                else:  # the dispatcher has not recorded its answer yet (or lost it)
                    logger.info("flow-end push for a row whose chunk is not settled yet", extra={"job": job})
        if ref:
            attrs["ref"] = ref  # kept even when unmatched, for reconciliation
        if not matched:
            attrs["unmatched"] = True
            count("WebhooksUnmatched", 1)
            logger.warning("flow-end push matched no row", extra={"phonon_uuid": uuid, "has_ref": bool(ref)})
        self.store.upsert_result(uuid, attrs)
        count("WebhooksReceived", 1)
        return {"phonon-uuid": uuid, "matched": matched}

    def _outcome(self, job: str, row: int) -> dict | None:
        """The row's outcome from its chunk's outcome item. Pushes for one chunk arrive close
        together, so the last few decoded items are kept (a chunk's client-identifiers, numbers
        and request-id do not change once it is settled)."""
        for (cached_job, first), (last, rows) in self._outcomes.items():
            if cached_job == job and first <= row <= last:
                return rows.get(row)
        item = self.store.find_outcome(job, row)
        if item is None:
            return None
        rows = {int(r["row"]): r for r in decode_outcomes(item["outcomes"])}
        self._outcomes[(job, min(rows))] = (int(item["last_row"]), rows)
        while len(self._outcomes) > 32:
            self._outcomes.pop(next(iter(self._outcomes)))
        return rows.get(row)
