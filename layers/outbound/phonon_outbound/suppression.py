"""The suppression list and the per-number frequency cap (docs/suppression.md).

Numbers and client-identifiers that must not be contacted live in their own DynamoDB table,
one item per subject, keyed by a salted hash (HMAC-SHA-256 with the salt from Secrets
Manager as the key, over the number's E.164 form or the identifier's text): the table never
holds a plain number, so it is no second copy of the customers' numbers. An item holds one
entry per scope (`*` = every flow, else a flow id), each with its source, the time it was
added and an optional expiry (a temporary hold).

| item key | what |
|---|---|
| `n#<hash of +E.164>` | a number on the list: `scopes` = {scope: {src, at[, exp]}}, version `v` |
| `c#<hash of client-identifier>` | a client-identifier on the list, same attributes |
| `f#<hash of +E.164>` | the frequency cap's log of one number: `r:<job>.<row>` = {t: epoch s, f: flow} per contact |

Where the list is consulted:
- ingest (`screen`): every valid row, a window of rows at a time (BatchGetItem, 100 keys a
  request); a suppressed row is written SUPPRESSED with its reason and never queued;
- dispatch (`before_send`): the rows of a request once more, right before it is posted (after
  any rate-limit wait), so a number added while a campaign runs is not called after that; the
  rows that go out are counted for the frequency cap there and then (see `Cap`).

Reasons name the entry's source, scope and time, never the number.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .dtmf import keys_by_attempt
from .observability import count, logger, mask_numbers, register_secret
from .records import row_ref
from .status import Status
from .store.common import (
    plain as _plain,  # DynamoDB Decimals to int / float, as the state table's reader does
)

ALL_FLOWS = "*"
NUMBER, CLIENT, CAP_LOG = "n", "c", "f"
KINDS = {NUMBER: "number", CLIENT: "client-identifier"}
BATCH_GET_KEYS = 100  # BatchGetItem's limit per request
SCREEN_WINDOW = 500  # rows looked up together at ingest (one chunk's worth)
MAX_UPDATE_TRIES = 8
CONTACT_PREFIX = "r:"
_SOURCE_MAX = 200


# ---------------------------------------------------------------------------------- hashing
class Hasher:
    """Salted hashes of subjects. HMAC-SHA-256 with the salt as its key is the standard way to
    salt SHA-256 (hashlib gives it ready-made); `hash(NUMBER, "+919812345670")`."""

    # A salt read through a function (Secrets Manager) is kept this long: every row hashes
    # one or more keys, and the read (a cache lookup, JSON, the log masking's registration) is
    # the same for all of them; a rotated salt is still picked up within a minute.
    SALT_KEPT_S = 60.0

    def __init__(self, salt: str | Callable[[], str], clock: Callable[[], float] = time.monotonic):
        self._salt = salt
        self._clock = clock
        self._kept: tuple[bytes, float] | None = None

    @property
    def salt(self) -> bytes:
        if not callable(self._salt):
            return self._checked(self._salt)
        now = self._clock()
        if self._kept is None or now - self._kept[1] >= self.SALT_KEPT_S:
            self._kept = (self._checked(self._salt()), now)
        return self._kept[0]

    @staticmethod
    def _checked(value: str) -> bytes:
        if not value:
            raise RuntimeError("the suppression salt is empty")
        return value.encode()

    def key(self, kind: str, subject: str) -> str:
        """The item key of a number (E.164 with `+`) or a client-identifier (its text)."""
        text = f"{kind}:{subject}".encode()
        return f"{kind}#{hmac.new(self.salt, text, hashlib.sha256).hexdigest()}"

    def number_key(self, digits: str) -> str:
        return self.key(NUMBER, "+" + digits.lstrip("+"))

    def cap_key(self, digits: str) -> str:
        return CAP_LOG + self.number_key(digits)[1:]

    def client_key(self, cid: str) -> str:
        return self.key(CLIENT, cid)


def normalize_number(text: str, region: str = "IN") -> str | None:
    """A number as written anywhere (E.164, national, grouped) → E.164 digits without `+`,
    with the contact reader's own rules; None when it is not a valid number."""
    token = str(text).strip()
    if not token:
        return None
    digits, _problem = _normalizer(region).normalize(token)
    return digits.lstrip("+") if digits else None


