"""The `phonon-outbound` command: run | check | simulate | redrive."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_ROWS, EXIT_USAGE = 0, 1, 2
COUNTS = ("rows", "accepted", "rejected", "duplicate", "failed")


# A dispatcher (one Lambda instance) sends a batch of up to 10 chunks and takes the next batch
# only after the batch's last answer: alone, it leaves the limiter's slots unused for that long
# (measured at 30,000/min, 0.3-1 s latency: 0.92 of the limit with one, 0.99 with two).
MIN_DISPATCHERS = 2


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _batch(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError("must be between 1 and 10000")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="phonon-outbound", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline locally (embedded AWS + Phonon simulator)")
    run.add_argument("files", nargs="+", type=Path, metavar="FILE")
    run.add_argument("--flow-id", help="flow for files that name none")
    run.add_argument("--api-url", help="the create endpoint to call (default: the bundled simulator)")
    run.add_argument("--security-id", default=os.environ.get("PHONON_SECURITY_ID"),
                     help="security-id for --flow-id (also env PHONON_SECURITY_ID)")
    run.add_argument("--rate", type=_positive, default=30_000, help="records per minute, global (30000)")
    run.add_argument("--batch-size", type=_batch, default=None,
                     help="calls per API request, 1-10000 (500; never more than one second's worth of --rate)")
    run.add_argument("--concurrency", type=_positive, default=2, help="dispatch workers running at once (2, at least 2)")
    run.add_argument("--out", type=Path, default=Path("outbound-reports"), help="where reports are written")
    run.add_argument("--json", action="store_true", help="print the final summary as JSON on stdout")
    run.add_argument("--shape", choices=("202", "200"), default="202",
                     help="answer shape of the bundled simulator (202 bulk, or 200 with call-details)")

    check = sub.add_parser("check", help="validate files only: same rules and report, nothing sent")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.add_argument("--flow-id")
    check.add_argument("--out", type=Path, default=Path("outbound-reports"))
    check.add_argument("--json", action="store_true")
    check.add_argument("--batch-size", type=_batch, default=500)

    sub.add_parser("simulate", help="run the Phonon simulator standalone (simulate --help for its options)")

    rd = sub.add_parser("redrive", help="move dead-lettered chunks back to the chunk queue (deployed stack)")
    where = rd.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="CloudFormation stack name (reads ChunkQueueUrl / ChunkDeadLetterQueueUrl)")
    where.add_argument("--dlq-url", help="the dead-letter queue URL (with --queue-url)")
    rd.add_argument("--queue-url", help="the chunk queue URL")
    rd.add_argument("--limit", type=_positive, help="move at most this many messages")
    return p


def _print_summary(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=None))
        return
    for f in result["files"]:
        line = (f"{f['file']}: {f['rows']} rows: {f['accepted']} accepted, {f['rejected']} rejected, "
                f"{f['duplicate']} duplicate, {f['failed']} failed → {f['report']}")
        if f.get("error"):
            line += f"  [file rejected: {f['error']}]"
        print(line, file=sys.stderr)
    t = result["totals"]
    print(f"total: {t['rows']} rows, {t['accepted']} accepted, {t['rejected']} rejected, {t['duplicate']} duplicate, "
          f"{t['failed']} failed; {result.get('api_requests', 0)} API requests in {result.get('elapsed_s', 0)} s",
          file=sys.stderr)
    if result.get("webhooks_pending"):
        print(f"{result['webhooks_pending']} flow-end webhooks had not arrived when the run ended: those rows have "
              f"their request-id but no phonon-uuid in the report yet", file=sys.stderr)
    if result.get("error"):
        print(f"run stopped: {result['error']}", file=sys.stderr)


def _exit_code(result: dict) -> int:
    t = result["totals"]
    bad = t["rejected"] + t["failed"] + sum(1 for f in result["files"] if f.get("error"))
    return EXIT_ROWS if bad or result.get("error") else EXIT_OK


def _missing(files: list[Path]) -> list[str]:
    return [str(f) for f in files if not f.is_file()]


def cmd_run(args: argparse.Namespace) -> int:
    from .local.runner import LocalPipeline, RunOptions
    from .settings import fit_batch_size

    if missing := _missing(args.files):
        print(f"phonon-outbound: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    if args.api_url and not (args.api_url.startswith("http://") or args.api_url.startswith("https://")):
        print("phonon-outbound: --api-url must be an http(s) URL", file=sys.stderr)
        return EXIT_USAGE
    if args.api_url and args.flow_id and not args.security_id:
        print("phonon-outbound: --security-id (or PHONON_SECURITY_ID) is required with --api-url", file=sys.stderr)
        return EXIT_USAGE
    batch_size = fit_batch_size(args.rate, args.batch_size)
    if args.batch_size and batch_size < args.batch_size:
        print(f"phonon-outbound: --batch-size {args.batch_size} lowered to {batch_size}: a request may carry at most "
              f"one second's worth of --rate {args.rate}/min", file=sys.stderr)
    concurrency = max(MIN_DISPATCHERS, args.concurrency)
    if concurrency > args.concurrency:
        print(f"phonon-outbound: --concurrency {args.concurrency} raised to {concurrency}: as the SQS event source on "
              f"AWS (MaximumConcurrency 2-1000), the local run keeps at least two dispatchers, so the wait for "
              f"one batch's last answer never stops the sending", file=sys.stderr)
    opts = RunOptions(flow_id=args.flow_id, api_url=args.api_url, security_id=args.security_id, rate=args.rate,
                      batch_size=batch_size, concurrency=concurrency, out_dir=args.out, shape=args.shape)
    try:
        with LocalPipeline(opts) as pipeline:
            result = pipeline.run(args.files)
    except (ValueError, FileNotFoundError) as err:
        print(f"phonon-outbound: {err}", file=sys.stderr)
        return EXIT_USAGE
    _print_summary(result, args.json)
    return _exit_code(result)


def cmd_check(args: argparse.Namespace) -> int:
    import time

    from .check import check_file
    from .settings import Settings

    if missing := _missing(args.files):
        print(f"phonon-outbound: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    started = time.monotonic()
    settings = Settings.from_env().model_copy(update={"default_flow_id": args.flow_id or "",
                                                      "batch_size": args.batch_size})
    entries = []
    for path in args.files:
        s = check_file(path, settings, args.out)
        entry = {"file": str(path), **{k: s[k] for k in COUNTS}, "report": s["report"]}
        if s.get("error"):
            entry["error"] = s["error"]
        entries.append(entry)
    totals = {k: sum(e[k] for e in entries) for k in COUNTS}
    result = {"files": entries, "totals": totals, "api_requests": 0, "elapsed_s": round(time.monotonic() - started, 3)}
    _print_summary(result, args.json)
    return _exit_code(result)


def cmd_redrive(args: argparse.Namespace) -> int:
    import boto3

    from .redrive import redrive, stack_queues

    if args.dlq_url and not args.queue_url:
        print("phonon-outbound: --queue-url is required with --dlq-url", file=sys.stderr)
        return EXIT_USAGE
    queue_url, dlq_url = (stack_queues(boto3.client("cloudformation"), args.stack) if args.stack
                          else (args.queue_url, args.dlq_url))
    moved = redrive(boto3.client("sqs"), dlq_url, queue_url, args.limit)
    print(f"moved {moved} chunk message(s) back to the chunk queue", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["simulate"]:  # the simulator parses its own options (--port, --shape, …)
        from .api import simulator

        return int(simulator.main(argv[1:]) or 0)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    handlers = {"run": cmd_run, "check": cmd_check, "redrive": cmd_redrive}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
