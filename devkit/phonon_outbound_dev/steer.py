"""`phonon-outbound pause | resume | cancel | limit`: steer one job (by id, or by its file's key
and optional version) or one flow, in a deployed stack (`--stack`) or in the local run that is
running now (through `<state dir>/live.json`). docs/operating.md, "Pause, resume, cancel" and
"Cap a job's or a flow's rate".

Exit status: 0 done (or nothing to do: `already`), 2 usage error, unknown job / key / flow
target, no such stack, or no local run running.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ACTION_HELP = {
    "pause": "hold a job's (or a flow's) calls: its chunks wait unsent until resumed",
    "resume": "let a paused job (or flow) send again",
    "cancel": "stop a job for good: nothing more is sent, its unsent rows end CANCELLED and its report is written",
    "limit": "cap a job's (or a flow's) rate at N calls per minute, within the global limit; --none removes the cap",
}


def add_parsers(sub: Any, state_dir: Path) -> None:
    """The four commands, on the CLI's sub-parsers."""
    for action, text in ACTION_HELP.items():
        p = sub.add_parser(action, help=text, description=text + ". Against a deployed stack with --stack; "
                           "otherwise the local run that is running now. Exit status: 0 done, 2 usage error or "
                           "nothing found.")
        what = p.add_mutually_exclusive_group(required=True)
        what.add_argument("--job", metavar="ID", help="the job id (as in the summary and the status)")
        what.add_argument("--key", metavar="KEY", help="the file's S3 key (incoming/… or the name under incoming/): "
                                                       "its newest job")
        if action != "cancel":
            what.add_argument("--flow", metavar="ID", help="every job's calls to this flow")
        p.add_argument("--version", metavar="V", help="with --key: the job of that S3 version of the file")
        if action == "limit":
            value = p.add_mutually_exclusive_group(required=True)
            value.add_argument("--per-minute", metavar="N", dest="per_minute",
                               help="the cap: calls per minute, a whole number from 1 to the global limit "
                                    "(0 removes the cap, as --none does)")
            value.add_argument("--none", action="store_true", help="remove the cap")
        else:
            p.add_argument("--reason", metavar="TEXT",
                           help="why (kept on the job; a cancel's reason is in the report)")
        p.add_argument("--stack", metavar="NAME", help="a deployed stack (its CloudFormation outputs)")
        p.add_argument("--region", metavar="REGION", help="AWS region of the stack")
        p.add_argument("--profile", metavar="NAME", help="AWS named profile to use")
        p.add_argument("--state-dir", type=Path, default=state_dir, metavar="DIR",
                       help=f"without --stack: the state directory of the local run (default ./{state_dir})")
        p.add_argument("--json", action="store_true", help="print the answer as one JSON object on stdout")


def describe(answer: dict[str, Any]) -> str:
    from .cli import safe

    what = f"flow {answer['flow']}" if "flow" in answer else f"job {answer['job']}"
    if answer.get("key"):
        what += f" ({answer['key']}" + (f", version {answer['version']}" if answer.get("version") else "") + ")"
    state = answer["state"]
    if answer["action"] == "limit":
        cap = answer.get("rate_cap")
        capped = f"capped at {cap:,} calls/min" if cap else "no cap"
        if answer.get("already"):
            return safe(f"{what}: {capped} already ({state}); nothing changed")
        return safe(f"{what}: {capped} ({state})")
    if answer.get("already"):
        return safe(f"{what}: {state} already; nothing changed")
    return safe(f"{what}: {state}" + (" (its unsent rows end CANCELLED; the report is written once its queued "
                                      "chunks have settled)" if answer["action"] == "cancel" else ""))


def report_requests(target: Any) -> Any:
    """The stack's own report requests (reporting.ReportRequests), as its functions make them:
    with a report queue (the stack's ReportQueueUrl output; the local run's queue, which its
    report worker drains) a cancel's report is a message to the report function, which writes
    it with the stack's rights and publishes the completion event; the operator needs no S3 or
    KMS rights. Without one (a stack deployed before the report function) it is written here."""
    from phonon_outbound.reporting import ReportRequests

    s = target.settings
    return ReportRequests(target.store, target.finisher, target.sqs if s.report_queue_url else None,
                          s.report_queue_url, s.report_debounce_s)


def cmd_control(args: argparse.Namespace) -> int:
    """Errors are answered here (one line, exit 2) rather than raised: under `python -m` the
    CLI's own module is `__main__`, whose UsageError is not the one imported here."""
    from botocore.exceptions import BotoCoreError, ClientError

    from phonon_outbound.control import (
        PHONON_LIMIT,
        ControlError,
        ControlService,
        ControlTarget,
        UnknownTarget,
        finisher_settled,
        parse_cap,
    )

    from .cli import EXIT_OK, EXIT_USAGE, UsageError, _err, aws_error, safe
    from .job_status import rate_limit
    from .redrive import StackError
    from .stack import NotRunning, connect

    try:
        if args.version and not args.key:
            raise UsageError("--version goes with --key")
        # The control event's checks (trimmed; a flow id is 8 letters or digits), before any
        # stack is asked: a ControlError is a usage error, exit 2.
        what = ControlTarget.of({"job": args.job, "key": args.key, "version": args.version,
                                 "flow": getattr(args, "flow", None)})
        if args.command == "limit" and not args.none:
            parse_cap(args.per_minute, None)  # a whole number at all, before any stack is asked
        target = connect(args.stack, args.region, args.profile, args.state_dir)
        # The highest cap is the global limit: a stack's RecordsPerMinute parameter, the local
        # run's own --rate (status reads it the same way).
        highest = rate_limit(target, args.stack) if args.command == "limit" else PHONON_LIMIT
        service = ControlService(target.store, target.bucket, finisher_settled(target.store, report_requests(target)),
                                 max_per_minute=highest or PHONON_LIMIT)
        if args.command == "limit":
            answer = service.apply("limit", what, per_minute="none" if args.none else args.per_minute)
        else:
            answer = service.apply(args.command, what, args.reason or "")
    except (UsageError, StackError, NotRunning, UnknownTarget, ControlError) as err:
        _err(safe(str(err)))
        return EXIT_USAGE
    except (ClientError, BotoCoreError) as err:
        _err(aws_error(err))
        return EXIT_USAGE
    if args.json:
        print(json.dumps(answer))
    else:
        print(describe(answer), file=sys.stdout)
    return EXIT_OK


__all__ = ["ACTION_HELP", "add_parsers", "cmd_control", "describe", "report_requests"]