_normalizers: dict[str, Any] = {}


def _normalizer(region: str) -> Any:
    from .contacts.phones import PhoneNormalizer  # noqa: PLC0415 - phonenumbers only where numbers are read

    if region not in _normalizers:
        _normalizers[region] = PhoneNormalizer(region)
    return _normalizers[region]


# ---------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Cap:
    """At most `limit` contacts per number within `period_s` (rolling), for one flow's calls.

    A contact counts when its request is sent (`before_send` writes it just before the
    POST): counting then, not when Phonon's answer comes back, leaves no gap of a request's
    length in which two dispatchers could both pass the cap, and a call Phonon refuses still
    counts — the cap errs towards calling less."""

    limit: int
    period_s: float

    def describe(self) -> str:
        return f"at most {self.limit} per {_period_text(self.period_s)}"


_CAP_RE = re.compile(r"^\s*([A-Za-z0-9]{8}|\*)\s*=\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_caps(text: str) -> dict[str, Cap]:
    """`*=3/24h,AbCd1234=1/7d` → {flow or *: Cap}; ValueError naming the bad part."""
    caps: dict[str, Cap] = {}
    for part in (p for p in (text or "").split(",") if p.strip()):
        m = _CAP_RE.match(part)
        if not m:
            raise ValueError(f"frequency cap {part.strip()!r} is not FLOW=N/PERIOD (e.g. *=3/24h, AbCd1234=1/7d)")
        limit, period = int(m.group(2)), float(m.group(3)) * _UNIT_S[m.group(4)]
        if limit < 1 or period <= 0:
            raise ValueError(f"frequency cap {part.strip()!r}: N and PERIOD must be positive")
        caps[m.group(1)] = Cap(limit, period)
    return caps


def _period_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size and seconds % size == 0 or (unit != "d" and seconds >= size and seconds % size == 0):
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


# ---------------------------------------------------------------------------------- entries
@dataclass(frozen=True)
class Entry:
    key: str  # n#… / c#…
    scope: str  # * or a flow id
    source: str
    at: float
    expires: float | None = None

    @property
    def kind(self) -> str:
        return KINDS.get(self.key[:1], "?")

    def live(self, now: float) -> bool:
        return self.expires is None or self.expires > now

    def describe(self) -> str:
        scope = "all flows" if self.scope == ALL_FLOWS else f"flow {self.scope}"
        until = f", until {_when(self.expires)}" if self.expires is not None else ""
        return f"source: {self.source}, added {_when(self.at)}, {scope}{until}"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def entries_of(item: dict) -> list[Entry]:
    out = []
    for scope, e in (item.get("scopes") or {}).items():
        if isinstance(e, dict):
            exp = e.get("exp")
            out.append(Entry(str(item["pk"]), str(scope), str(e.get("src", "")), float(e.get("at", 0)),
                             float(exp) if exp is not None else None))
    return out


def clean_source(text: str) -> str:
    """A source fit for a reason: one line, bounded, phone-like numbers masked (a file name could
    carry one)."""
    return mask_numbers(" ".join(str(text).split()))[:_SOURCE_MAX]


# ---------------------------------------------------------------------------------- storage
class ListTable(Protocol):
    """Where the list lives: DynamoDB (`DynamoListTable`) or memory (`MemoryListTable`: `check`,
    the local state)."""

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]: ...

    def get(self, key: str) -> dict | None: ...

    def replace(self, key: str, item: dict, version: int | None) -> bool: ...

    def record(self, key: str, ref: str, value: dict, expires_at: int, stale: list[str]) -> None: ...

    def scan(self) -> Iterator[dict]: ...


