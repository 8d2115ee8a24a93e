"""The `phonon-outbound` command: run | check | simulate | redrive | suppress | pause | resume | cancel |
limit | status.

Exit status: 0 every row ACCEPTED or DUPLICATE; 1 the run finished but some row is REJECTED,
FAILED, CANCELLED or SUPPRESSED (or a file was rejected whole); 2 usage or configuration
error (nothing sent); 130 interrupted with Ctrl-C (the reports say how far it got).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK, EXIT_ROWS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
STATUS_COUNTS = ("accepted", "rejected", "duplicate", "failed", "cancelled", "suppressed")
COUNTS = ("rows", *STATUS_COUNTS)
CONTACT_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson")
SECURITY_ID_ENV = "PHONON_SECURITY_ID"
STATE_DIR = Path(".phonon-outbound")

# A dispatcher (one Lambda instance) sends a batch of up to 10 chunks and takes the next batch
# only after the batch's last answer: alone, it leaves the limiter's slots unused for that long
# (measured at 30,000/min, 0.3-1 s latency: 0.92 of the limit with one, 0.99 with two).
MIN_DISPATCHERS = 2

_FLOW_RE = re.compile(r"^[A-Za-z0-9]{8}$")
_SID_RE = re.compile(r"^[A-Za-z0-9]{64}$")


class UsageError(Exception):
    """A usage or configuration error: one line, exit 2, nothing sent."""


# ---------------------------------------------------------------------- terminal safety
def safe(text: Any) -> str:
    """Text from a file (names, notes, reasons) as it may reach a terminal: control and
    bidirectional-override characters are shown escaped (`\\x1b`), never written raw."""
    out = []
    for ch in str(text):
        cat = unicodedata.category(ch)
        if ch == "\t":
            out.append(" ")
        elif cat == "Cc" or (cat == "Cf" and ch not in "\u200d") or cat in ("Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


# ---------------------------------------------------------------------- option types
def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _batch(text: str) -> int:
    value = _positive(text)
    if value > 10_000:
        raise argparse.ArgumentTypeError("must be between 1 and 10000")
    return value


def _flow_id(text: str) -> str:
    text = text.strip()
    if not _FLOW_RE.match(text):
        raise argparse.ArgumentTypeError(f"{safe(text)!r} is not a Phonon flow id (8 letters or digits)")
    return text


def api_url(text: str) -> str:
    """--api-url: an http(s) URL with a host (and a valid port, if any); the scheme in any case.
    A URL the HTTP client cannot call would otherwise fail every request of the run."""
    from urllib.parse import urlsplit, urlunsplit

    text = text.strip()
    problem = f"{safe(text)!r} is not an http(s) URL with a host (e.g. https://host/kairos-apis/outbound/create)"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        raise argparse.ArgumentTypeError(problem) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(problem)
    return urlunsplit(parts._replace(scheme=parts.scheme.lower()))


def _columns(text: str) -> tuple[str, ...]:
    names = tuple(c.strip() for c in text.split(",") if c.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one column name (comma-separated)")
    return names


def _drop_webhooks(text: str) -> int | float:
    from .simulator import parse_drop_webhooks

    return parse_drop_webhooks(text)


def _column(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("give a column name")
    return text.strip()


def _window(text: str) -> str:
    from phonon_outbound.windows import WindowError, parse_window

    try:
        return parse_window(text).spec
    except WindowError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _zone(text: str) -> str:
    from phonon_outbound.windows import WindowError, zone

    try:
        zone(text.strip())
    except WindowError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text.strip()


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {safe(text)!r}") from None
    if not 0 <= value < 1440:
        raise argparse.ArgumentTypeError("must be between 0 and 1439 minutes")
    return value


def add_window_options(p: argparse.ArgumentParser) -> None:
    """--window and its companions (docs/calling-windows.md), the same for run and check."""
    p.add_argument("--window", type=_window, metavar="SPEC",
                   help="calling window in the recipient's time zone, e.g. 'Mon-Sat 09:00-21:00; except 2026-12-25' "
                        "(parts separated by ';'); rows are sent only while it is open (default: no window)")
    p.add_argument("--window-tz", type=_zone, metavar="ZONE",
                   help="the window's zone for numbers whose own zone is not one single zone (default Asia/Kolkata)")
    p.add_argument("--window-policy", choices=("reject", "defer"), default=None,
                   help="a start-time outside the window: reject the row (default) or defer it to the next opening")
    p.add_argument("--window-margin", type=_minutes, metavar="MIN",
                   help="no call starts in the last MIN minutes before the window closes (default 0)")


def window_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The Settings fields the window options set (none without --window)."""
    if not getattr(args, "window", None):
        for name in ("window_tz", "window_policy", "window_margin"):
            if getattr(args, name, None) is not None:
                raise UsageError(f"--{name.replace('_', '-')} needs --window")
        return {}
    out: dict[str, Any] = {"calling_window": args.window}
    if args.window_tz:
        out["calling_window_tz"] = args.window_tz
    if args.window_policy:
        out["calling_window_policy"] = args.window_policy
    if args.window_margin is not None:
        out["calling_window_margin_min"] = args.window_margin
    return out


