"""Connect to a deployed stack or to the local run that is running now: its store, bucket,
queues and settings, for commands that look at or steer a campaign (pause | resume | cancel |
limit, status).

- `connect("name", region, profile, None)`: a deployed stack, through its CloudFormation outputs
  (ContactsBucketName, StateTableName, ResultsTableName and every `…QueueUrl`).
- `connect(None, …, state_dir)`: the local run (`phonon-outbound run`) found through
  `<state dir>/live.json`, which the runner writes when it starts (the embedded AWS's endpoint,
  the tables, the bucket, the queues, its process id) and removes when it ends. No such file, or
  one whose process is gone (a run killed hard), is "no local run is running".
- `<state dir>/last-run.json`: what a finished local run left for `phonon-outbound status`
  (the runner writes it at the end of a run that keeps its state, i.e. without --no-state): when
  it ended, each job's final picture (job_status.JobPicture.to_dict) and the local paths of the
  results CSV and summary JSON the run wrote to its --out folder. A few KB: no row data (the
  CSVs are the rows), no phone numbers. Read only when no run is live (`read_last_run`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LIVE_FILE = "live.json"
LAST_RUN_FILE = "last-run.json"
BUCKET_OUTPUT, STATE_OUTPUT, RESULTS_OUTPUT = "ContactsBucketName", "StateTableName", "ResultsTableName"
QUEUE_SETTINGS = {"ChunkQueue": "chunk_queue_url", "ReportQueue": "report_queue_url",
                  "ExpressQueue": "express_queue_url"}


class NotRunning(Exception):
    """No local run to connect to (no live file, or its process is gone)."""


@dataclass
class Target:
    """What a command needs of a stack (deployed or the local run)."""

    store: Any  # phonon_outbound.store.Store
    s3: Any
    sqs: Any
    bucket: str
    settings: Any  # phonon_outbound.settings.Settings
    queues: dict[str, str] = field(default_factory=dict)  # e.g. ChunkQueue -> url
    session: Any = None
    endpoint: str | None = None  # the local run's embedded AWS; None for a deployed stack
    where: str = ""  # "stack NAME" or "the local run (pid N)"

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint) if self.endpoint \
            else self.session.client(service)

    def finisher(self) -> Any:
        """A JobFinisher writing reports (and the completion event) in this stack, as the report
        function would (wiring.finisher): used only when the stack has no report queue."""
        from phonon_outbound.events_out import EventsOut
        from phonon_outbound.jobs import JobFinisher

        events = EventsOut(self.client("events"), lambda: self.client("stepfunctions"),
                           self.settings.event_bus_name, self.settings.publish_call_events)
        return JobFinisher(self.store, self.s3, self.bucket, events, final_wait_s=self.settings.final_write_after_s)


def connect(stack: str | None, region: str | None, profile: str | None, state_dir: Path | None) -> Target:
    """A deployed stack (`stack` given) or the local run that is running (through
    `<state_dir>/live.json`). Raises redrive.StackError for a stack that is missing or lacks our
    outputs, NotRunning when no local run is running; a missing region, profile or credentials
    is the CLI's UsageError (cli.aws_session)."""
    if stack:
        from .cli import aws_session

        return _stack(aws_session(region, profile), stack)
    return _local(Path(state_dir) if state_dir is not None else Path(".phonon-outbound"))


def _stack(session: Any, stack: str) -> Target:
    from phonon_outbound.settings import Settings
    from phonon_outbound.store import Store

    from .redrive import StackError, stack_outputs

    values = stack_outputs(session.client("cloudformation"), stack)
    missing = [k for k in (BUCKET_OUTPUT, STATE_OUTPUT, RESULTS_OUTPUT) if k not in values]
    if missing:
        raise StackError(f"stack '{stack}' has no output {' or '.join(missing)}: is it a phonon-outbound stack?")
    queues = {k[:-len("Url")]: v for k, v in values.items() if k.endswith("QueueUrl")}
    settings = Settings.model_validate({
        "bucket_name": values[BUCKET_OUTPUT], "state_table": values[STATE_OUTPUT],
        "results_table": values[RESULTS_OUTPUT], **{name: queues[q] for q, name in QUEUE_SETTINGS.items() if q in queues}})
    store = Store(settings.state_table, settings.results_table, session.resource("dynamodb"))
    return Target(store, session.client("s3"), session.client("sqs"), settings.bucket_name, settings, queues,
                  session, None, f"stack {stack}")


# ---------------------------------------------------------------------- the local run
def live_path(state_dir: Path) -> Path:
    return Path(state_dir) / LIVE_FILE


def _write_whole(path: Path, doc: dict[str, Any]) -> Path:
    """`doc` as JSON at `path`, written whole, then renamed (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return path


def write_live(state_dir: Path, doc: dict[str, Any]) -> Path:
    """The runner, at start: where its embedded AWS is."""
    return _write_whole(live_path(state_dir), {**doc, "pid": os.getpid()})


def remove_live(state_dir: Path) -> None:
    """The runner, at exit: the file goes, if it is still this process's."""
    path = live_path(state_dir)
    try:
        if int(json.loads(path.read_text()).get("pid", -1)) == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def read_live(state_dir: Path) -> dict[str, Any]:
    """The live run's file, or NotRunning."""
    path = live_path(state_dir)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotRunning(f"no local run is running (no {path})") from None
    except (OSError, ValueError) as err:
        raise NotRunning(f"no local run is running ({path} cannot be read: {err})") from None
    if not isinstance(doc, dict) or not _alive(int(doc.get("pid", 0) or 0)):
        raise NotRunning(f"no local run is running (the run that wrote {path} has ended)")
    return doc


def last_run_path(state_dir: Path) -> Path:
    return Path(state_dir) / LAST_RUN_FILE


def write_last_run(state_dir: Path, doc: dict[str, Any]) -> Path:
    """The runner, at the end of a run that keeps its state: the run's snapshot for `status`."""
    return _write_whole(last_run_path(state_dir), doc)


def remove_last_run(state_dir: Path) -> None:
    """The runner, at the end of a --no-state run: an earlier run's snapshot must not pass for
    this run's (status then says no finished run was kept)."""
    last_run_path(state_dir).unlink(missing_ok=True)


def read_last_run(state_dir: Path) -> dict[str, Any] | None:
    """The last finished run's snapshot, None when there is none; ValueError when it cannot be read."""
    path = last_run_path(state_dir)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} cannot be read ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        raise ValueError(f"{path} is not a run's snapshot")
    return doc


def _local(state_dir: Path) -> Target:
    import boto3

    from phonon_outbound.settings import Settings
    from phonon_outbound.store import Store

    doc = read_live(state_dir)
    endpoint = str(doc["endpoint"])
    session = boto3.session.Session(region_name=str(doc.get("region") or "us-east-1"), aws_access_key_id="testing",
                                    aws_secret_access_key="testing", aws_session_token="testing")
    settings = Settings.model_validate({k: v for k, v in (doc.get("settings") or {}).items() if k in Settings.model_fields})
    store = Store(settings.state_table, settings.results_table, session.resource("dynamodb", endpoint_url=endpoint))
    return Target(store, session.client("s3", endpoint_url=endpoint), session.client("sqs", endpoint_url=endpoint),
                  settings.bucket_name, settings, dict(doc.get("queues") or {}), session, endpoint,
                  f"the local run (pid {doc['pid']})")


__all__ = ["LAST_RUN_FILE", "LIVE_FILE", "NotRunning", "Target", "connect", "last_run_path", "live_path",
           "read_last_run", "read_live", "remove_last_run", "remove_live", "write_last_run", "write_live"]