class DynamoListTable:
    """The list's DynamoDB table (boto3 resource). Writes are UpdateItems conditional on the
    item's version (`v`), so two writers never lose each other's entries; nothing is deleted
    (an emptied item expires by TTL), so no function needs DeleteItem."""

    def __init__(self, table: Any):
        self.table = table
        self.client = table.meta.client

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        wanted = sorted(set(keys))
        out: dict[str, dict] = {}
        for i in range(0, len(wanted), BATCH_GET_KEYS):
            request: dict | None = {self.table.name: {"Keys": [{"pk": k} for k in wanted[i:i + BATCH_GET_KEYS]],
                                                      "ConsistentRead": True}}
            tries = 0
            while request:
                got = self.client.batch_get_item(RequestItems=request)
                for item in got.get("Responses", {}).get(self.table.name, []):
                    out[str(item["pk"])] = _plain(item)
                request = got.get("UnprocessedKeys") or None
                tries += 1
                if request and tries > 1:
                    time.sleep(min(1.0, 0.05 * 2 ** tries))
        return out

    def get(self, key: str) -> dict | None:
        item = self.table.get_item(Key={"pk": key}, ConsistentRead=True).get("Item")
        return _plain(item) if item else None

    def replace(self, key: str, item: dict, version: int | None) -> bool:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        values: dict[str, Any] = {":s": _dynamo(item.get("scopes", {})), ":v": (version or 0) + 1}
        update = "SET scopes = :s, v = :v"
        if item.get("expires_at") is not None:
            update += ", expires_at = :e"
            values[":e"] = int(item["expires_at"])
        else:
            update += " REMOVE expires_at"
        condition = "attribute_not_exists(v)" if version is None else "v = :old"
        if version is not None:
            values[":old"] = version
        try:
            self.table.update_item(Key={"pk": key}, UpdateExpression=update, ConditionExpression=condition,
                                   ExpressionAttributeValues=values)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def record(self, key: str, ref: str, value: dict, expires_at: int, stale: list[str]) -> None:
        names = {"#r": CONTACT_PREFIX + ref, **{f"#s{i}": n for i, n in enumerate(stale)}}
        update = "SET #r = :c, expires_at = :e"
        if stale:
            update += " REMOVE " + ", ".join(f"#s{i}" for i in range(len(stale)))
        self.table.update_item(Key={"pk": key}, UpdateExpression=update, ExpressionAttributeNames=names,
                               ExpressionAttributeValues={":c": _dynamo(value), ":e": expires_at})

    def scan(self) -> Iterator[dict]:
        kwargs: dict[str, Any] = {"ConsistentRead": True}
        while True:
            page = self.table.scan(**kwargs)
            for item in page.get("Items", []):
                yield _plain(item)
            if not page.get("LastEvaluatedKey"):
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class MemoryListTable:
    """The list in memory, same semantics (`check`, the local state between runs)."""

    def __init__(self, items: Iterable[dict] = ()):
        self.items: dict[str, dict] = {str(i["pk"]): json.loads(json.dumps(i)) for i in items}
        self._lock = threading.Lock()

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        with self._lock:
            return {k: json.loads(json.dumps(self.items[k])) for k in set(keys) if k in self.items}

    def get(self, key: str) -> dict | None:
        return self.get_many([key]).get(key)

    def replace(self, key: str, item: dict, version: int | None) -> bool:
        with self._lock:
            old = self.items.get(key)
            if (old.get("v") if old else None) != version:
                return False
            new = {"pk": key, "scopes": json.loads(json.dumps(item.get("scopes", {}))), "v": (version or 0) + 1}
            if item.get("expires_at") is not None:
                new["expires_at"] = int(item["expires_at"])
            self.items[key] = new
            return True

    def record(self, key: str, ref: str, value: dict, expires_at: int, stale: list[str]) -> None:
        with self._lock:
            item = self.items.setdefault(key, {"pk": key})
            for name in stale:
                item.pop(name, None)
            item[CONTACT_PREFIX + ref] = dict(value)
            item["expires_at"] = expires_at

    def scan(self) -> Iterator[dict]:
        with self._lock:
            items = [json.loads(json.dumps(i)) for i in self.items.values()]
        yield from items


