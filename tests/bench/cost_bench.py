"""Cost per million calls (issue 14, step 5): AWS requests per 1,000 calls accepted, in dollars.

Runs the local pipeline (`LocalPipeline`, the code behind `phonon-outbound run`: the real
handlers in-process, moto in server mode as the AWS, the bundled Phonon simulator over HTTP)
on a generated file at the real rate limit (default 30,000 calls/minute, the simulator
enforcing it and answering after 0.3-1.0 s, as in the rate bench), and counts every AWS request
the handlers make with botocore event hooks (`before-call` / `after-call`) registered on boto3's
default session, the one every client the handlers build comes from (`wiring.client`,
`wiring.store`). Nothing is taken from moto's own accounting (moto does not compute capacity
units faithfully): units are computed here from the bytes on the wire, by DynamoDB's rules
(docs/benchmarks.md, "Cost per million calls").

What is counted, and how:
- **DynamoDB**: the request and response JSON of each call. Item size = sum over attributes of
  name bytes + value bytes (string: UTF-8 bytes; number: 1 byte per 2 significant digits + 1;
  binary: bytes; bool/null: 1; list/map: 3 + 1 per element + elements (+ key names); sets: sum
  of elements). Writes: 1 WRU per started 1 KB of the item, the larger of the item before and
  after (PutItem/UpdateItem), the deleted item (DeleteItem), the existing item (at least 1) for
  a write whose condition failed; ×2 in TransactWriteItems; BatchWriteItem per item (minus
  UnprocessedItems). Every write also writes each global secondary index whose key the item
  has (before or after): 1 write of the index entry (ALL projection: the item's size), 2 when
  the index key changed. Reads: 1 RRU per started 4 KB for a strongly consistent GetItem
  (½ eventually consistent; an absent item still costs the minimum), BatchGetItem per key,
  Query/Scan by the total size of the items read in the page, rounded up once (GSI queries are
  always eventually consistent), TransactGetItems ×2. The sizes before/after a write come from a
  shadow of every item this run wrote or read (full images), and after an UpdateItem from one
  extra strongly consistent GetItem on a separate client that is not counted; projections
  (ProjectionExpression) are charged at the full item's size from the shadow.
- **SQS**: every API call is a request, and every started 64 KB of payload (message bodies +
  attributes) in it is one more: a 150 KB SendMessageBatch is 3 requests. The ReceiveMessage and
  DeleteMessageBatch that the runner's dispatch workers make play the part of Lambda's SQS event
  source mapping, whose requests AWS bills to the account: those that returned/deleted messages
  are counted; the empty long polls are a fixed cost per hour, not per call (not counted).
- **S3**: PUT/COPY/POST/LIST class against GET/HEAD (other) class.
- **EventBridge**: PutEvents entries (each started 64 KB of an entry is one event).
- **Secrets Manager**: every API call.
- **Lambda**: each handler invocation (the runner's calls of the handlers are wrapped): one
  request, and its wall duration rounded up to 1 ms × the function's MemorySize from
  template.yaml. Dispatch runs at the real limit, so the time it waits for the limiter (and for
  Phonon's 0.3-1.0 s answers) is real and billed. Ingest's time inside the runner's back-pressure
  hook (local only: it keeps moto's queue shallow) is subtracted.

Modelled, not run (said in the output):
- **Flow-end webhooks**: Phonon pushes one per accepted call. The simulator paces them (20/s,
  so that they do not starve the one embedded DynamoDB), far slower than 30,000/min, so the run
  does not wait for all of them: the webhook function's requests, units and GB-seconds are
  measured over the pushes that arrived during the run and charged per accepted call.
- Not per call, so not in the figure: the watchdog (every 5 minutes), empty SQS long polls,
  the user's upload, secrets' monthly fee, KMS, CloudWatch Logs and metrics, data transfer.

The run (a file of `--rows`, default 100,000) takes about rows / limit minutes plus a minute or
two here (100,000 rows at 30,000/min: ~5-8 min). Not part of `make test`.

    python -m tests.bench.cost_bench                       # 100,000 rows at 30,000/min, 5 dispatchers
    python -m tests.bench.cost_bench --rows 5000 --rate 6000 --concurrency 2   # quick look
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

KB = 1024
SQS_CHUNK = 64 * KB
EVENT_CHUNK = 64 * KB

# AWS LIST prices for us-east-1 as the public pricing pages (aws.amazon.com/<service>/pricing)
# state them, written down on 2026-11-30 (DynamoDB on-demand: after the November 2024 cut).
# The pages were not fetched from this machine (no internet here): check them before quoting.
# No free tier, no savings plans or reserved capacity, first volume tier only. Dollars per unit.
PRICES_READ_ON = "2026-11-30"
PRICES: dict[str, float] = {
    "lambda_request": 0.20 / 1e6,               # per invocation
    "lambda_gb_s_arm64": 0.0000133334,          # per GB-second, arm64, first tier
    "ddb_wru": 0.625 / 1e6,                     # on-demand write request unit
    "ddb_rru": 0.125 / 1e6,                     # on-demand read request unit
    "sqs_request": 0.40 / 1e6,                  # standard queue, per request (64 KB chunk), after free tier
    "s3_put_class": 0.005 / 1e3,                # PUT, COPY, POST, LIST, S3 Standard
    "s3_get_class": 0.0004 / 1e3,               # GET, HEAD and all other requests
    "events_put": 1.00 / 1e6,                   # EventBridge custom events (PutEvents entry, 64 KB chunk)
    "secrets_api_call": 0.05 / 1e4,             # Secrets Manager API calls
}

S3_PUT_CLASS = {"PutObject", "CopyObject", "PostObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
                "CompleteMultipartUpload", "ListObjects", "ListObjectsV2", "ListObjectVersions", "ListBuckets",
                "ListMultipartUploads", "ListParts", "PutObjectTagging", "PutObjectAcl"}
S3_FREE = {"DeleteObject", "DeleteObjects", "AbortMultipartUpload"}


# ---------------------------------------------------------------------------- pure arithmetic
def number_size(text: str) -> int:
    """Bytes DynamoDB counts for a number: 1 per two significant digits, plus 1."""
    digits = text.strip().lstrip("+-").replace(".", "")
    mantissa = digits.split("e")[0].split("E")[0]
    significant = mantissa.strip("0") or "0"
    return (len(significant) + 1) // 2 + 1


def _binary_size(v: Any) -> int:
    """A binary value: base64 text on the wire, bytes (or boto3's `Binary`) from a client's
    serializer (the integration tests' item-size guard measures those)."""
    if isinstance(v, (bytes, bytearray)):
        return len(v)
    if hasattr(v, "value"):
        return len(v.value)
    return len(base64.b64decode(v))


def value_size(value: dict) -> int:
    """Bytes of one AttributeValue in DynamoDB's wire form ({"S": ...}, {"N": ...}, ...)."""
    (kind, v), = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return number_size(v)
    if kind == "B":
        return _binary_size(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in v)
    if kind == "NS":
        return sum(number_size(n) for n in v)
    if kind == "BS":
        return sum(_binary_size(b) for b in v)
    if kind == "L":
        return 3 + sum(1 + value_size(e) for e in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(e) for k, e in v.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(item: dict | None) -> int:
    """Bytes of a DynamoDB item: its attribute names plus their values."""
    if not item:
        return 0
    return sum(len(name.encode()) + value_size(v) for name, v in item.items())


def write_units(size: int, transactional: bool = False) -> float:
    """WRU of writing one item of `size` bytes: 1 per started KB (at least 1), ×2 in a transaction."""
    return max(1, math.ceil(size / KB)) * (2 if transactional else 1)


def read_units(size: int, consistent: bool = True, transactional: bool = False) -> float:
    """RRU of reading `size` bytes at once: 1 per started 4 KB (at least 1) strongly consistent,
    half of that eventually consistent, twice that in a transaction."""
    units = max(1, math.ceil(size / (4 * KB)))
    if transactional:
        return units * 2.0
    return float(units) if consistent else units / 2


def chunked_requests(payload_bytes: int, chunk: int = SQS_CHUNK) -> int:
    """Billed requests of one SQS call (or events of one PutEvents entry): every started 64 KB
    of payload counts, at least 1."""
    return max(1, math.ceil(payload_bytes / chunk))


def gb_seconds(duration_s: float, memory_mb: int) -> float:
    """Billed GB-seconds of one invocation: duration rounded up to 1 ms × memory."""
    ms = math.ceil(round(duration_s * 1000, 6))
    return ms / 1000 * memory_mb / 1024


def dollars(per_call: dict[str, float]) -> dict[str, float]:
    """Dollars per call by service, from counts per call (keys as in `Counts.per`)."""
    p = PRICES
    return {
        "lambda": per_call.get("lambda_invocations", 0) * p["lambda_request"]
        + per_call.get("lambda_gb_s", 0) * p["lambda_gb_s_arm64"],
        "dynamodb": per_call.get("ddb_wru", 0) * p["ddb_wru"] + per_call.get("ddb_rru", 0) * p["ddb_rru"],
        "sqs": per_call.get("sqs_requests", 0) * p["sqs_request"],
        "s3": per_call.get("s3_put_class", 0) * p["s3_put_class"] + per_call.get("s3_get_class", 0) * p["s3_get_class"],
        "eventbridge": per_call.get("events", 0) * p["events_put"],
        "secretsmanager": per_call.get("secrets_calls", 0) * p["secrets_api_call"],
    }


# ---------------------------------------------------------------------------- counting
@dataclass
class Counts:
    """What one part (a function, or the event source mapping) cost over the run."""

    ddb_wru: float = 0.0
    ddb_rru: float = 0.0
    sqs_requests: int = 0
    s3_put_class: int = 0
    s3_get_class: int = 0
    events: int = 0
    secrets_calls: int = 0
    lambda_invocations: int = 0
    lambda_gb_s: float = 0.0
    lambda_s: float = 0.0
    lambda_aws_s: float = 0.0  # of lambda_s: inside AWS requests made by the invoking thread (moto here)
    lambda_aws_requests: int = 0
    lambda_gb_s_at_10ms: float = 0.0  # GB-s had each of those requests taken 10 ms (AWS_REQUEST_S)
    calls: Counter = field(default_factory=Counter)  # "service.Operation" -> API calls
    wru_by: Counter = field(default_factory=Counter)  # "table op" -> WRU
    rru_by: Counter = field(default_factory=Counter)

    NUMBERS = ("ddb_wru", "ddb_rru", "sqs_requests", "s3_put_class", "s3_get_class", "events", "secrets_calls",
               "lambda_invocations", "lambda_gb_s", "lambda_s", "lambda_aws_s", "lambda_aws_requests",
               "lambda_gb_s_at_10ms")

    def per(self, n: float) -> dict[str, float]:
        return {k: getattr(self, k) / n for k in self.NUMBERS}


def _json(body: Any) -> dict:
    if not body:
        return {}
    if isinstance(body, bytes | bytearray):
        body = body.decode()
    if not isinstance(body, str):
        return {}
    try:
        doc = json.loads(body)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _msg_payload(m: dict) -> int:
    size = len(str(m.get("MessageBody", m.get("Body", ""))).encode())
    for name, attr in (m.get("MessageAttributes") or {}).items():
        size += len(name.encode()) + len(str(attr.get("DataType", "")).encode())
        size += len(str(attr.get("StringValue", "")).encode()) + len(str(attr.get("BinaryValue", "")).encode())
    return size


class Shadow:
    """Full images of the DynamoDB items this run wrote or read, by table and key, so that a
    write's "before" size and a projected read's full size are known without asking moto."""

    def __init__(self, describe: Callable[[str], dict]):
        self._describe = describe
        self._schemas: dict[str, tuple[list[str], list[tuple[str, ...]]]] = {}
        self._items: dict[tuple[str, str], dict] = {}
        self.lock = threading.Lock()

    def schema(self, table: str) -> tuple[list[str], list[tuple[str, ...]]]:
        if table not in self._schemas:
            t = self._describe(table)
            keys = [k["AttributeName"] for k in t["KeySchema"]]
            indexes = [tuple(k["AttributeName"] for k in g["KeySchema"]) for g in t.get("GlobalSecondaryIndexes", [])]
            self._schemas[table] = (keys, indexes)
        return self._schemas[table]

    def key(self, table: str, item_or_key: dict) -> str:
        keys, _ = self.schema(table)
        return json.dumps([item_or_key.get(k) for k in keys], sort_keys=True)

    def get(self, table: str, item_or_key: dict) -> dict | None:
        return self._items.get((table, self.key(table, item_or_key)))

    def put(self, table: str, item: dict | None, key: dict | None = None) -> None:
        k = self.key(table, key if key is not None else (item or {}))
        if item:
            self._items[(table, k)] = item
        else:
            self._items.pop((table, k), None)

    def index_writes(self, table: str, before: dict | None, after: dict | None) -> float:
        """WRU of the global secondary index entries one table write changes."""
        _, indexes = self.schema(table)
        units = 0.0
        for attrs in indexes:
            had = bool(before) and all(a in before for a in attrs)  # type: ignore[operator]
            has = bool(after) and all(a in after for a in attrs)  # type: ignore[operator]
            if had and has and any(before[a] != after[a] for a in attrs):  # type: ignore[index]
                units += write_units(item_size(before)) + write_units(item_size(after))
            elif has:
                units += write_units(item_size(after))
            elif had:
                units += write_units(item_size(before))
        return units


class Meter:
    """botocore hooks that count every AWS request of the handlers, by part of the pipeline."""

    def __init__(self) -> None:
        self.parts: dict[str, Counts] = defaultdict(Counts)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._raw: Any = None
        self.shadow = Shadow(lambda t: self.raw().describe_table(TableName=t)["Table"])
        self.uncounted: Counter = Counter()  # calls of the harness itself (main thread), not billed

    def raw(self) -> Any:
        """A DynamoDB client of its own session (no hooks): describes and post-update reads."""
        with self._lock:
            if self._raw is None:
                import boto3

                self._raw = boto3.session.Session().client("dynamodb")
            return self._raw

    # which part of the pipeline the calling thread works for
    def set_part(self, part: str | None) -> None:
        self._local.part = part

    def part(self) -> str | None:
        part = getattr(self._local, "part", None)
        if part:
            return part
        # A thread a handler started (dispatch's thread pool, boto3's transfer threads) works
        # for the part that started it (noted by `inherit_parts`).
        return getattr(threading.current_thread(), "_cost_bench_part", None)

    def inherit_parts(self) -> Callable[[], None]:
        """Threads started while a part is current work for that part; returns the undo."""
        original = threading.Thread.start
        meter = self

        def start(thread: threading.Thread) -> None:
            thread._cost_bench_part = meter.part()  # type: ignore[attr-defined]
            original(thread)

        threading.Thread.start = start  # type: ignore[method-assign]
        return lambda: setattr(threading.Thread, "start", original)

    def install(self, events: Any, part: str | None = None, only: Iterable[str] | None = None) -> None:
        """Register on a session's or a client's event emitter. With `part`, every call counts
        for that part (only the operations in `only`)."""
        wanted = set(only or ())

        def before(model: Any, params: dict, context: dict, **_: Any) -> None:
            context["cost_bench_request"] = params.get("body")
            context["cost_bench_t0"] = time.monotonic()

        def after(http_response: Any, parsed: dict, model: Any, context: dict, **_: Any) -> None:
            t0 = time.monotonic()
            try:
                counted(http_response, parsed, model, context)
            finally:  # the hook's own time (and its uncounted reads) is not the handler's
                local = self._local
                local.aws_s = getattr(local, "aws_s", 0.0) + t0 - context.get("cost_bench_t0", t0)
                local.aws_n = getattr(local, "aws_n", 0) + 1
                local.hook_s = getattr(local, "hook_s", 0.0) + time.monotonic() - t0

        def counted(http_response: Any, parsed: dict, model: Any, context: dict) -> None:
            if part is not None and model.name not in wanted:
                return
            if part is not None and model.name == "ReceiveMessage" and not parsed.get("Messages"):
                return  # an empty poll: the event source mapping's fixed cost per hour, not per call
            who = part or self.part()
            service = model.service_model.service_name
            try:
                self._count(who, service, model.name, context.get("cost_bench_request"), http_response, parsed)
            except Exception as err:  # noqa: BLE001 - a counting bug must show, not break the run
                with self._lock:
                    self.parts["_errors"].calls[f"{service}.{model.name}: {err!r}"[:200]] += 1

        events.register("before-call", before, unique_id=f"cost-bench-before-{id(self)}-{part}")
        events.register("after-call", after, unique_id=f"cost-bench-after-{id(self)}-{part}")

    def _count(self, who: str | None, service: str, op: str, body: Any, http: Any, parsed: dict) -> None:
        ok = http is not None and http.status_code < 300
        error = (parsed.get("Error") or {}).get("Code", "") if not ok else ""
        if service == "dynamodb":
            req = _json(body)
            resp = _json(http.content) if http is not None else {}
            wru, rru, by = self._dynamodb(op, req, resp, ok, error)
        else:
            wru = rru = 0.0
            by = {}
        if who is None:
            with self._lock:
                self.uncounted[f"{service}.{op}"] += 1
            return
        with self._lock:
            c = self.parts[who]
            c.calls[f"{service}.{op}"] += 1
            if service == "dynamodb":
                c.ddb_wru += wru
                c.ddb_rru += rru
                for k, v in by.items():
                    (c.wru_by if k.startswith("W ") else c.rru_by)[k[2:]] += v
            elif service == "sqs":
                c.sqs_requests += self._sqs_requests(op, _json(body), parsed)
            elif service == "s3":
                if op in S3_PUT_CLASS:
                    c.s3_put_class += 1
                elif op not in S3_FREE:
                    c.s3_get_class += 1
            elif service == "events" and op == "PutEvents":
                for e in _json(body).get("Entries", []):
                    c.events += chunked_requests(len(json.dumps(e).encode()), EVENT_CHUNK)
            elif service == "secretsmanager":
                c.secrets_calls += 1

    @staticmethod
    def _sqs_requests(op: str, req: dict, parsed: dict) -> int:
        if op == "SendMessage":
            return chunked_requests(_msg_payload(req))
        if op == "SendMessageBatch":
            return chunked_requests(sum(_msg_payload(e) for e in req.get("Entries", [])))
        if op == "ReceiveMessage":
            return chunked_requests(sum(_msg_payload(m) for m in parsed.get("Messages", [])))
        return 1

    # -- DynamoDB units, by DynamoDB's rules (module docstring)
    def _write(self, by: Counter, table: str, op: str, key: dict, before: dict | None, after: dict | None) -> None:
        """One non-transactional item write: the larger image, its index entries, the shadow."""
        by[f"W {table} {op}"] += write_units(max(item_size(before), item_size(after)))
        gsi = self.shadow.index_writes(table, before, after)
        if gsi:
            by[f"W {table} {op} (index entries)"] += gsi
        self.shadow.put(table, after, key)

    def _dynamodb(self, op: str, req: dict, resp: dict, ok: bool, error: str) -> tuple[float, float, dict]:
        sh = self.shadow
        by: Counter = Counter()
        table = req.get("TableName", "")
        with sh.lock:
            if op in ("PutItem", "UpdateItem", "DeleteItem"):
                key = req.get("Key") or req.get("Item") or {}
                before = sh.get(table, key)
                if not ok:  # a failed condition still costs the existing item's size, at least 1 WRU
                    by[f"W {table} {op} (condition failed)"] += write_units(item_size(before))
                else:
                    if op == "PutItem":
                        after = req["Item"]
                    elif op == "UpdateItem":
                        after = self.raw().get_item(TableName=table, Key=req["Key"], ConsistentRead=True).get("Item")
                    else:
                        after = None
                    self._write(by, table, op, key, before, after)
            elif op == "BatchWriteItem":
                unprocessed = {json.dumps(r, sort_keys=True) for rs in (resp.get("UnprocessedItems") or {}).values()
                               for r in rs}
                for t, requests in req.get("RequestItems", {}).items():
                    for r in requests:
                        if json.dumps(r, sort_keys=True) in unprocessed:
                            continue
                        if "PutRequest" in r:
                            after, key = r["PutRequest"]["Item"], r["PutRequest"]["Item"]
                        else:
                            after, key = None, r["DeleteRequest"]["Key"]
                        self._write(by, t, op, key, sh.get(t, key), after)
            elif op == "TransactWriteItems":
                for entry in req.get("TransactItems", []):
                    (kind, spec), = entry.items()
                    t = spec["TableName"]
                    key = spec.get("Key") or spec.get("Item") or {}
                    before = sh.get(t, key)
                    if kind == "Put":
                        after = spec["Item"] if ok else before
                    elif kind == "Update" and ok:
                        after = self.raw().get_item(TableName=t, Key=spec["Key"], ConsistentRead=True).get("Item")
                    elif kind == "Delete" and ok:
                        after = None
                    else:
                        after = before
                    by[f"W {t} TransactWriteItems {kind}"] += write_units(
                        max(item_size(before), item_size(after)), transactional=True)
                    if ok and kind != "ConditionCheck":
                        gsi = sh.index_writes(t, before, after)
                        if gsi:
                            by[f"W {t} TransactWriteItems (index entries)"] += gsi * 2
                        sh.put(t, after, key)
            elif op == "GetItem" and ok:
                item = resp.get("Item")
                projected = bool(req.get("ProjectionExpression") or req.get("AttributesToGet"))
                full = sh.get(table, req["Key"]) if projected else item
                if not projected:
                    sh.put(table, item, req["Key"])
                by[f"R {table} GetItem"] += read_units(item_size(full or item), bool(req.get("ConsistentRead")))
            elif op == "BatchGetItem" and ok:
                for t, spec in req.get("RequestItems", {}).items():
                    left = {sh.key(t, k) for k in (resp.get("UnprocessedKeys") or {}).get(t, {}).get("Keys", [])}
                    found = {sh.key(t, i): i for i in resp.get("Responses", {}).get(t, [])}
                    projected = bool(spec.get("ProjectionExpression") or spec.get("AttributesToGet"))
                    for k in spec.get("Keys", []):
                        kk = sh.key(t, k)
                        if kk in left:
                            continue
                        item = found.get(kk)
                        full = (sh.get(t, k) or item) if projected else item
                        if not projected:
                            sh.put(t, item, k)
                        by[f"R {t} BatchGetItem"] += read_units(item_size(full), bool(spec.get("ConsistentRead")))
            elif op in ("Query", "Scan") and ok:
                items = resp.get("Items", [])
                projected = bool(req.get("ProjectionExpression") or req.get("AttributesToGet")
                                 or req.get("Select") in ("SPECIFIC_ATTRIBUTES", "COUNT"))
                sizes = [item_size((sh.get(table, i) or i) if projected else i) for i in items]
                if not projected:
                    for i in items:
                        sh.put(table, i)
                scanned = int(resp.get("ScannedCount", len(items)))
                total = sum(sizes) + max(0, scanned - len(items)) * (sum(sizes) // len(sizes) if sizes else 0)
                consistent = bool(req.get("ConsistentRead")) and not req.get("IndexName")
                where = f"{table}/{req['IndexName']}" if req.get("IndexName") else table
                by[f"R {where} {op}"] += read_units(total, consistent)
            elif op == "TransactGetItems" and ok:
                for entry, got in zip(req.get("TransactItems", []), resp.get("Responses", []), strict=False):
                    spec = entry["Get"]
                    by[f"R {spec['TableName']} TransactGetItems"] += read_units(
                        item_size(got.get("Item")), True, transactional=True)
        wru = sum(v for k, v in by.items() if k.startswith("W "))
        rru = sum(v for k, v in by.items() if k.startswith("R "))
        return wru, rru, by


# ---------------------------------------------------------------------------- the run
def memory_of(template: dict) -> dict[str, int]:
    """MemorySize of each function in template.yaml (Globals' when the function sets none)."""
    default = int(template.get("Globals", {}).get("Function", {}).get("MemorySize", 128))
    out = {}
    for name, res in template["Resources"].items():
        if res.get("Type") == "AWS::Serverless::Function":
            out[name] = int((res.get("Properties") or {}).get("MemorySize", default))
    return out


FUNCTIONS = {"ingest": "IngestFunction", "dispatch": "DispatchFunction", "webhook": "WebhookFunction"}


AWS_REQUEST_S = 0.010  # an assumed in-region DynamoDB/SQS request time on AWS, for the second figure


def _timed(meter: Meter, part: str, handler: Callable[..., Any], memory_mb: int,
           waited: Callable[[], float] | None = None) -> Callable[..., Any]:
    """The handler, timed as Lambda bills it: wall time of the invocation, less the local-only
    waits (`waited`) and the counting hooks' own time in the invoking thread (the hooks'
    time in threads the handler starts runs in parallel and is left in: a few ms a chunk)."""
    def invoke(event: dict, context: Any) -> Any:
        meter.set_part(part)
        local = meter._local
        w0 = waited() if waited else 0.0
        h0, a0, n0 = getattr(local, "hook_s", 0.0), getattr(local, "aws_s", 0.0), getattr(local, "aws_n", 0)
        started = time.monotonic()
        try:
            return handler(event, context)
        finally:
            elapsed = time.monotonic() - started - ((waited() - w0) if waited else 0.0) - (local.__dict__.get(
                "hook_s", 0.0) - h0)
            aws_s, aws_n = getattr(local, "aws_s", 0.0) - a0, getattr(local, "aws_n", 0) - n0
            meter.set_part(None)
            with meter._lock:
                c = meter.parts[part]
                c.lambda_invocations += 1
                c.lambda_s += elapsed
                c.lambda_gb_s += gb_seconds(elapsed, memory_mb)
                c.lambda_aws_s += aws_s
                c.lambda_aws_requests += aws_n
                c.lambda_gb_s_at_10ms += gb_seconds(max(0.0, elapsed - aws_s) + aws_n * AWS_REQUEST_S, memory_mb)
    return invoke


def run(rows: int, rate: int, concurrency: int, latency: tuple[float, float]) -> dict:
    import boto3

    from phonon_outbound import wiring
    from phonon_outbound.settings import fit_batch_size
    from phonon_outbound_dev.local.runner import LocalPipeline, RunOptions
    from phonon_outbound_dev.simulator import DEMO_FLOW_ID
    from tests.bench.rate_bench import write_backlog

    meter = Meter()
    undo = meter.inherit_parts()
    boto3.setup_default_session()  # the session every handler client comes from, hooked before any exists
    meter.install(boto3.DEFAULT_SESSION.events)  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "campaign.csv"
        write_backlog(path, rows)
        opts = RunOptions(flow_id=DEMO_FLOW_ID, rate=rate, batch_size=fit_batch_size(rate, None), concurrency=concurrency,
                          out_dir=Path(tmp) / "out", webhook_grace_s=0, stall_timeout_s=180)
        started = time.monotonic()
        with LocalPipeline(opts, progress=io.StringIO()) as pipeline:
            pipeline.sim.rate_per_minute = rate  # the simulator enforces the limit (429 above it)
            pipeline.sim.latency_s = latency
            memory = memory_of(pipeline.stack.template)
            # Lambda's SQS event source mapping: the runner's workers receive and delete for it.
            meter.install(pipeline.sqs.meta.events, part="event source mapping (SQS poller)",
                          only=("ReceiveMessage", "DeleteMessageBatch"))
            throttled = threading.local()

            def throttle_time() -> float:
                return float(getattr(throttled, "s", 0.0))

            def throttle() -> None:  # local back-pressure only: not Lambda time on AWS
                t0 = time.monotonic()
                try:
                    pipeline._throttle()
                finally:
                    throttled.s = throttle_time() + time.monotonic() - t0

            wiring.set_throttle(throttle)
            pipeline._ingest_handler = _timed(meter, "ingest", pipeline._ingest_handler, memory["IngestFunction"],
                                              throttle_time)
            pipeline._dispatch_handler = _timed(meter, "dispatch", pipeline._dispatch_handler,
                                                memory["DispatchFunction"])
            pipeline._webhook_handler = _timed(meter, "webhook", pipeline._webhook_handler,
                                               memory["WebhookFunction"])
            try:
                result = pipeline.run([path])
            finally:
                undo()
            pushes = pipeline.webhook_pushes
        elapsed = time.monotonic() - started
    return report(meter, result, pushes, elapsed, rows, rate, concurrency, latency, memory)


def report(meter: Meter, result: dict, pushes: int, elapsed: float, rows: int, rate: int, concurrency: int,
           latency: tuple[float, float], memory: dict[str, int]) -> dict:
    accepted = int(result["totals"]["accepted"])
    # Webhooks: measured per push (its invocations), charged once per accepted call.
    pushes = meter.parts["webhook"].lambda_invocations if "webhook" in meter.parts else pushes
    per_k: dict[str, dict[str, float]] = {}
    per_m: dict[str, dict[str, float]] = {}
    for part, c in sorted(meter.parts.items()):
        if part == "_errors":
            continue
        n = pushes if part == "webhook" else accepted
        if not n:
            continue
        per_call = c.per(n)
        per_k[part] = {k: round(v * 1000, 3) for k, v in per_call.items()}
        per_m[part] = {k: round(v * 1e6, 4) for k, v in dollars(per_call).items()}
    by_service: Counter = Counter()
    for d in per_m.values():
        by_service.update(d)
    total = sum(by_service.values())
    # Second figure: the same, had every AWS request of the invoking thread taken AWS_REQUEST_S
    # instead of what moto on this shared machine took (the rest of each duration unchanged).
    delta = sum((c.lambda_gb_s_at_10ms - c.lambda_gb_s) / (pushes if part == "webhook" else accepted)
                for part, c in meter.parts.items() if part != "_errors" and (pushes if part == "webhook" else accepted))
    # Dispatch at the limit: every one of N dispatchers is busy (sending or waiting) the whole
    # campaign, so GB-s per call = N × memory / calls per second.
    dispatch_model = concurrency * memory["DispatchFunction"] / 1024 / (rate / 60)
    drivers: Counter = Counter()
    for part, c in meter.parts.items():
        n = pushes if part == "webhook" else accepted
        if part == "_errors" or not n:
            continue
        for k, v in c.wru_by.items():
            drivers[f"DynamoDB writes: {part}: {k}"] += v / n * 1e6 * PRICES["ddb_wru"]
        for k, v in c.rru_by.items():
            drivers[f"DynamoDB reads: {part}: {k}"] += v / n * 1e6 * PRICES["ddb_rru"]
        drivers[f"Lambda GB-s: {part}"] += c.lambda_gb_s / n * 1e6 * PRICES["lambda_gb_s_arm64"]
        drivers[f"Lambda requests: {part}"] += c.lambda_invocations / n * 1e6 * PRICES["lambda_request"]
        drivers[f"SQS: {part}"] += c.sqs_requests / n * 1e6 * PRICES["sqs_request"]
    return {
        "rows": rows, "accepted": accepted, "limit_per_minute": rate, "dispatchers": concurrency,
        "latency_s": list(latency), "elapsed_s": round(elapsed, 1), "webhook_pushes_measured": pushes,
        "memory_mb": memory, "dead_letter_messages": result.get("dead_letter_messages", 0),
        "prices": {"read_on": PRICES_READ_ON, "region": "us-east-1", "list prices": PRICES},
        "per_1000_calls": per_k,
        "api_calls": {part: dict(sorted(c.calls.items())) for part, c in sorted(meter.parts.items())},
        "totals": {part: {k: round(getattr(c, k), 3) for k in Counts.NUMBERS}
                   for part, c in sorted(meter.parts.items())},
        "dollars_per_million_calls": {"by_service": {k: round(v, 4) for k, v in by_service.most_common()},
                                      "by_part": per_m, "total": round(total, 4),
                                      f"total_if_aws_requests_took_{AWS_REQUEST_S * 1000:.0f}ms": round(
                                          total + delta * 1e6 * PRICES["lambda_gb_s_arm64"], 4)},
        "dispatch_gb_s_per_call_model_at_the_limit": round(dispatch_model, 5),
        "top_drivers_per_million": [(k, round(v, 4)) for k, v in drivers.most_common(8)],
        "uncounted_harness_calls": dict(meter.uncounted.most_common(10)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--rate", type=int, default=30_000, help="calls/minute: the limit, enforced by the simulator")
    p.add_argument("--concurrency", type=int, default=5, help="dispatchers (template DispatchMaxConcurrency: 5)")
    p.add_argument("--latency", type=float, nargs=2, default=(0.3, 1.0))
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    figures = run(args.rows, args.rate, args.concurrency, tuple(args.latency))
    text = json.dumps(figures, indent=2, default=lambda o: float(o) if isinstance(o, Decimal) else str(o))
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
