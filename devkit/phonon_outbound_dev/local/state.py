"""The local run's memory between runs: the dedupe claims, in a directory the user can see.

On AWS the state table keeps every accepted call's dedupe claim (`DEDUPE#<hash>` items, with
their expiry) for the dedupe window, so the same call from a later file is DUPLICATE, not a
second call. A local run's DynamoDB lives only as long as the run; this module saves those
claims to `<state dir>/dedupe-claims.jsonl` at the end of a run (also after Ctrl-C) and loads
them into the next run's table at its start, so duplicate protection spans local runs too.

What is saved: the `DEDUPE#…` items that have not expired (in DynamoDB's own JSON, so every
attribute survives as written, whatever the dispatcher stores), and for each job that owns one
of them a stub of its job item (`JOB#<job>/META` with the input key only), so a DUPLICATE's
reason can still name the file and row that was accepted. No phone number, cell value or
security-id is in either: a claim is a hash of the call plus `<job>.<row>`.

The file is rewritten whole (a temporary file renamed over it), under an advisory lock; claims
another run saved meanwhile are merged in, not lost. Deleting the directory forgets everything.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from phonon_outbound.records import parse_row_ref

CLAIMS_FILE = "dedupe-claims.jsonl"
DEDUPE_PREFIX = "DEDUPE#"
JOB_PREFIX = "JOB#"
README_TEXT = """\
phonon-outbound's local state (see the README, "Local runs").