# ---------------------------------------------------------------------- parser
class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (what is wrong, and where the help is) instead
    of the usage block, and never a raw control character from the command line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {safe(message)} (see '{self.prog} --help')\n")


def build_parser() -> Parser:
    p = Parser(prog="phonon-outbound", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p.set_defaults(_commands=sub.choices)

    run = sub.add_parser(
        "run", help="run the whole pipeline locally (embedded AWS + Phonon simulator)",
        description="Run the whole serverless pipeline on this machine: an embedded AWS (moto), the same "
                    "ingest, dispatch and webhook handlers as on AWS, and the bundled Phonon simulator unless "
                    "--api-url is given. Reports go to --out. Exit status: 0 every row ACCEPTED or DUPLICATE, "
                    "1 some row not (or a file rejected), 2 usage or configuration error, 130 Ctrl-C.")
    run.add_argument("files", nargs="+", type=Path, metavar="FILE",
                     help="contact files (.csv .tsv .txt .json .jsonl .ndjson, or .gz of each); a directory "
                          "stands for its contact files, sorted by name (not its sub-directories)")
    run.add_argument("--flow-id", type=_flow_id, metavar="ID", help="flow for files that name none (8 letters or digits)")
    run.add_argument("--api-url", type=api_url, metavar="URL", help="the Phonon create endpoint to call (default: the bundled simulator)")
    run.add_argument("--security-id", action="append", default=[], metavar="[FLOW=]SID",
                     help=f"a flow's 64-character security-id: SID for --flow-id, FLOW=SID for another flow (e.g. "
                          f"a JSON file's own flow-id); repeatable. Better kept off the command line: env "
                          f"{SECURITY_ID_ENV} (for --flow-id) and {SECURITY_ID_ENV}_<FLOW> (for flow FLOW). "
                          f"Default with the simulator: its demo id")
    run.add_argument("--rate", type=_positive, default=30_000, metavar="N",
                     help="records (calls) per minute, global rate limit (default 30000)")
    run.add_argument("--batch-size", type=_batch, default=None, metavar="N",
                     help="calls per API request, 1-10000 (default 500; never more than one second's worth of "
                          "--rate: lowered, and said so)")
    run.add_argument("--concurrency", type=_positive, default=2, metavar="N",
                     help="dispatch workers running at once (default 2; at least 2, as the SQS event source)")
    run.add_argument("--out", type=Path, default=Path("outbound-reports"), metavar="DIR",
                     help="folder for the reports: <file>.<UTC upload time>.results.csv and .summary.json per "
                          "input (default ./outbound-reports)")
    run.add_argument("--json", action="store_true",
                     help="print the final summary as one JSON object on stdout (human output goes to stderr)")
    run.add_argument("--shape", choices=("202", "200"), default="202",
                     help="answer shape of the bundled simulator: 202 bulk (default) or 200 with call-details")
    run.add_argument("--drop-webhooks", type=_drop_webhooks, metavar="N|RATIO",
                     help="testing aid, bundled simulator only: lose the flow-end pushes of the first N accepted "
                          "calls (or a RATIO such as 0.1); the reconciler pulls their outcomes before the reports")
    run.add_argument("--phone-columns", type=_columns, metavar="COL[,COL…]",
                     help="the file's phone columns, in order, instead of recognising them by name (sent as S3 "
                          "object metadata 'phone-columns', as on AWS)")
    run.add_argument("--id-column", type=_column, metavar="COL",
                     help="the column that holds the client-identifier (S3 object metadata 'id-column')")
    run.add_argument("--state-dir", type=Path, default=STATE_DIR, metavar="DIR",
                     help="where duplicate protection is kept between local runs: the calls accepted within the "
                          "dedupe window (default ./.phonon-outbound; delete it to forget them)")
    run.add_argument("--no-state", action="store_true",
                     help="neither read nor write the duplicate protection in the state directory: every run "
                          "starts with no memory of earlier runs (a rerun calls everyone again); only the "
                          "live-run file that pause/resume/cancel use is written there while the run lasts")
    run.add_argument("--suppress", type=Path, action="append", default=[], metavar="FILE",
                     help="numbers and client-identifiers not to contact in this run (a file in the contact files' "
                          "formats; repeatable); added to the local suppression list for this run only")
    run.add_argument("--log-file", type=Path, metavar="FILE",
                     help="where the machine logs go (default <out>/logs/run-<UTC time>.log)")
    run.add_argument("--verbose", action="store_true", help="also show the machine logs on stderr")
    run.add_argument("--html", type=Path, metavar="FILE",
                     help="also write a one-page HTML report of the run (each job's counts, calls per minute over "
                          "time, outcome mix) to FILE")
    add_window_options(run)

    check = sub.add_parser(
        "check", help="validate files only: same rules and report, nothing sent",
        description="Apply ingest's rules to local files and write the same report and summary (ACCEPTED means "
                    "'would be sent'); nothing is sent and no AWS is needed. Exit status as for run.")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE",
                       help="contact files; a directory stands for its contact files, sorted by name")
    check.add_argument("--flow-id", type=_flow_id, metavar="ID", help="flow for files that name none (8 letters or digits)")
    check.add_argument("--out", type=Path, default=Path("outbound-reports"), metavar="DIR",
                       help="folder for the reports (default ./outbound-reports)")
    check.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    check.add_argument("--batch-size", type=_batch, default=500, metavar="N",
                       help="calls per API request the check sizes chunks for (default 500)")
    check.add_argument("--phone-columns", type=_columns, metavar="COL[,COL…]",
                       help="the file's phone columns, in order, instead of recognising them by name")
    check.add_argument("--id-column", type=_column, metavar="COL",
                       help="the column that holds the client-identifier")
    add_window_options(check)
    check.add_argument("--suppress", type=Path, action="append", default=[], metavar="FILE",
                       help="numbers and client-identifiers not to contact (a file in the contact files' formats; "
                            "repeatable): their rows are shown SUPPRESSED")

    sp = sub.add_parser(
        "suppress", help="the suppression list: add | remove | list | import (a deployed stack or the local state)",
        description="Numbers and client-identifiers that must not be contacted (docs/suppression.md). With --stack "
                    "the deployed stack's list; otherwise the local state directory, which local runs use. "
                    "Entries are stored as salted hashes: 'list' shows hashes, source, flow and expiry, never "
                    "a number; 'list --find VALUE' looks one up.")
    sp_sub = sp.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("add", "put numbers (any writing) or, with --client-id, identifiers on the list"),
                       ("remove", "take numbers, identifiers or listed hashes (n#…, c#…) off the list"),
                       ("list", "show the entries (by hash)"),
                       ("import", "add (or --remove) every number and identifier of contact-format files")):
        a = sp_sub.add_parser(name, help=text, description=text)
        if name in ("add", "remove"):
            a.add_argument("values", nargs="+", metavar="VALUE")
        if name == "import":
            a.add_argument("files", nargs="+", type=Path, metavar="FILE")
            a.add_argument("--remove", action="store_true", help="take the files' entries off instead")
        if name in ("add", "remove", "list"):
            a.add_argument("--client-id", action="store_true", help="the values are client-identifiers, not numbers")
        a.add_argument("--flow", type=_flow_id, metavar="ID", help="only for this flow (default: every flow)")
        if name in ("add", "import"):
            a.add_argument("--hours", type=float, metavar="H", help="a temporary hold: the entries expire after H hours")
        if name == "remove":
            a.add_argument("--all-scopes", action="store_true", help="remove the entries of every flow")
        if name == "list":
            a.add_argument("--find", metavar="VALUE", help="only the entries of this number (or --client-id)")
            a.add_argument("--json", action="store_true", help="one JSON array on stdout")
        a.add_argument("--phone-region", default="IN", metavar="CC",
                       help="region of numbers written without a country code (default IN)")
        a.add_argument("--stack", metavar="NAME", help="a deployed stack's list (its SuppressionTableName output)")
        a.add_argument("--region", metavar="REGION", help="AWS region of the stack")
        a.add_argument("--profile", metavar="NAME", help="AWS named profile to use")
        a.add_argument("--state-dir", type=Path, default=STATE_DIR, metavar="DIR",
                       help="without --stack: the local state directory (default ./.phonon-outbound)")

    sub.add_parser("simulate", help="run the Phonon simulator standalone (simulate --help for its options)",
                   add_help=False)

    rd = sub.add_parser(
        "redrive", help="move dead-lettered chunks back to their queues (deployed stack)",
        description="Move chunk messages from the dead-letter queue back to the queue each came from (the chunk "
                    "queue or the express lane) of a deployed stack, once the cause is fixed. Nothing Phonon "
                    "already accepted is placed again.")
    where = rd.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", metavar="NAME", help="CloudFormation stack name (reads its ChunkQueueUrl and "
                                       "ChunkDeadLetterQueueUrl outputs)")
    where.add_argument("--dlq-url", metavar="URL", help="the dead-letter queue URL (with --queue-url)")
    rd.add_argument("--queue-url", metavar="URL", help="the chunk queue URL (with --dlq-url)")
    rd.add_argument("--limit", type=_positive, metavar="N", help="move at most this many messages (default: all)")
    rd.add_argument("--region", metavar="REGION", help="AWS region of the stack (default: AWS_REGION / AWS_DEFAULT_REGION / profile)")
    rd.add_argument("--profile", metavar="NAME", help="AWS named profile to use (default: AWS_PROFILE or the default chain)")
    from .steer import add_parsers as add_control_parsers  # pause | resume | cancel | limit

    add_control_parsers(sub, STATE_DIR)
    from .job_status import add_parser as add_status_parser

    add_status_parser(sub)
    return p