def _dynamo(value: Any) -> Any:
    """Floats to Decimal for the boto3 resource."""
    from decimal import Decimal  # noqa: PLC0415

    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dynamo(v) for v in value]
    return value


# ---------------------------------------------------------------------------------- the service
@dataclass
class Screened:
    """A valid row the list holds back at ingest: written SUPPRESSED already, so ingest's row
    loop only counts it (it is neither a ValidRow nor a RejectedRow)."""

    row: int
    client_id: str = ""
    reason: str = ""


@dataclass
class _FileCounts:
    """Contacts of numbers within one ingest run, for the frequency cap (rows of the same file)."""

    by_number: dict[str, int] = field(default_factory=dict)


class SuppressionList:
    def __init__(self, table: ListTable, hasher: Hasher, region: str = "IN", caps: dict[str, Cap] | None = None,
                 clock: Callable[[], float] = time.time):
        self.table = table
        self.hasher = hasher
        self.region = region
        self.caps = caps or {}
        self.clock = clock

    # ------------------------------------------------------------ changing the list
    def subject_key(self, kind: str, value: str) -> str:
        """The item key of a number (any accepted writing) or a client-identifier; ValueError
        when a number is not valid (the message never repeats it)."""
        if kind == NUMBER:
            digits = normalize_number(value, self.region)
            if not digits:
                raise ValueError("not a valid phone number")
            return self.hasher.number_key(digits)
        value = str(value).strip()
        if not value:
            raise ValueError("empty client-identifier")
        return self.hasher.client_key(value)

    def add_keys(self, keys: Iterable[str], scope: str = ALL_FLOWS, source: str = "",
                 expires: float | None = None) -> int:
        """Put an entry (scope, source, now, expiry) on each item key; returns how many entries
        are new or changed."""
        now = self.clock()
        entry = {"src": clean_source(source), "at": round(now, 3), **({"exp": round(expires, 3)} if expires else {})}
        return self._change(keys, lambda scopes: scopes.update({scope: entry}) or True)

    def remove_keys(self, keys: Iterable[str], scope: str | None = ALL_FLOWS) -> int:
        """Take the entry of `scope` (every entry with None) off each key; returns how many
        items changed."""
        def drop(scopes: dict) -> bool:
            if scope is None:
                had = bool(scopes)
                scopes.clear()
                return had
            return scopes.pop(scope, None) is not None
        return self._change(keys, drop)

    def add(self, kind: str, value: str, scope: str = ALL_FLOWS, source: str = "",
            expires: float | None = None) -> str:
        key = self.subject_key(kind, value)
        self.add_keys([key], scope, source, expires)
        return key

    def remove(self, kind: str, value: str, scope: str | None = ALL_FLOWS) -> bool:
        return self.remove_keys([self.subject_key(kind, value)], scope) > 0

    def _change(self, keys: Iterable[str], change: Callable[[dict], bool]) -> int:
        keys = sorted(set(keys))
        changed = 0
        current = self.table.get_many(keys)
        for key in keys:
            item = current.get(key)
            for _ in range(MAX_UPDATE_TRIES):
                scopes = dict((item or {}).get("scopes") or {})
                if not change(scopes):
                    break
                now = self.clock()
                scopes = {s: e for s, e in scopes.items() if e.get("exp") is None or float(e["exp"]) > now}
                exps = [float(e["exp"]) for e in scopes.values() if e.get("exp") is not None]
                # TTL deletes the item once every entry has run out (an emptied item at once);
                # an item with a permanent entry never carries expires_at.
                expires_at = (int(now) if not scopes else int(max(exps)) + 1 if len(exps) == len(scopes) else None)
                version = (item or {}).get("v")
                if self.table.replace(key, {"scopes": scopes, "expires_at": expires_at},
                                      int(version) if version is not None else None):
                    changed += 1
                    break
                item = self.table.get(key)  # another writer came first: apply ours to theirs
            else:
                raise RuntimeError("the suppression list item kept changing under this write")
        return changed

    def entries(self) -> Iterator[Entry]:
        """Every live entry (a Scan: the CLI's `list`, never a function)."""
        now = self.clock()
        for item in self.table.scan():
            if str(item.get("pk", ""))[:1] in KINDS:
                yield from (e for e in entries_of(item) if e.live(now))

    # ------------------------------------------------------------ checking rows
    def check(self, flow: str, rows: list[tuple[int, str, list[str]]], own_refs: dict[int, str] | None = None,
              file_counts: _FileCounts | None = None) -> dict[int, str]:
        """{row: reason} for the rows (row, client-identifier, E.164 digits) that must not be
        contacted now: on the list for this flow or all flows, or over the flow's frequency
        cap. `own_refs` ({row: <job>.<row>}) keeps a row's own earlier contact (a resend) out
        of its count; `file_counts` carries the counts of earlier rows of the same ingest."""
        if not rows:
            return {}
        cap = self.caps.get(flow) or self.caps.get(ALL_FLOWS)
        keys: set[str] = set()
        number_keys: dict[str, str] = {}
        for _, cid, numbers in rows:
            if cid:
                keys.add(self.hasher.client_key(cid))
            for n in numbers:
                k = number_keys[n] = self.hasher.number_key(n)
                keys.add(k)
                if cap:
                    keys.add(CAP_LOG + k[1:])
        items = self.table.get_many(keys)
        now = self.clock()
        out: dict[int, str] = {}
        for row, cid, numbers in rows:
            reason = None
            hits = [(KINDS[CLIENT], self.hasher.client_key(cid))] if cid else []
            hits += [(KINDS[NUMBER], number_keys[n]) for n in numbers]
            for what, key in hits:
                item = items.get(key)
                found = [e for e in entries_of(item) if e.live(now) and e.scope in (ALL_FLOWS, flow)] if item else []
                if found:
                    e = min(found, key=lambda x: x.at)
                    subject = "its number" if what == KINDS[NUMBER] else "its client-identifier"
                    reason = f"on the suppression list: {subject} ({e.describe()})"
                    break
            if reason is None and cap:
                reason = self._over_cap(cap, flow, numbers, number_keys, items, now,
                                        (own_refs or {}).get(row), file_counts)
            if reason:
                out[row] = reason
        return out

    def _over_cap(self, cap: Cap, flow: str, numbers: list[str], number_keys: dict[str, str], items: dict[str, dict],
                  now: float, own_ref: str | None, file_counts: _FileCounts | None) -> str | None:
        for n in numbers:
            log = items.get(CAP_LOG + number_keys[n][1:]) or {}
            recent = sum(1 for name, c in log.items()
                         if name.startswith(CONTACT_PREFIX) and isinstance(c, dict) and c.get("f") == flow
                         and float(c.get("t", 0)) > now - cap.period_s and name != CONTACT_PREFIX + (own_ref or ""))
            if file_counts is not None:
                recent += file_counts.by_number.get(n, 0)
            if recent >= cap.limit:
                return (f"frequency cap: a number of this row was already contacted {recent} time"
                        f"{'' if recent == 1 else 's'} within {_period_text(cap.period_s)} (flow cap "
                        f"{cap.describe()})")
        if file_counts is not None:
            for n in numbers:
                file_counts.by_number[n] = file_counts.by_number.get(n, 0) + 1
        return None

    def record_contacts(self, flow: str, sent: list[tuple[str, list[str]]]) -> None:
        """Count the contacts of these (ref, numbers) for the flow's frequency cap (idempotent
        per ref: a resend counts once); entries older than the period are pruned on the way."""
        cap = self.caps.get(flow) or self.caps.get(ALL_FLOWS)
        if not cap or not sent:
            return
        now = self.clock()
        keys = {n: self.hasher.cap_key(n) for _, numbers in sent for n in numbers}
        logs = self.table.get_many(keys.values())
        longest = max(c.period_s for c in self.caps.values())
        for ref, numbers in sent:
            for n in dict.fromkeys(numbers):
                log = logs.get(keys[n]) or {}
                stale = [name for name, c in log.items() if name.startswith(CONTACT_PREFIX) and isinstance(c, dict)
                         and float(c.get("t", 0)) <= now - longest][:50]
                self.table.record(keys[n], ref, {"t": round(now, 3), "f": flow}, int(now + longest) + 60, stale)


