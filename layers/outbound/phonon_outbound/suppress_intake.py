"""What fills the suppression list through the ingest function (docs/suppression.md):

- a file dropped under `suppress/` (the contact files' formats, read by the contact reader):
  its numbers and client-identifiers are added; under `suppress/remove/` they are taken off.
  A flow-id segment right after the prefix (`suppress/<flow-id>/…`, `suppress/remove/<flow-id>/…`)
  limits the entries to that flow; S3 metadata `hold-hours` makes them temporary holds. A
  small report, `reports/<key>.<upload time>.suppress.json`, says how many were added;
- an EventBridge event with detail-type `Suppression Requested`.

`handle_event(event)` is the ingest handler's one call: it picks these out of any event the
handler gets (S3 notification, EventBridge) and returns what it did ([] for anything else).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from .flows import FLOW_ID_RE
from .observability import count, logger
from .suppression import ALL_FLOWS, CLIENT, NUMBER, SuppressionList, service

PREFIX = "suppress/"
REMOVE_PREFIX = "suppress/remove/"
DETAIL_TYPE = "Suppression Requested"
MAX_EVENT_ENTRIES = 1000
MAX_HOLD_HOURS = 24 * 3650


def scope_of(key: str) -> tuple[bool, str]:
    """(remove?, scope) of a key under suppress/."""
    remove = key.startswith(REMOVE_PREFIX)
    rest = key[len(REMOVE_PREFIX if remove else PREFIX):].split("/")
    scope = rest[0] if len(rest) >= 2 and FLOW_ID_RE.fullmatch(rest[0]) is not None else ALL_FLOWS
    return remove, scope


def _suppress_objects(event: dict) -> list[tuple[str, str, str | None, str | None]]:
    """(bucket, key, version, event time) of the objects created under suppress/."""
    out: list[tuple[str, str, str | None, str | None]] = []
    if event.get("source") == "aws.s3" and event.get("detail-type") == "Object Created":
        d = event.get("detail") or {}
        obj, bucket = d.get("object") or {}, d.get("bucket") or {}
        if isinstance(obj, dict) and isinstance(bucket, dict) and isinstance(obj.get("key"), str):
            out.append((str(bucket.get("name", "")), obj["key"], obj.get("version-id") or None, event.get("time")))
    elif isinstance(event.get("Records"), list):
        for r in event["Records"]:
            if not isinstance(r, dict) or r.get("eventSource") != "aws:s3" \
                    or not str(r.get("eventName", "")).startswith("ObjectCreated:"):
                continue
            s3 = r.get("s3") or {}
            key = unquote_plus(str((s3.get("object") or {}).get("key", "")))
            out.append((str((s3.get("bucket") or {}).get("name", "")), key,
                        (s3.get("object") or {}).get("versionId") or None, r.get("eventTime")))
    return [o for o in out if o[1].startswith(PREFIX) and not o[1].endswith("/")]


def handle_event(event: Any, settings: Any = None, s3: Any = None, lst: SuppressionList | None = None) -> list[dict]:
    """Handle the suppression parts of an event; [] when there are none."""
    if not isinstance(event, dict):
        return []
    objects = _suppress_objects(event)
    requested = event.get("detail-type") == DETAIL_TYPE and isinstance(event.get("detail"), dict)
    if not objects and not requested:
        return []
    from . import wiring  # noqa: PLC0415

    settings = settings or wiring.settings()
    lst = lst if lst is not None else service(settings)
    if lst is None:
        logger.warning("suppression request ignored: no suppression table is configured")
        return [{"status": "ignored", "reason": "suppression is not configured"}]
    if requested:
        return [apply_request(lst, event["detail"], f"event from {str(event.get('source', ''))[:64]}")]
    s3 = s3 if s3 is not None else wiring.client("s3")
    return [import_object(lst, settings, s3, bucket, key, version, when) for bucket, key, version, when in objects]


def apply_request(lst: SuppressionList, detail: dict, source: str) -> dict:
    """`{"action": "add"|"remove", "numbers": [...], "client-identifiers": [...], "flow": "…",
    "hold-hours": 48}`: bad values are counted, never echoed."""
    action = str(detail.get("action", "add")).lower()
    numbers = detail.get("numbers") or []
    cids = detail.get("client-identifiers") or []
    if action not in ("add", "remove") or not isinstance(numbers, list) or not isinstance(cids, list):
        return {"status": "refused", "reason": "detail must have action add|remove and lists numbers / "
                                               "client-identifiers"}
    if len(numbers) + len(cids) > MAX_EVENT_ENTRIES:
        return {"status": "refused", "reason": f"at most {MAX_EVENT_ENTRIES} entries per event"}
    flow = str(detail.get("flow") or ALL_FLOWS)
    if flow != ALL_FLOWS and FLOW_ID_RE.fullmatch(flow) is None:
        return {"status": "refused", "reason": "flow is not a Phonon flow id (8 letters or digits)"}
    expires = _hold(detail.get("hold-hours"), lst.clock())
    keys, bad = subject_keys(lst, [(NUMBER, str(n)) for n in numbers] + [(CLIENT, str(c)) for c in cids])
    done = (lst.add_keys(keys, flow, source, expires) if action == "add" else lst.remove_keys(keys, flow))
    count("SuppressionEntriesAdded" if action == "add" else "SuppressionEntriesRemoved", done)
    logger.info("suppression request applied", extra={"action": action, "entries": done, "invalid": bad})
    return {"status": "done", "action": action, "entries": done, "invalid": bad}


def _hold(value: Any, now: float) -> float | None:
    try:
        hours = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        hours = None
    if hours is None or not 0 < hours <= MAX_HOLD_HOURS:
        return None
    return now + hours * 3600


def subject_keys(lst: SuppressionList, subjects: Iterable[tuple[str, str]]) -> tuple[list[str], int]:
    """The item keys of (kind, value) pairs, and how many values were not valid."""
    keys, bad = [], 0
    for kind, value in subjects:
        try:
            keys.append(lst.subject_key(kind, value))
        except ValueError:
            bad += 1
    return keys, bad


def import_object(lst: SuppressionList, settings: Any, s3: Any, bucket: str, key: str, version: str | None,
                  when: str | None) -> dict:
    """Read one file under suppress/ and add (or remove) its entries; write its small report."""
    from .contacts import FileRejected  # noqa: PLC0415

    remove, scope = scope_of(key)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, **({"VersionId": version} if version else {})}
    result: dict[str, Any] = {"file": key, "action": "remove" if remove else "add",
                              "flow": "all" if scope == ALL_FLOWS else scope}
    try:
        got = s3.get_object(**kwargs)
        metadata = {k.lower(): v for k, v in (got.get("Metadata") or {}).items()}
        expires = _hold(metadata.get("hold-hours"), lst.clock())
        subjects, rows, rejected = read_subjects(got["Body"], key, settings, metadata,
                                                 lambda: s3.get_object(**kwargs)["Body"])
        keys, bad = subject_keys(lst, subjects)
        source = f"file {key}"
        done = lst.remove_keys(keys, scope) if remove else lst.add_keys(keys, scope, source, expires)
        result.update({"rows": rows, "rejected_rows": rejected + bad, "entries": done,
                       **({"hold_until": datetime.fromtimestamp(expires, UTC).isoformat()} if expires else {})})
        count("SuppressionEntriesRemoved" if remove else "SuppressionEntriesAdded", done)
    except FileRejected as err:
        result.update({"error": err.reason, "entries": 0})
    except s3.exceptions.NoSuchKey:
        result.update({"error": "the file no longer exists", "entries": 0})
    stamp = (when or datetime.now(UTC).isoformat()).replace(":", "").replace("-", "")
    report = f"reports/{key}.{stamp}.suppress.json"
    s3.put_object(Bucket=bucket, Key=report, Body=json.dumps(result, indent=2).encode(),
                  ContentType="application/json")
    logger.info("suppression file read", extra={"key": key, "entries": result.get("entries", 0),
                                                "action": result["action"]})
    return {**result, "report": report}


def read_subjects(body: Any, name: str, settings: Any, metadata: dict | None = None,
                  reopen: Any = None) -> tuple[list[tuple[str, str]], int, int]:
    """([(kind, value)], rows, rejected rows) of a file in the contact files' formats: every
    valid row's numbers, and its client-identifier when the file has one (not one the reader
    made up from the row number)."""
    from .contacts import RejectedRow, ValidRow, mapping_from_metadata, open_contacts, parse_options  # noqa: PLC0415

    contacts = open_contacts(body, name, parse_options(settings, **mapping_from_metadata(metadata or {})),
                             stream_factory=reopen)
    stem = getattr(contacts, "_stem", None)
    subjects: list[tuple[str, str]] = []
    rows = rejected = 0
    try:
        for item in contacts.rows():
            rows += 1
            if isinstance(item, ValidRow):
                subjects += [(NUMBER, "+" + str(n).lstrip("+")) for n in item.call.get("contact-numbers", [])]
                if item.client_id and item.client_id != f"{stem}-{item.row}":
                    subjects.append((CLIENT, item.client_id))
            elif isinstance(item, RejectedRow):
                rejected += 1
    finally:
        contacts.close()
    return subjects, rows, rejected