# ---------------------------------------------------------------------- output places
def usable_folder(folder: Path, option: str) -> None:
    """Create `folder` (the folder an option names) or say, in one line, why it cannot hold
    the files written there; checked before anything is sent."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {safe(folder)} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UsageError(f"{option} {safe(folder)} cannot be written ({safe(err.strerror or err)})") from None


def usable_file(path: Path, option: str) -> None:
    """The file an option names can be appended to (its folder created), or one line why not."""
    if path.is_dir():
        raise UsageError(f"{option} {safe(path)} is a folder: name a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as err:
        raise UsageError(f"{option} {safe(path)} cannot be written ({safe(err.strerror or err)})") from None


# ---------------------------------------------------------------------- inputs
def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; a directory stands for its contact files (by suffix, .gz too), sorted
    by name, not descending into sub-directories. A missing path or a directory with no
    contact file is a usage error."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted((c for c in p.iterdir() if c.is_file() and not c.name.startswith(".")
                            and c.name.lower().removesuffix(".gz").endswith(CONTACT_SUFFIXES)),
                           key=lambda c: c.name)
            if not found:
                raise UsageError(f"{safe(p)} is a directory with no contact files (.csv .tsv .txt .json .jsonl "
                                 f".ndjson, or .gz of each)")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise UsageError(f"no such file: {safe(p)}")
    return out


def security_ids(args: argparse.Namespace, environ: Any = None) -> tuple[str | None, dict[str, str]]:
    """(security-id for --flow-id, {flow: security-id}) from --security-id and the environment.

    For a flow FLOW, the first found of: `--security-id FLOW=SID`, `PHONON_SECURITY_ID_FLOW`;
    for --flow-id also a plain `--security-id SID` (before the FLOW variable) and
    `PHONON_SECURITY_ID` (last). Values are checked for shape and never echoed."""
    env = os.environ if environ is None else environ
    from_env: dict[str, str] = {}
    prefix = f"{SECURITY_ID_ENV}_"
    for name, value in env.items():
        if name.startswith(prefix) and value.strip():
            flow = name[len(prefix):]
            if not _FLOW_RE.match(flow):
                raise UsageError(f"environment variable {safe(name)}: '{safe(flow)}' is not a Phonon flow id")
            from_env[flow] = value.strip()
    given: dict[str, str] = {}
    plain: str | None = None
    for text in args.security_id:
        flow, sep, sid = text.partition("=")
        if sep:
            if not _FLOW_RE.match(flow.strip()):
                raise UsageError(f"--security-id FLOW=SID: '{safe(flow.strip())}' is not a Phonon flow id "
                                 f"(8 letters or digits)")
            given[flow.strip()] = sid.strip()
        else:
            plain = text.strip()
    flows = {**from_env, **given}
    mine = None
    if args.flow_id:
        mine = (given.get(args.flow_id) or plain or from_env.get(args.flow_id)
                or (env.get(SECURITY_ID_ENV) or "").strip() or None)
        if mine:
            flows[args.flow_id] = mine
    elif plain:
        raise UsageError("--security-id SID without --flow-id: give it as --security-id FLOW=SID")
    for flow, sid in flows.items():
        if not _SID_RE.match(sid):
            raise UsageError(f"the security-id given for flow {flow} is not 64 letters or digits")
    return mine, flows


# ---------------------------------------------------------------------- output
def _counts_text(c: dict) -> str:
    parts = [f"{c.get(k, 0):,} {k}" for k in STATUS_COUNTS if c.get(k) or k == "accepted"]
    return ", ".join(parts)


def _requests_text(n: int) -> str:
    return f"{n:,} request{'' if n == 1 else 's'} reached Phonon"


def print_human(result: dict, stream: Any, *, sent: bool = True) -> None:
    for f in result["files"]:
        print(f"{safe(f['file'])}: {f['rows']:,} rows: {_counts_text(f)}", file=stream)
        if f.get("error"):
            print(f"  file rejected: {safe(f['error'])}", file=stream)
            flow = re.search(r"unknown flow '([A-Za-z0-9]{8})'", str(f["error"]))
            if flow:
                print(f"  hint: give flow {flow.group(1)}'s security-id in {SECURITY_ID_ENV}_{flow.group(1)} "
                      f"(or --security-id {flow.group(1)}=SID)", file=stream)
        if f.get("flow"):
            print(f"  flow: {safe(f['flow'])}", file=stream)
        for note in f.get("notes") or []:
            print(f"  note: {safe(note)}", file=stream)
        waited = (f.get("calling_window") or {}).get("reason", "")
        if waited:
            print(f"  {safe(waited.replace('waiting for', 'waited for', 1))}", file=stream)
        print(f"  report: {safe(f['report'])}", file=stream)
    t = result["totals"]
    line = f"total: {t['rows']:,} rows: {_counts_text(t)}"
    if sent:
        line += f"; {_requests_text(int(result.get('api_requests', 0)))}"
    line += f" in {result.get('elapsed_s', 0):.1f} s"
    print(line, file=stream)
    if result.get("webhooks_pending"):
        print(f"{result['webhooks_pending']:,} flow-end webhooks had not arrived when the run ended: those rows have "
              f"their request-id but no phonon-uuid in the report yet", file=stream)
    if result.get("error") and not result.get("interrupted"):
        print(f"run stopped: {safe(result['error'])}", file=stream)
    for err in result.get("internal_errors") or []:
        print(f"internal error (please report it): {safe(err)}", file=stream)


def print_picture(result: dict, pictures: list, html_file: Path | None, stream: Any) -> None:
    """The run's summary (devkit job_status.py) and, with --html, its one-page report."""
    from .job_status import summary_lines

    if result.get("picture"):
        for line in summary_lines(result["picture"], safe):
            print(line, file=stream)
    if html_file is not None:
        from .html import write_report

        s = result.get("picture") or {}
        extra = [("files", len(result["files"])), ("calls sent", f"{s.get('calls_sent', 0):,}"),
                 ("dead letters", s.get("dead_letters", 0)), ("webhooks received", s.get("webhooks_received", 0)),
                 ("elapsed", f"{result.get('elapsed_s', 0):.1f} s")]
        try:
            write_report(html_file, pictures, title="phonon-outbound run", extra=extra)
            print(f"html: {safe(html_file)}", file=stream)
        except OSError as err:
            print(f"warning: --html {safe(html_file)} could not be written ({safe(err.strerror or err)})", file=stream)


