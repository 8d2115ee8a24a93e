"""`phonon-outbound suppress add|remove|list|import`, the local list kept between runs, and the
in-memory list `check --suppress` uses (docs/suppression.md).

Against a deployed stack (`--stack`, with `--region` / `--profile`): the stack's outputs name
its table (`SuppressionTableName`) and salt (`SuppressionSaltSecretArn`). Without `--stack`:
the local state directory (`--state-dir`, default `./.phonon-outbound`), which local runs load
into their embedded table and save back (webhook opt-outs and the frequency cap's log survive
between runs): `suppression.jsonl` (the items, hashed exactly as on AWS) and `suppression-salt`
(the local salt, made on first use, readable by its owner only).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from phonon_outbound.suppression import (
    ALL_FLOWS,
    CLIENT,
    NUMBER,
    DynamoListTable,
    Entry,
    Hasher,
    MemoryListTable,
    SuppressionList,
)

ITEMS_FILE = "suppression.jsonl"
SALT_FILE = "suppression-salt"
TABLE_OUTPUT, SALT_OUTPUT = "SuppressionTableName", "SuppressionSaltSecretArn"
OPTION_SOURCE = "--suppress"  # entries a run got from `--suppress FILE`: for that run only


# ---------------------------------------------------------------------- the local list
class LocalList:
    """The list in the state directory: loaded whole, written back atomically."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.items_path = self.folder / ITEMS_FILE
        self.salt_path = self.folder / SALT_FILE

    def salt(self) -> str:
        if self.salt_path.is_file():
            value = self.salt_path.read_text(encoding="utf-8").strip()
            if value:
                return value
        self.folder.mkdir(parents=True, exist_ok=True)
        value = secrets.token_hex(32)
        fd = os.open(self.salt_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value + "\n")
        return value

    def items(self) -> list[dict]:
        if not self.items_path.is_file():
            return []
        out = []
        with self.items_path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict) and isinstance(item.get("pk"), str):
                    out.append(item)
        return out

    def write(self, items: Iterable[dict]) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".suppression-", dir=self.folder)
        n = 0
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                for item in items:
                    fh.write(json.dumps(item, separators=(",", ":")) + "\n")
                    n += 1
            os.replace(tmp, self.items_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return n

    def open(self, region: str = "IN") -> tuple[SuppressionList, MemoryListTable]:
        table = MemoryListTable(self.items())
        return SuppressionList(table, Hasher(self.salt()), region), table


def without_option_entries(items: Iterable[dict]) -> Iterator[dict]:
    """The items to keep after a run: entries that came from `--suppress FILE` are dropped, and
    items whose time ran out (what TTL deletes on AWS)."""
    now = datetime.now(UTC).timestamp()
    for item in items:
        if item.get("expires_at") is not None and float(item["expires_at"]) <= now:
            continue
        scopes = item.get("scopes")
        if isinstance(scopes, dict):
            kept = {s: e for s, e in scopes.items() if not str(e.get("src", "")).startswith(OPTION_SOURCE)}
            if not kept and scopes:
                continue
            item = {**item, "scopes": kept}
        yield item


# ---------------------------------------------------------------------- a stack's list
def stack_list(session: Any, stack: str, region: str = "IN") -> SuppressionList:
    from .redrive import StackError

    cfn = session.client("cloudformation")
    stacks = cfn.describe_stacks(StackName=stack)["Stacks"]
    values = {o["OutputKey"]: o["OutputValue"] for o in (stacks[0].get("Outputs", []) if stacks else [])}
    if TABLE_OUTPUT not in values or SALT_OUTPUT not in values:
        raise StackError(f"stack '{stack}' has no output {TABLE_OUTPUT} / {SALT_OUTPUT}: is it a phonon-outbound "
                         f"stack with the suppression list?")
    table = DynamoListTable(session.resource("dynamodb").Table(values[TABLE_OUTPUT]))
    sm = session.client("secretsmanager")
    salt = sm.get_secret_value(SecretId=values[SALT_OUTPUT])["SecretString"].strip()
    return SuppressionList(table, Hasher(salt), region)


# ---------------------------------------------------------------------- files
def import_files(lst: SuppressionList, paths: Iterable[Path], scope: str, source_prefix: str,
                 expires: float | None = None, remove: bool = False) -> list[dict]:
    """Each file's numbers and identifiers (the contact reader's formats) onto the list (or off)."""
    from phonon_outbound.contacts import FileRejected
    from phonon_outbound.settings import Settings
    from phonon_outbound.suppress_intake import read_subjects, subject_keys

    settings = Settings.from_env().model_copy(update={"default_region": lst.region})
    out = []
    for path in paths:
        entry: dict[str, Any] = {"file": str(path)}
        try:
            with path.open("rb") as fh:
                subjects, rows, rejected = read_subjects(fh, path.name, settings, reopen=lambda p=path: p.open("rb"))
        except FileRejected as err:
            out.append({**entry, "error": err.reason, "entries": 0})
            continue
        keys, bad = subject_keys(lst, subjects)
        done = lst.remove_keys(keys, scope) if remove else lst.add_keys(keys, scope, f"{source_prefix} {path.name}",
                                                                        expires)
        out.append({**entry, "rows": rows, "rejected_rows": rejected + bad, "entries": done})
    return out


def memory_list(paths: Iterable[Path], region: str = "IN") -> SuppressionList:
    """A throw-away list of these files (`check --suppress`): nothing is kept."""
    lst = SuppressionList(MemoryListTable(), Hasher(secrets.token_hex(16)), region)
    for result in import_files(lst, paths, ALL_FLOWS, OPTION_SOURCE):
        if result.get("error"):
            raise ValueError(f"--suppress {result['file']}: {result['error']}")
    return lst


# ---------------------------------------------------------------------- the command
def run_command(args: Any, lst: SuppressionList, out: Any) -> int:
    """add | remove | list | import on `lst`; returns the number of entries changed or listed."""
    scope = args.flow or ALL_FLOWS
    kind = CLIENT if getattr(args, "client_id", False) else NUMBER
    expires = (datetime.now(UTC).timestamp() + args.hours * 3600) if getattr(args, "hours", None) else None
    if args.action == "add":
        keys, bad = _keys(lst, kind, args.values)
        n = lst.add_keys(keys, scope, "cli", expires)
        print(f"added {n} entr{'y' if n == 1 else 'ies'} ({_scope_text(scope)})" + _bad_text(bad), file=out)
        return n
    if args.action == "remove":
        keys = [v for v in args.values if v[:2] in ("n#", "c#")]
        more, bad = _keys(lst, kind, [v for v in args.values if v not in keys])
        n = lst.remove_keys([*keys, *more], None if args.all_scopes else scope)
        print(f"removed {n} entr{'y' if n == 1 else 'ies'}" + _bad_text(bad), file=out)
        return n
    if args.action == "import":
        results = import_files(lst, args.files, scope, "cli import", expires, remove=args.remove)
        for r in results:
            what = f"error: {r['error']}" if r.get("error") else (
                f"{r['entries']} entries {'removed' if args.remove else 'added'} from {r['rows']} rows"
                + (f", {r['rejected_rows']} rows without a valid number" if r["rejected_rows"] else ""))
            print(f"{r['file']}: {what}", file=out)
        return sum(r.get("entries", 0) for r in results)
    entries = sorted(find(lst, kind, args.find) if args.find else lst.entries(), key=lambda e: (e.at, e.key))
    if args.flow:
        entries = [e for e in entries if e.scope in (ALL_FLOWS, args.flow)]
    if args.json:
        print(json.dumps([_entry_dict(e) for e in entries]), file=out)
    else:
        for e in entries:
            until = _iso(e.expires) if e.expires is not None else "-"
            print(f"{e.key}  {e.kind:<17}  {_scope_text(e.scope):<14}  added {_iso(e.at)}  until {until}  "
                  f"source: {e.source}", file=out)
        print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} (numbers and identifiers are listed by "
              f"their salted hash: look one up with 'suppress list --find VALUE')", file=out)
    return len(entries)


def find(lst: SuppressionList, kind: str, value: str) -> list[Entry]:
    key = lst.subject_key(kind, value)
    return [e for e in lst.entries() if e.key == key]


def _keys(lst: SuppressionList, kind: str, values: Iterable[str]) -> tuple[list[str], int]:
    from phonon_outbound.suppress_intake import subject_keys

    return subject_keys(lst, [(kind, v) for v in values])


def _bad_text(bad: int) -> str:
    return f"; {bad} value(s) skipped: not a valid phone number (use --client-id for identifiers)" if bad else ""


def _scope_text(scope: str) -> str:
    return "all flows" if scope == ALL_FLOWS else f"flow {scope}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry_dict(e: Entry) -> dict:
    return {"hash": e.key, "kind": e.kind, "flow": "all" if e.scope == ALL_FLOWS else e.scope, "source": e.source,
            "added": _iso(e.at), "expires": _iso(e.expires) if e.expires is not None else None}