# ---------------------------------------------------------------------------------- building it
def service(settings: Any = None) -> SuppressionList | None:
    """The deployment's list (None when no table is configured: suppression is off), built once
    per execution environment through `wiring`'s cache."""
    from . import wiring  # noqa: PLC0415 - wiring builds lazily; no import cycle at load time

    s = settings or wiring.settings()
    if not getattr(s, "suppression_table", ""):
        return None

    def build() -> SuppressionList:
        import boto3  # noqa: PLC0415

        table = DynamoListTable(boto3.resource("dynamodb").Table(s.suppression_table))
        return SuppressionList(table, Hasher(lambda: salt(s.suppression_salt_secret)), s.default_region,
                               parse_caps(s.frequency_caps))
    return wiring._once(f"suppression:{s.suppression_table}", build)


def salt(secret_name: str) -> str:
    """The salt (Secrets Manager, through powertools' parameters cache, 5 minutes), registered
    with the log masking so it never reaches a log line."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415

    from . import wiring  # noqa: PLC0415

    if not secret_name:
        raise RuntimeError("SUPPRESSION_SALT_SECRET is not set")
    provider = wiring._once("secrets_provider", lambda: SecretsProvider(boto3_client=wiring.client("secretsmanager")))
    raw = provider.get(secret_name, max_age=300)
    value = (raw.decode() if isinstance(raw, bytes) else str(raw)).strip()
    if value.startswith("{"):
        try:
            value = str(json.loads(value).get("salt", "")).strip()
        except (ValueError, AttributeError):
            value = ""
    register_secret(value)
    return value


# ---------------------------------------------------------------------------------- ingest hook
def screen(settings: Any, row_items: Any, job: str, flow: str, rows: Iterable[Any],
           lst: SuppressionList | None = None) -> Iterator[Any]:
    """Ingest's rows, with the valid ones the list holds back replaced by `Screened` (their
    SUPPRESSED outcome written already, through `row_items`: the store's rows repository).
    Looks ahead SCREEN_WINDOW rows to check them together; yields every row unchanged when
    suppression is off."""
    from .contacts import ValidRow  # noqa: PLC0415

    lst = lst if lst is not None else service(settings)
    if lst is None:
        yield from rows
        return
    counts = _FileCounts()
    window: list[Any] = []
    n_valid = 0

    def flush() -> Iterator[Any]:
        valid = [(i.row, i.client_id, list(i.call.get("contact-numbers", []))) for i in window if isinstance(i, ValidRow)]
        held = lst.check(flow, valid, file_counts=counts)
        if held:
            row_items.put_rows(job, [{"row": r, "status": Status.SUPPRESSED.value, "cid": c, "reason": held[r]}
                                 for r, c, _ in valid if r in held])
            count("RowsSuppressed", len(held))
        for i in window:
            yield Screened(i.row, i.client_id, held[i.row]) if isinstance(i, ValidRow) and i.row in held else i
        window.clear()

    for item in rows:
        window.append(item)
        n_valid += isinstance(item, ValidRow)
        if n_valid >= SCREEN_WINDOW:
            yield from flush()
            n_valid = 0
    yield from flush()


# ---------------------------------------------------------------------------------- dispatch hook
def before_send(settings: Any, job: str, flow: str, rows: list[int], calls: list[dict], body: bytes,
                held: Callable[[int, dict, str], object], rebuild: Callable[[list[dict]], bytes],
                lst: SuppressionList | None = None) -> tuple[list[dict], list[int], bytes]:
    """Right before a request is posted: the rows now on the list (or over the cap) are handed
    to `held(row, call, reason)` (the caller records them SUPPRESSED) and left out of the body,
    which is built again without them; the rows that go out are counted for the frequency cap.
    Returns (calls, rows, body) to send; no calls: send nothing."""
    lst = lst if lst is not None else service(settings)
    if lst is None or not calls:
        return calls, rows, body
    refs = {row: row_ref(job, row) for row in rows}
    found = lst.check(flow, [(row, str(c.get("client-identifier", "")), list(c.get("contact-numbers", [])))
                             for row, c in zip(rows, calls, strict=True)], own_refs=refs)
    if found:
        for row, call in zip(rows, calls, strict=True):
            if row in found:
                held(row, call, found[row])
        count("RowsSuppressedAtSend", len(found))
        logger.info("rows suppressed right before sending", extra={"job": job, "rows": len(found)})
        kept = [(r, c) for r, c in zip(rows, calls, strict=True) if r not in found]
        rows, calls = [r for r, _ in kept], [c for _, c in kept]
        body = rebuild(calls) if calls else b""
    lst.record_contacts(flow, [(refs[r], list(c.get("contact-numbers", []))) for r, c in zip(rows, calls, strict=True)])
    return calls, rows, body


# ---------------------------------------------------------------------------------- webhook opt-out
_TRUE = frozenset({"1", "true", "yes", "y", "stop", "optout", "opt-out", "opted-out"})


def opted_out(settings: Any, body: Any, keys: Iterable[Any]) -> str | None:
    """Why a flow-end push says "stop calling me" (the configured DTMF digit, or the configured
    flow variable set true), or None."""
    digit = str(getattr(settings, "opt_out_dtmf", "") or "").strip()
    if digit and any(digit in keys for keys in keys_by_attempt(body)):  # any attempt (dtmf.py, the one reader)
        return f"pressed {digit}"
    name = str(getattr(settings, "opt_out_key", "") or "").strip()
    if name:
        for k in keys or []:
            if k.name in (name, f"$flow.key.{name}") and str(k.value).strip().lower() in _TRUE:
                return f"flow variable {name}"
    return None


def opt_out(body: Any, push: Any, info: dict | None, flow: str | None, ref: str | None,
            settings: Any = None, lst: SuppressionList | None = None) -> bool:
    """The webhook's one call, after a push's outcome is recorded: when the push says the
    person opted out, the row's numbers go on the list (every flow, or the row's flow with
    OPT_OUT_SCOPE=flow), source "webhook opt-out (…)". Returns whether anything was added."""
    from . import wiring  # noqa: PLC0415

    settings = settings or wiring.settings()
    if not (getattr(settings, "opt_out_dtmf", "") or getattr(settings, "opt_out_key", "")):
        return False
    why = opted_out(settings, body, getattr(push, "keys", None) or [])
    if why is None:
        return False
    lst = lst if lst is not None else service(settings)
    numbers = [str(n) for n in (info or {}).get("numbers") or [] if str(n).lstrip("+").isdigit()]
    if lst is None or not numbers:
        count("OptOutsUnmatched", 1)
        logger.warning("opt-out in a flow-end push could not be recorded",
                       extra={"ref": ref, "configured": lst is not None, "numbers_known": bool(numbers)})
        return False
    scope = flow if settings.opt_out_scope == "flow" and flow else ALL_FLOWS
    lst.add_keys([lst.hasher.number_key(n) for n in numbers], scope, f"webhook opt-out ({why}, row {ref})")
    count("OptOuts", 1)
    logger.info("opt-out recorded from a flow-end push", extra={"ref": ref, "numbers": len(numbers)})
    return True