def _exit_code(result: dict) -> int:
    if result.get("interrupted") or result.get("interrupted_after_sending"):
        return EXIT_INTERRUPTED
    t = result["totals"]
    bad = sum(t.get(k, 0) for k in ("rejected", "failed", "cancelled", "suppressed"))
    bad += sum(1 for f in result["files"] if f.get("error"))
    return EXIT_ROWS if bad or result.get("error") else EXIT_OK


def _err(text: str) -> None:
    print(f"phonon-outbound: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    from phonon_outbound.settings import fit_batch_size

    files = expand_inputs(args.files)
    sid, others = security_ids(args)
    if args.api_url and args.flow_id and args.flow_id not in others:
        raise UsageError(f"--api-url needs the security-id of flow {args.flow_id}: set {SECURITY_ID_ENV} (or "
                         f"--security-id)")
    human = sys.stderr if args.json else sys.stdout
    batch_size = fit_batch_size(args.rate, args.batch_size)
    if args.batch_size and batch_size < args.batch_size:
        print(f"note: --batch-size {args.batch_size} lowered to {batch_size}: a request may carry at most one "
              f"second's worth of --rate {args.rate}/min", file=sys.stderr)
    concurrency = max(MIN_DISPATCHERS, args.concurrency)
    if concurrency > args.concurrency:
        print(f"note: --concurrency {args.concurrency} raised to {concurrency}: as the SQS event source on AWS "
              f"(MaximumConcurrency 2-1000), the local run keeps at least two dispatchers, so the wait for one "
              f"batch's last answer never stops the sending", file=sys.stderr)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_file = args.log_file or args.out / "logs" / f"run-{stamp}.log"
    usable_folder(args.out, "--out")
    usable_file(log_file, "--log-file")
    if args.html:
        usable_file(args.html, "--html")
    state_dir = None if args.no_state else args.state_dir
    if state_dir is not None:
        from .local.state import LocalState

        problem = LocalState(state_dir).problem()
        if problem:
            raise UsageError(f"--state-dir {safe(state_dir)} cannot keep the duplicate protection ({safe(problem)}): "
                             f"give another --state-dir, or --no-state to run without it")

    from .local.runner import LocalPipeline, RunOptions

    window = window_settings(args)
    opts = RunOptions(flow_id=args.flow_id, api_url=args.api_url, security_id=sid, security_ids=others,
                      rate=args.rate, batch_size=batch_size, concurrency=concurrency, out_dir=args.out,
                      shape=args.shape, phone_columns=args.phone_columns or (), id_column=args.id_column,
                      state_dir=state_dir, live_dir=args.state_dir, log_file=log_file, verbose=args.verbose, suppress_files=list(args.suppress),
                      drop_webhooks=args.drop_webhooks,
                      settings={**window, **({"dispatch_max_wait_s": 1.0} if window else {})})
    started = time.monotonic()
    stage = "start-up"
    try:
        with LocalPipeline(opts) as pipeline:
            if pipeline.state_loaded:
                print(f"duplicate protection: {pipeline.state_loaded:,} calls accepted by earlier local runs "
                      f"(from {safe(state_dir)})", file=sys.stderr)
            if pipeline.state_damaged:
                print(f"warning: {pipeline.state_damaged:,} damaged line(s) of {safe(state_dir)}/dedupe-claims.jsonl "
                      f"ignored: the calls they held are no longer protected from being placed again",
                      file=sys.stderr)
            stage = "upload"
            uploaded = pipeline.upload(files)
            stage = "run"
            result = pipeline.run(files, uploaded)
            pictures = list(pipeline.pictures)
    except KeyboardInterrupt:
        if stage == "run":
            _err(f"interrupted after {time.monotonic() - started:.1f} s, before the reports could be written")
        else:
            _err(f"interrupted during {stage} after {time.monotonic() - started:.1f} s: nothing was sent; "
                 f"run the same command again to start")
        return EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None
    if args.json:
        print(json.dumps(result))
    print_human(result, human)
    print_picture(result, pictures, args.html, human)
    print(f"log: {safe(log_file)}", file=human)
    if state_dir is not None and result.get("state_claims") is not None:
        print(f"duplicate protection: {result['state_claims']:,} accepted calls remembered in {safe(state_dir)}",
              file=human)
    if result.get("state_error"):
        print(f"warning: the duplicate protection could not be saved to {safe(state_dir)} "
              f"({safe(result['state_error'])}): a later run would call this run's contacts again", file=human)
    if result.get("interrupted"):
        t = result["totals"]
        print(f"interrupted: {t['accepted']:,} of {t['rows']:,} rows accepted, {t['cancelled']:,} not sent "
              f"(CANCELLED in the report).", file=human)
        if state_dir is not None:
            print(f"to go on, run the same command again: rows already accepted are reported DUPLICATE, not called "
                  f"again ({safe(state_dir)} remembers them)", file=human)
        else:
            print("to go on, send only the CANCELLED rows: with --no-state a rerun of the same files would call "
                  "the accepted rows again", file=human)
    if result.get("interrupted_after_sending"):
        print("interrupted after every row was sent: the reports above are complete (nothing to run again)",
              file=human)
    human.flush()
    code = _exit_code(result)
    if result.get("interrupted") and any(t.is_alive() and not t.daemon for t in threading.enumerate()
                                         if t is not threading.main_thread()):
        # A dispatcher thread still waits for an answer we no longer need: do not let it hold
        # the exit (the reports and the state are written).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


# ---------------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace) -> int:
    from phonon_outbound.settings import Settings

    from .check import check_file

    files = expand_inputs(args.files)
    usable_folder(args.out, "--out")
    started = time.monotonic()
    suppression = None
    if args.suppress:
        from .suppress import memory_list

        try:
            suppression = memory_list(expand_inputs(args.suppress))
        except ValueError as err:
            raise UsageError(str(err)) from None
    settings = Settings.from_env().model_copy(update={"default_flow_id": args.flow_id or "",
                                                      "batch_size": args.batch_size, **window_settings(args)})
    mapping: dict[str, Any] = {}
    if args.phone_columns:
        mapping["phone_columns"] = args.phone_columns
    if args.id_column:
        mapping["id_column"] = args.id_column
    entries = []
    seen: dict[str, int] = {}
    for path in files:
        # Two inputs with the same name never share a report: the second goes to a sub-folder.
        n = seen[path.name] = seen.get(path.name, 0) + 1
        out = args.out if n == 1 else args.out / f"{path.name}-{n}"
        s = check_file(path, settings, out, suppression=suppression, **mapping)
        entry = {"file": str(path), **{k: int(s.get(k, 0)) for k in COUNTS}, "report": s["report"]}
        for k in ("error", "notes", "flow"):
            if s.get(k):
                entry[k] = s[k]
        entries.append(entry)
    totals = {k: sum(e[k] for e in entries) for k in COUNTS}
    result = {"files": entries, "totals": totals, "api_requests": 0, "elapsed_s": round(time.monotonic() - started, 3)}
    if args.json:
        print(json.dumps(result))
    print_human(result, sys.stderr if args.json else sys.stdout, sent=False)
    return _exit_code(result)


# ---------------------------------------------------------------------- redrive
def aws_session(region: str | None, profile: str | None) -> Any:
    """A boto3 session for a deployed stack; a missing region, profile or credentials is a
    UsageError (one line), found before anything is moved."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        session = boto3.session.Session(region_name=region, profile_name=profile)
    except ProfileNotFound:
        raise UsageError(f"AWS profile '{safe(profile)}' not found (aws configure list-profiles)") from None
    if not session.region_name:
        raise UsageError("no AWS region: give --region, or set AWS_REGION (or a region in the profile)")
    if session.get_credentials() is None:
        raise UsageError("no AWS credentials found: give --profile, or configure credentials (aws configure, "
                         "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, SSO)")
    return session


def aws_error(err: Exception) -> str:
    """One line for an AWS failure, without a traceback."""
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

    if isinstance(err, NoRegionError):
        return "no AWS region: give --region, or set AWS_REGION"
    if isinstance(err, NoCredentialsError):
        return "no AWS credentials found: give --profile, or configure credentials"
    if isinstance(err, ClientError):
        e = err.response.get("Error", {})
        return f"AWS refused {err.operation_name}: {e.get('Code', '')}: {safe(e.get('Message', ''))}"
    return f"{type(err).__name__}: {safe(err)}"


def cmd_redrive(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from .redrive import StackError, redrive, stack_queues

    if args.dlq_url and not args.queue_url:
        raise UsageError("--queue-url is required with --dlq-url")
    session = aws_session(args.region, args.profile)
    try:
        if args.stack:
            queue_url, dlq_url = stack_queues(session.client("cloudformation"), args.stack)
        else:
            queue_url, dlq_url = args.queue_url, args.dlq_url
    except StackError as err:
        raise UsageError(str(err)) from None
    except (ClientError, BotoCoreError) as err:
        raise UsageError(aws_error(err)) from None
    try:
        moved = redrive(session.client("sqs"), dlq_url, queue_url, args.limit)
    except (ClientError, BotoCoreError) as err:
        raise UsageError(aws_error(err)) from None
    except RuntimeError as err:
        _err(str(err))
        return EXIT_ROWS
    print(f"moved {moved} chunk message(s) back to the queue each came from (the chunk queue or the express lane)")
    return EXIT_OK


# ---------------------------------------------------------------------- suppress
def cmd_suppress(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from .redrive import StackError
    from .suppress import LocalList, run_command, stack_list

    local = None
    try:
        if args.stack:
            lst = stack_list(aws_session(args.region, args.profile), args.stack, args.phone_region)
        else:
            local = LocalList(args.state_dir)
            lst, table = local.open(args.phone_region)
        if args.action == "list" and args.find:
            lst.subject_key(CLIENT_KIND if args.client_id else NUMBER_KIND, args.find)  # a usage error if invalid
        run_command(args, lst, sys.stdout)
    except StackError as err:
        raise UsageError(str(err)) from None
    except (ClientError, BotoCoreError) as err:
        raise UsageError(aws_error(err)) from None
    except ValueError as err:
        raise UsageError(safe(str(err))) from None
    if local is not None and args.action != "list":
        from .suppress import without_option_entries

        local.write(without_option_entries(table.scan()))
    return EXIT_OK


CLIENT_KIND, NUMBER_KIND = "c", "n"


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    for stream in (sys.stdout, sys.stderr):  # a name the terminal's encoding lacks is escaped, not a crash
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    if argv[:1] == ["simulate"]:  # the simulator parses its own options (--port, --shape, …)
        from . import simulator

        try:
            return int(simulator.main(argv[1:]) or 0)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # named by the command they were given to, not the top level
            args._commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    from .job_status import cmd_status
    from .steer import cmd_control

    handlers = {"run": cmd_run, "check": cmd_check, "redrive": cmd_redrive, "suppress": cmd_suppress,
                "pause": cmd_control, "resume": cmd_control, "cancel": cmd_control, "limit": cmd_control,
                "status": cmd_status}
    try:
        return handlers[args.command](args)
    except UsageError as err:
        _err(str(err))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except Exception as err:  # a bug: one line for the person, the traceback on request
        if os.environ.get("PHONON_OUTBOUND_DEBUG"):
            raise
        _err(f"internal error: {type(err).__name__}: {safe(err)} (set PHONON_OUTBOUND_DEBUG=1 to see where)")
        return EXIT_ROWS


if __name__ == "__main__":
    sys.exit(main())