dedupe-claims.jsonl: the calls accepted by local runs within the dedupe window (a hash of each
call and the file row it came from; no phone numbers). A later local run reports the same call
as DUPLICATE instead of calling again. Delete this directory to forget them, or run with
--no-state to neither read nor write it.
"""


def _expiry(item: dict[str, Any]) -> float | None:
    """Epoch seconds after which a claim no longer counts (`expires`, else `expires_at`)."""
    for name in ("expires", "expires_at"):
        value = item.get(name)
        if isinstance(value, dict) and "N" in value:
            return float(value["N"])
    return None


def _attribute_ok(value: Any) -> bool:
    """A DynamoDB AttributeValue (in DynamoDB's JSON) that BatchWriteItem accepts."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    (kind, v), = value.items()
    if kind == "S":
        return isinstance(v, str)
    if kind == "N":
        try:
            float(v)
        except (TypeError, ValueError):
            return False
        return isinstance(v, str)
    if kind == "BOOL":
        return isinstance(v, bool)
    if kind == "NULL":
        return v is True
    if kind in ("SS", "NS"):
        return isinstance(v, list) and bool(v) and all(_attribute_ok({kind[0]: x}) for x in v)
    if kind == "M":
        return isinstance(v, dict) and all(isinstance(k, str) and _attribute_ok(x) for k, x in v.items())
    if kind == "L":
        return isinstance(v, list) and all(_attribute_ok(x) for x in v)
    return False  # B / BS: nothing we save carries binary


def _item_ok(item: Any) -> bool:
    """A saved item the next run can load: its keys are strings, every attribute well formed."""
    return (isinstance(item, dict) and all(isinstance(k, str) and _attribute_ok(v) for k, v in item.items())
            and "S" in item.get("pk", {}) and "S" in item.get("sk", {})
            and all("N" in item[n] for n in ("expires", "expires_at") if n in item)
            and ("owner" not in item or "S" in item["owner"]))


def _live(item: dict[str, Any], now: float) -> bool:
    expiry = _expiry(item)
    return expiry is None or expiry >= now


def _owner_job(item: dict[str, Any]) -> str:
    ref = parse_row_ref(item.get("owner", {}).get("S", ""))
    return ref[0] if ref is not None else ""


class LocalState:
    """Load / save the dedupe claims of a local run (DynamoDB low-level client, raw items)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / CLAIMS_FILE
        self.damaged = 0  # lines of the file the last read() could not use

    def problem(self) -> str | None:
        """Why this folder cannot keep the state (None: it can): created when missing, then
        a file written and removed in it, and the saved claims (if any) read. Found before a
        run sends anything, so duplicate protection is never lost silently at its end."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".probe-", dir=self.folder)
            os.close(fd)
            os.unlink(probe)
            if self.path.exists():
                with self.path.open("rb") as fh:
                    fh.read(1)
        except OSError as err:
            return err.strerror or str(err)
        return None

    # ---------------------------------------------------------------- file
    def read(self, now: float | None = None) -> list[dict[str, Any]]:
        """The saved items still alive (claims) and the job stubs they name."""
        now = time.time() if now is None else now
        if not self.path.is_file():
            return []
        claims, jobs = [], {}
        self.damaged = 0
        # errors="replace": bytes that are not UTF-8 spoil their own line only
        with self.path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    item = None
                if not _item_ok(item):
                    self.damaged += 1  # a damaged line costs one claim, not the run
                    continue
                pk = item["pk"]["S"]
                if pk.startswith(DEDUPE_PREFIX) and _live(item, now):
                    claims.append(item)
                elif pk.startswith(JOB_PREFIX):
                    jobs[pk] = item
        wanted = {f"{JOB_PREFIX}{_owner_job(c)}" for c in claims}
        return claims + [j for pk, j in jobs.items() if pk in wanted]

    def write(self, items: Iterable[dict[str, Any]], now: float | None = None) -> int:
        """Merge `items` with what the file holds now (another run may have saved meanwhile)
        and rewrite it atomically. Returns the number of claims saved."""
        now = time.time() if now is None else now
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._locked():
            return self._write(list(items), now)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (two runs ending together): an advisory lock where the
        platform has one (POSIX); elsewhere the read-merge-replace still keeps most."""
        try:
            import fcntl
        except ImportError:  # Windows
            yield
            return
        with (self.folder / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write(self, items: list[dict[str, Any]], now: float) -> int:
        merged: dict[str, dict[str, Any]] = {}
        for item in [*self.read(now), *items]:
            pk = item["pk"]["S"]
            if pk.startswith(DEDUPE_PREFIX) and not _live(item, now):
                continue
            old = merged.get(pk)
            if old is None or (_expiry(item) or 0) >= (_expiry(old) or 0):
                merged[pk] = item
        claims = [i for pk, i in merged.items() if pk.startswith(DEDUPE_PREFIX)]
        wanted = {f"{JOB_PREFIX}{_owner_job(c)}" for c in claims}
        keep = claims + [i for pk, i in merged.items() if pk in wanted]
        readme = self.folder / "README.txt"
        if not readme.exists():
            readme.write_text(README_TEXT, encoding="utf-8")
        fd, tmp = tempfile.mkstemp(prefix=".claims-", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                for item in keep:
                    fh.write(json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return len(claims)

    # ---------------------------------------------------------------- table
    @staticmethod
    def load_into(client: Any, table: str, items: list[dict[str, Any]]) -> int:
        """Put the saved items into the run's state table (BatchWriteItem, 25 a request)."""
        for i in range(0, len(items), 25):
            request: dict | None = {table: [{"PutRequest": {"Item": item}} for item in items[i:i + 25]]}
            while request:
                request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or None
        return sum(1 for i in items if i["pk"]["S"].startswith(DEDUPE_PREFIX))

    @staticmethod
    def claims_at(client: Any, table: str, hashes: Iterable[str], now: float | None = None,
                  released: dict[str, set[int]] | None = None) -> Iterator[dict[str, Any]]:
        """The live dedupe claims at these hashes (BatchGetItem, 100 keys a request: the
        embedded DynamoDB scans slowly, ~1 s per 1,000 items), except those of `released`
        rows, then their jobs' stubs."""
        now = time.time() if now is None else now
        released = released or {}
        keys = [{"pk": {"S": f"{DEDUPE_PREFIX}{h}"}, "sk": {"S": "-"}} for h in sorted(set(hashes))]
        jobs: set[str] = set()
        for i in range(0, len(keys), 100):
            request: dict | None = {table: {"Keys": keys[i:i + 100], "ConsistentRead": True}}
            while request:
                got = client.batch_get_item(RequestItems=request)
                yield from LocalState._kept(got.get("Responses", {}).get(table, []), now, released, jobs)
                request = got.get("UnprocessedKeys") or None
        yield from LocalState._stubs(client, table, jobs)

    @staticmethod
    def _stubs(client: Any, table: str, jobs: Iterable[str]) -> Iterator[dict[str, Any]]:
        for job in sorted(jobs):
            meta = client.get_item(TableName=table, Key={"pk": {"S": f"{JOB_PREFIX}{job}"}, "sk": {"S": "META"}},
                                   ProjectionExpression="pk, sk, #k", ExpressionAttributeNames={"#k": "key"},
                                   ConsistentRead=True).get("Item")
            if meta and "key" in meta:
                yield meta

    @staticmethod
    def claims_in(client: Any, table: str, now: float | None = None,
                  released: dict[str, set[int]] | None = None) -> Iterator[dict[str, Any]]:
        """(Slow on the embedded DynamoDB: a Scan.) The live dedupe claims of the run's table, except those of `released` rows
        (`{job: {row, …}}`: rows the run did not send after all), then their jobs' stubs."""
        now = time.time() if now is None else now
        released = released or {}
        jobs: set[str] = set()
        pages = client.get_paginator("scan").paginate(
            TableName=table, FilterExpression="begins_with(pk, :d)",
            ExpressionAttributeValues={":d": {"S": DEDUPE_PREFIX}}, ConsistentRead=True)
        for page in pages:
            yield from LocalState._kept(page.get("Items", []), now, released, jobs)
        yield from LocalState._stubs(client, table, jobs)

    @staticmethod
    def _kept(items: Iterable[dict[str, Any]], now: float, released: dict[str, set[int]],
              jobs: set[str]) -> Iterator[dict[str, Any]]:
        """The live claims among `items` whose row was not released; their jobs added to `jobs`."""
        for item in items:
            if not _live(item, now):
                continue
            ref = parse_row_ref(item.get("owner", {}).get("S", ""))
            if ref is not None and ref[1] in released.get(ref[0], ()):
                continue
            jobs.add(ref[0] if ref is not None else "")
            yield item
