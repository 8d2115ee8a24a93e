"""`phonon-outbound run`: the whole serverless pipeline on this machine.

- moto in server mode on a free loopback port is the embedded AWS; every boto3 client (ours
  and powertools') reaches it through `AWS_ENDPOINT_URL`;
- the bucket, queues, tables and webhook secret are created from template.yaml;
- the same handler modules that run on AWS (found through the template's CodeUri/Handler)
  are invoked with real-shaped events: an S3 ObjectCreated notification per file, SQS batches
  received from the emulated queue (visibility timeout, batch item failures and the redrive
  to the DLQ are SQS's own), Function URL events for the webhook;
- with no --api-url the bundled Phonon simulator answers, and pushes flow-end webhooks to the
  webhook handler served on loopback.
"""

from __future__ import annotations

import email.header
import hashlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote_plus

import boto3

from phonon_outbound import suppression, wiring
from phonon_outbound.api.client import ApiAnswer
from phonon_outbound.contacts import FileRejected, ParseOptions, RejectedRow, open_contacts, parse_options
from phonon_outbound.flows import FLOW_ID_RE
from phonon_outbound.ingest import ObjectRef
from phonon_outbound.jobs import WEBHOOK_ONLY_REASON, job_report_keys, upload_stamp
from phonon_outbound.records import parse_row_ref
from phonon_outbound.reports import ReportWriter, outcome_cells, placed_anyway, summary_dict
from phonon_outbound.status import STATUSES, Status
from phonon_outbound.store.common import BREAKER, Control, FlowControl, flow_pause_text, read_cap
from phonon_outbound.suppression import _dynamo

from ..job_status import duration as _duration
from .cfn import ACCOUNT, REGION, LocalStack, load_template
from .state import LocalState

DEMO_SECRET_NAME = "security-id"
log = logging.getLogger(__name__)


def find_root() -> Path:
    """The project folder holding template.yaml: the current directory or one above it, else
    the checkout this package was installed from (editable install)."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "template.yaml").is_file() and (folder / "functions").is_dir():
            return folder
    pkg = Path(__file__).resolve().parents[3]
    if (pkg / "template.yaml").is_file():
        return pkg
    raise FileNotFoundError("template.yaml not found: run from the phonon-outbound project folder")


# The embedded AWS runs as a child that ignores SIGINT (Ctrl-C in a terminal reaches the whole
# foreground process group: the run must still write its reports and state into it after a
# Ctrl-C) and exits when its stdin closes, i.e. when this process ends however it ends.
_MOTO_CHILD = """
import os, signal, sys, threading
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal = lambda *args: None  # moto's main installs its own SIGINT handler: keep ignoring it
def _watch():
    sys.stdin.buffer.read()
    os._exit(0)
threading.Thread(target=_watch, daemon=True).start()
from moto.server import main
main(sys.argv[1:])
"""


class MotoServer:
    """moto's server mode in a child process on a free loopback port.

    A child process rather than moto's ThreadedMotoServer: the emulated AWS then runs on its
    own core instead of sharing this process's interpreter lock with the handlers, the
    simulator and the webhook server (measured: a 1,200-row run took about half as long)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout_s: float = 30.0) -> MotoServer:
        for _ in range(5):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            self.proc = subprocess.Popen([sys.executable, "-c", _MOTO_CHILD, "-H", "127.0.0.1", "-p", str(port)],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
            self.url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1):
                        return self
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError("the embedded AWS (moto server) did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc = None


class FakeContext:
    """The parts of a LambdaContext our handlers and powertools use."""

    def __init__(self, function: str, timeout_s: float):
        self.function_name = function
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"
        self.memory_limit_in_mb = 1024
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _load_handler(stack: LocalStack, function: str) -> Callable[[dict, Any], Any]:
    code_dir, module, func = stack.handler_path(function)
    spec = importlib.util.spec_from_file_location(f"local_{module}", code_dir / f"{module}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, func)


# Claims noted in memory for the state save (~150 bytes each); past this the save scans the table.
MAX_TRACKED_CLAIMS = 200_000


class Interrupted(Exception):
    """Raised inside the ingest thread (through its back-pressure hook) once the run is
    interrupted: ingest stops before queuing another chunk."""


INTERRUPT_REASON = ("not sent: the run was interrupted (Ctrl-C) before this row was sent; run the same command "
                    "again to send the rest")
INTERRUPT_REASON_STATE = " (rows already accepted are then DUPLICATE, not called again)"
INTERRUPT_REASON_NO_STATE = (" (with --no-state rows already accepted would be called again: send only the "
                             "CANCELLED rows)")
IN_FLIGHT_REASON = ("the run was interrupted while Phonon's answer to this row's request was awaited: the call may "
                    "have been placed; a later run within the dedupe window reports it DUPLICATE rather than risk a "
                    "second call")


@dataclass
class RunOptions:
    flow_id: str | None = None
    api_url: str | None = None
    security_id: str | None = None  # for flow_id
    security_ids: dict[str, str] = field(default_factory=dict)  # flow -> security-id (other flows)
    rate: int = 30_000
    batch_size: int = 500
    concurrency: int = 2
    out_dir: Path = Path("outbound-reports")
    shape: str = "202"
    time_zone: str | None = None
    default_region: str | None = None
    phone_columns: tuple[str, ...] = ()  # S3 metadata `phone-columns` on every upload
    id_column: str | None = None  # S3 metadata `id-column` on every upload
    state_dir: Path | None = None  # dedupe claims kept between runs (None: none kept)
    live_dir: Path | None = None  # where live.json says this run is running (pause | resume | cancel | limit; stack.py)
    log_file: Path | None = None  # machine logs (handlers, AWS clients) go here instead of the terminal
    verbose: bool = False  # machine logs also on stderr
    settings: dict[str, Any] = field(default_factory=dict)  # extra Settings overrides (tests)
    visibility_timeout: int | None = None
    stall_timeout_s: float = 300.0
    webhook_grace_s: float = 30.0
    inflight_grace_s: float = 10.0  # after Ctrl-C: how long to wait for answers to requests in flight
    # Flow-end pushes a second from the bundled simulator. Each costs the webhook handler two
    # writes in the one embedded DynamoDB (~60 pushes/s at most here); unpaced, a big run's
    # pushes (one per accepted call, all at once) starved dispatch: 30,000 rows took 412 s
    # instead of ~76 s. Real flow ends arrive spread over the campaign as calls end.
    webhook_rate: float | None = 20.0
    webhook_concurrency: int = 1  # flow-end pushes the local webhook handles at once
    simulator: Any = None  # a started PhononSimulator to use instead of starting one
    # testing aid: the bundled simulator loses the flow-end pushes of the first N accepted calls
    # (or a ratio of them); the reconciler pulls their outcomes after the webhook grace
    drop_webhooks: int | float | None = None
    suppress_files: list[Path] = field(default_factory=list)  # `--suppress FILE`: for this run only


@dataclass
class FileRun:
    path: Path
    key: str
    obj: ObjectRef | None = None
    uploaded: datetime | None = None
    local_name: str = ""  # <file name>.<upload time>: this upload's report files in --out
    rows_estimate: int | None = None
    summary: dict = field(default_factory=dict)


MAX_EVENT_BYTES = 16 * 1024 * 1024  # far above EventBridge's 256 KB; a bigger .json is a contact file


def event_envelope(path: Path) -> dict | None:
    """The EventBridge event in a `.json` file (docs/events-in.md, "Locally"): a JSON object
    with `detail-type` and `detail` — a JSON contact file has neither (its keys are `flow-id`
    and `calls`, or it is an array). None for anything else."""
    if not path.name.lower().endswith(".json") or path.stat().st_size > MAX_EVENT_BYTES:
        return None
    try:
        doc = json.loads(path.read_bytes())
    except (ValueError, OSError):
        return None
    return doc if isinstance(doc, dict) and "detail-type" in doc and "detail" in doc else None


def s3_event_key(key: str) -> str:
    """An object key as S3 notifications carry it: URL-encoded, `+` for a space."""
    return quote_plus(key, safe="/")


def metadata_value(text: str) -> str:
    """S3 user metadata travels in HTTP headers (US-ASCII): a non-ASCII value is sent RFC 2047
    encoded (`=?UTF-8?B?…?=`), the form S3 itself returns such values in."""
    try:
        text.encode("ascii")
        return text
    except UnicodeEncodeError:
        return email.header.Header(text, "utf-8").encode()


# The longest file name the common file systems take (ext4, APFS, NTFS: 255 bytes / UTF-16 units).
MAX_NAME_BYTES = 255
_LONGEST_SUFFIX = ".summary.json"


def report_base_name(file_name: str, stamp: str, n: int = 1) -> str:
    """`<file name>.<upload stamp>` (`-<n>` for the n-th with the same name and stamp): this
    upload's report files in --out, without the `.results.csv` / `.summary.json` suffix.

    A file name near the file system's limit is shortened to fit (its start kept, cut on a
    character boundary, then `~` and 8 hex digits of the whole name, so two long names that
    differ only at the end still get different reports)."""
    tail = f".{stamp}" + (f"-{n}" if n > 1 else "")
    room = MAX_NAME_BYTES - len(_LONGEST_SUFFIX.encode()) - len(tail.encode())
    if len(file_name.encode()) <= room:
        return file_name + tail
    tag = "~" + hashlib.sha256(file_name.encode()).hexdigest()[:8]
    head = file_name.encode()[:room - len(tag)].decode("utf-8", "ignore")
    return head + tag + tail


class SendGate:
    """Every request the dispatchers make passes here: after Ctrl-C nothing more is sent (a
    blocked post answers "not sent", which the dispatcher treats as a transient failure), and
    the requests already on the wire can be waited for and named."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._inflight: dict[int, bytes] = {}
        self._next = 0

    def sleep(self, seconds: float) -> None:
        """The dispatchers' sleep (rate-limit waits): cut short when the gate closes."""
        self.closed.wait(max(0.0, seconds))

    def wrap(self, client: Any) -> Any:
        gate = self

        class GatedClient:
            def post(self, body: bytes) -> Any:
                if gate.closed.is_set():
                    return ApiAnswer(None, None, None, None, None, "not sent: the run was interrupted", 0.0, False)
                with gate._lock:
                    gate._next += 1
                    token = gate._next
                    gate._inflight[token] = bytes(body)
                try:
                    return client.post(body)
                finally:
                    with gate._lock:
                        gate._inflight.pop(token, None)

            def __getattr__(self, name: str) -> Any:
                return getattr(client, name)

        return GatedClient()

    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def inflight_rows(self, correlation_name: str) -> dict[str, set[int]]:
        """{job: rows} of the requests still awaiting an answer (from their correlation keys)."""
        with self._lock:
            bodies = list(self._inflight.values())
        out: dict[str, set[int]] = {}
        for body in bodies:
            try:
                calls = json.loads(body).get("calls", [])
            except ValueError:
                continue
            for call in calls:
                for k in call.get("keys", []):
                    if k.get("name") == correlation_name:
                        ref = parse_row_ref(str(k.get("value", "")))
                        if ref is not None:
                            out.setdefault(ref[0], set()).add(ref[1])
        return out


class Progress:
    """One progress line: rows done, rows/s, calls/min against the limit, ETA."""

    def __init__(self, stream: TextIO, rate: int):
        self.stream = stream
        self.rate = rate
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.samples: deque[tuple[float, int, int]] = deque()
        self.next_at = 0.0
        self.shown = False

    def update(self, now: float, started: float, total: int | None, done: int, sent: int, accepted: int,
               force: bool = False) -> None:
        self.samples.append((now, done, sent))
        while len(self.samples) > 2 and now - self.samples[0][0] > 30:
            self.samples.popleft()
        if not force and now < self.next_at:
            return
        self.next_at = now + (0.5 if self.tty else 5.0)
        t0, done0, sent0 = self.samples[0]
        span = now - t0
        rows_s = (done - done0) / span if span > 0.5 else 0.0
        calls_min = (sent - sent0) / span * 60 if span > 0.5 else 0.0
        parts = [f"{done:,} of {total:,} rows" if total is not None else f"{done:,} rows",
                 f"{accepted:,} accepted", f"{rows_s:,.0f} rows/s",
                 f"{calls_min:,.0f} calls/min (limit {self.rate:,})"]
        if total is not None and rows_s > 0 and total > done:
            parts.append(f"ETA {_duration((total - done) / rows_s)}")
        line = f"[{_duration(now - started)}] " + " · ".join(parts)
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
            self.shown = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


def sqs_event(messages: list[dict], arn: str) -> dict:
    """Lambda's SQS event for messages received from the queue `arn` (ReceiveMessage's shape
    → the event source's record shape)."""
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m.get("Attributes", {}), "messageAttributes": m.get("MessageAttributes", {}),
        "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs", "eventSourceARN": arn,
        "awsRegion": REGION} for m in messages]}


class LocalPipeline:
    def __init__(self, options: RunOptions, progress: TextIO = sys.stderr):
        self.o = options
        self.progress = progress
        self.root = find_root()
        self._saved_env: dict[str, str | None] = {}
        self._stop = threading.Event()
        self._report_stop = threading.Event()  # the report worker runs on through the webhook grace
        self._interrupted = threading.Event()
        self._hurry = threading.Event()  # a second Ctrl-C: stop waiting for answers in flight
        self._threads: list[threading.Thread] = []
        self._errors: list[str] = []
        self._continuations: list[dict] = []
        self._cont_lock = threading.Lock()
        self._received: dict[str, set[int]] = {}  # job -> rows of chunk messages a dispatcher took
        self._received_lock = threading.Lock()
        self._released: dict[str, set[int]] = {}  # job -> rows whose dedupe claims are not kept
        self._log_handlers: list[tuple[logging.StreamHandler, Any]] = []
        self._log_stream: TextIO | None = None
        self._added_handlers: list[tuple[logging.Logger, logging.Handler]] = []
        self._saved_levels: list[tuple[logging.Logger, int]] = []
        self.gate = SendGate()
        self.sim: Any = None
        self._own_sim = False
        self.moto: MotoServer | None = None
        self.webhook_pushes = 0
        self.last_push = 0.0
        self.state_loaded = 0
        self.state_damaged = 0  # lines of the saved state that could not be used
        self.state_saved: int | None = None
        self.state_error = ""  # why the state could not be saved at the end
        self.interrupted = False  # Ctrl-C while sending: unsent rows are CANCELLED
        self.late_interrupt = False  # Ctrl-C after everything was sent: only the waiting was cut short
        self._claimed: dict[str, str] | None = None
        self.pictures: list[Any] = []  # each job's status picture at the end (devkit job_status.py)
        self._previous_sigint: Any = None  # hash -> owner (<job>.<row>) of this run's claims

    # ------------------------------------------------------------------ set-up / tear-down
    def __enter__(self) -> LocalPipeline:
        try:
            return self._enter()
        except BaseException:  # Ctrl-C or a failure half-way: leave no emulator behind
            self.__exit__(None, None, None)
            raise

    def _enter(self) -> LocalPipeline:
        self._setup_logging()
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        self.moto = MotoServer().start()
        self.endpoint = self.moto.url
        self._setenv({
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "INFO" if self.o.log_file else "WARNING"),
            "POWERTOOLS_DEV": "false",
        })
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):  # a user's profile must not steer the embedded AWS
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ.pop(name, None)
        self.session = boto3.session.Session(region_name=REGION)
        self.stack = LocalStack(load_template(self.root / "template.yaml"), self.root)
        overrides: dict[str, Any] = {}
        if self.o.visibility_timeout is not None:
            overrides["VisibilityTimeout"] = self.o.visibility_timeout
        if "max_receive_count" in self.o.settings:
            overrides["MaxReceiveCount"] = self.o.settings["max_receive_count"]
        self.stack.params.update({"BatchSize": str(self.o.batch_size), "RecordsPerMinute": str(self.o.rate)})
        if self.o.flow_id:
            self.stack.params["DefaultFlowId"] = self.o.flow_id
        self.stack.create_resources(self.session, overrides)
        env = self.stack.function_environment()
        self.s3 = self.session.client("s3")
        self.sqs = self.session.client("sqs")
        self.ddb = self.session.client("dynamodb")
        self.bucket = env["BUCKET_NAME"]
        self.queue_url = env["CHUNK_QUEUE_URL"]
        self.express_url = env.get("EXPRESS_QUEUE_URL", "")  # the express lane (small jobs; chunking.lane_for)
        self.report_queue_url = env["REPORT_QUEUE_URL"]  # report requests; the report worker writes them
        self.dlq_url = self.stack.physical["ChunkDeadLetterQueue"]["Ref"]
        self.state_table = env["STATE_TABLE"]
        if self.o.state_dir is not None:
            saved = LocalState(self.o.state_dir)
            self.state_loaded = LocalState.load_into(self.ddb, self.state_table, saved.read())
            self.state_damaged = saved.damaged

        # Webhook endpoint first: the simulator needs its URL.
        self._webhook_handler = _load_handler(self.stack, "WebhookFunction")
        self._start_webhook_server()
        creds = json.loads(self.session.client("secretsmanager").get_secret_value(
            SecretId=env["WEBHOOK_SECRET_NAME"])["SecretString"])

        secrets = dict(self.o.security_ids)
        if self.o.flow_id and self.o.security_id:
            secrets[self.o.flow_id] = self.o.security_id
        api_url = self.o.api_url
        if not api_url:
            from ..simulator import DEMO_FLOW_ID, DEMO_SECURITY_ID, PhononSimulator
            if self.o.flow_id:
                secrets.setdefault(self.o.flow_id, DEMO_SECURITY_ID)
            secrets.setdefault(DEMO_FLOW_ID, DEMO_SECURITY_ID)
            if self.o.simulator is not None:
                self.sim = self.o.simulator
            else:
                self.sim = PhononSimulator(shape=self.o.shape, flows=dict(secrets), webhook_url=self.webhook_url,
                                           webhook_auth=(creds["username"], creds["password"]),
                                           webhook_rate_per_s=self.o.webhook_rate,
                                           drop_webhooks=self.o.drop_webhooks).start()
                self._own_sim = True
            api_url = self.sim.url
        elif self.o.flow_id and self.o.flow_id not in secrets:
            raise ValueError("--security-id (or PHONON_SECURITY_ID) is required with --api-url and --flow-id")
        for flow, sid in secrets.items():
            self._put_flow_secret(flow, sid)
        self._flows = secrets

        env.update({"API_URL": api_url})
        local: dict[str, Any] = {"retry_base_s": 0.5, "retry_max_s": 5.0, "breaker_open_s": 30.0, "chunk_lease_s": 30.0,
                 "dispatch_max_wait_s": 30.0, "ingest_time_margin_s": 0.0, "pause_poll_s": 1.0}
        if self.o.time_zone:
            local["time_zone"] = self.o.time_zone
        if self.o.default_region:
            local["default_region"] = self.o.default_region
        pull_url = getattr(self.sim, "pull_url", "") if self.sim is not None else ""
        if pull_url:  # the simulator serves the pull API: the reconciler runs once after the webhook grace
            local.update({"pull_api_url": pull_url, "reconcile_after_s": 0})
        local.update(self.o.settings)
        env.update({k.upper(): str(v) for k, v in local.items()})
        self._setenv(env)
        from phonon_outbound.observability import disable_metrics

        disable_metrics()
        wiring.reset()
        wiring.set_continuation(self._continue_ingest)
        wiring.set_throttle(self._throttle)
        self.settings = wiring.settings()
        self._ingest_handler = _load_handler(self.stack, "IngestFunction")
        self._dispatch_handler = _load_handler(self.stack, "DispatchFunction")
        self._intake_handler = _load_handler(self.stack, "IntakeFunction")
        self._reconcile_handler = (_load_handler(self.stack, "ReconcileFunction") if self.settings.pull_api_url
                                   else None)
        self._report_handler = _load_handler(self.stack, "ReportFunction")
        # Every request goes through the gate (Ctrl-C stops sending at once) and every
        # rate-limit wait can be cut short by it. The service is built here, before any
        # dispatcher runs, and its client factory wrapped (one client per worker thread).
        service = wiring.dispatch_service()
        make_client = getattr(service, "_client_factory", None)
        if make_client is None:  # the dispatcher changed shape: fail loudly here, not at Ctrl-C
            raise RuntimeError("the local run cannot gate the dispatcher's requests (DispatchService._client_factory)")
        service._client_factory = lambda: self.gate.wrap(make_client())
        service.sleep = self.gate.sleep
        self._watch_claims(wiring.store())
        self._load_suppression()
        self._write_live()
        return self

    def _write_live(self) -> None:
        """`<live dir>/live.json`: where this run's embedded AWS is, for `phonon-outbound pause |
        resume | cancel` from another terminal (stack.py); removed at exit."""
        if self.o.live_dir is None:
            return
        from ..stack import write_live

        queues = {name: str(p["Ref"]) for name, p in self.stack.physical.items()
                  if str(p.get("Ref", "")).startswith("http") and "QueueName" in p}
        write_live(self.o.live_dir, {"endpoint": self.endpoint, "region": REGION, "bucket": self.bucket,
                                     "state_table": self.state_table, "queues": queues,
                                     "settings": json.loads(self.settings.model_dump_json())})

    def _load_suppression(self) -> None:
        """The local suppression list (state dir) and `--suppress FILE` entries into the run's
        table, hashed with the local salt (put into the run's salt secret); docs/suppression.md."""
        from ..suppress import OPTION_SOURCE, LocalList, import_files

        table = self.settings.suppression_table
        if not table:
            return
        local = LocalList(self.o.state_dir) if self.o.state_dir is not None else None
        if local is not None:
            self.session.client("secretsmanager").put_secret_value(SecretId=self.settings.suppression_salt_secret,
                                                                   SecretString=local.salt())
            items = local.items()
            with self.session.resource("dynamodb").Table(table).batch_writer() as batch:
                for item in items:
                    batch.put_item(Item=_dynamo(item))
        lst = suppression.service(self.settings)
        if lst is not None and self.o.suppress_files:
            from phonon_outbound.suppression import ALL_FLOWS

            for result in import_files(lst, self.o.suppress_files, ALL_FLOWS, OPTION_SOURCE):
                if result.get("error"):
                    raise ValueError(f"--suppress {result['file']}: {result['error']}")

    def _save_suppression(self) -> None:
        """Back to the state dir: the list as the run leaves it (opt-outs, the cap's log),
        without the entries of `--suppress FILE`."""
        from ..suppress import LocalList, without_option_entries

        lst = suppression.service(self.settings) if self.settings.suppression_table else None
        if lst is None or self.o.state_dir is None:
            return
        LocalList(self.o.state_dir).write(without_option_entries(lst.table.scan()))

    def _watch_claims(self, store: Any) -> None:
        """Note the hash of every dedupe claim this run takes, so the state saved at the end
        is read by key (BatchGetItem) instead of scanning the whole table. The wrapper goes on
        the dedupe repository (`store.dedupe.claim_dedupe`), the only way the dispatcher
        claims."""
        repository = getattr(store, "dedupe", None)
        original = getattr(repository, "claim_dedupe", None)
        if repository is None or original is None:
            return
        self._claimed = {}
        lock = threading.Lock()

        def claim_dedupe(flow: str, claims: list[tuple[str, str]], *args: Any, **kwargs: Any) -> dict[str, str]:
            conflicts = original(flow, claims, *args, **kwargs)
            with lock:
                if self._claimed is not None:
                    self._claimed.update((h, owner) for h, owner in claims if h not in conflicts)
                    if len(self._claimed) > MAX_TRACKED_CLAIMS:  # bounded memory: scan at the end instead
                        self._claimed = None
            return conflicts

        repository.claim_dedupe = claim_dedupe

    def __exit__(self, *exc: object) -> None:
        try:
            self._teardown()
        finally:
            if self._previous_sigint is not None:
                self._on_sigint(self._previous_sigint)
                self._previous_sigint = None

    def _teardown(self) -> None:
        self._report_stop.set()
        if self.o.live_dir is not None:
            from ..stack import remove_live

            remove_live(self.o.live_dir)
        self._stop.set()
        self.gate.closed.set()
        for t in self._threads:
            t.join(timeout=10)
        if self._own_sim and self.sim is not None:
            self.sim.stop()
        if getattr(self, "_httpd", None) is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self.moto is not None:
            self.moto.stop()
        wiring.reset()
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._restore_logging()

    def _setenv(self, values: dict[str, str]) -> None:
        for k, v in values.items():
            self._saved_env.setdefault(k, os.environ.get(k))
            os.environ[k] = v

    def _setup_logging(self) -> None:
        """Machine logs (the handlers' JSON lines, AWS clients, the HTTP client) go to the log
        file, and to stderr only with `verbose`; never mixed into the person's output."""
        from phonon_outbound.observability import SERVICE

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        domain = logging.getLogger(SERVICE)
        self._saved_propagate = domain.propagate
        domain.propagate = False  # its own handler writes its JSON lines; no second copy through root
        target: TextIO | None = None
        if self.o.log_file is not None:
            self.o.log_file.parent.mkdir(parents=True, exist_ok=True)
            target = self.o.log_file.open("a", encoding="utf-8")
            self._log_stream = target
        for h in domain.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                self._log_handlers.append((h, h.stream))
                if target is not None:
                    h.setStream(target)
                elif not self.o.verbose:
                    h.setStream(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
        if self.o.verbose and target is not None:  # the domain logger's lines on stderr as well
            echo = logging.StreamHandler(sys.stderr)
            if self._log_handlers:
                echo.setFormatter(self._log_handlers[0][0].formatter)  # the same JSON lines
            domain.addHandler(echo)
            self._added_handlers.append((domain, echo))
        root = logging.getLogger()
        if target is not None:
            fh = logging.StreamHandler(target)
            fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
            root.addHandler(fh)
            self._added_handlers.append((root, fh))
        if self.o.verbose:
            err = logging.StreamHandler(sys.stderr)
            err.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
            root.addHandler(err)
            self._added_handlers.append((root, err))
        chosen = os.environ.get("PHONON_OUTBOUND_LOG_LEVEL", "").upper()
        default = logging.INFO if (target or self.o.verbose) else logging.WARNING
        level_of = logging.getLevelName(chosen) if chosen else default
        for name, level in (("", default), (SERVICE, level_of if isinstance(level_of, int) else default),
                            ("botocore", logging.WARNING), ("urllib3", logging.WARNING),
                            ("boto3", logging.WARNING), ("werkzeug", logging.ERROR)):
            lg = logging.getLogger(name)
            self._saved_levels.append((lg, lg.level))
            lg.setLevel(level)
        logging.captureWarnings(True)

    def _restore_logging(self) -> None:
        for handler, stream in self._log_handlers:
            handler.setStream(stream)
        self._log_handlers.clear()
        for lg, added in self._added_handlers:
            lg.removeHandler(added)
        self._added_handlers.clear()
        for lg, level in self._saved_levels:
            lg.setLevel(level)
        self._saved_levels.clear()
        logging.captureWarnings(False)
        if hasattr(self, "_saved_propagate"):
            from phonon_outbound.observability import SERVICE

            logging.getLogger(SERVICE).propagate = self._saved_propagate
        stream = getattr(self, "_log_stream", None)
        if stream is not None:
            stream.close()
            self._log_stream = None

    def _put_flow_secret(self, flow: str, security_id: str) -> None:
        prefix = self.stack.params.get("FlowSecretPrefix", "phonon-outbound/flows/")
        sm = self.session.client("secretsmanager")
        try:
            sm.create_secret(Name=f"{prefix}{flow}", SecretString=json.dumps({"security-id": security_id}))
        except sm.exceptions.ResourceExistsException:
            sm.put_secret_value(SecretId=f"{prefix}{flow}", SecretString=json.dumps({"security-id": security_id}))

    # ------------------------------------------------------------------ webhook server
    def _start_webhook_server(self) -> None:
        pipeline = self
        # One push at a time by default: on AWS each push is its own Lambda, but here every push
        # shares the one emulated DynamoDB with dispatch, and unbounded pushes would starve it.
        # A push waits on the emulator's answers (~70 ms, 3 writes), not its CPU: a few at a
        # time (`webhook_concurrency`) take a big run's pushes 2-3 times faster.
        one_at_a_time = threading.Semaphore(max(1, self.o.webhook_concurrency))

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace")
                event = {
                    "version": "2.0", "rawPath": self.path, "rawQueryString": "",
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "requestContext": {"http": {"method": "POST", "path": self.path, "sourceIp": "127.0.0.1"},
                                       "requestId": str(uuid.uuid4()), "accountId": "anonymous"},
                    "body": body, "isBase64Encoded": False,
                }
                with one_at_a_time:
                    resp = pipeline._webhook_handler(event, FakeContext("webhook", 15))
                pipeline.webhook_pushes += 1
                pipeline.last_push = time.monotonic()
                payload = (resp.get("body") or "").encode()
                self.send_response(int(resp.get("statusCode", 200)))
                for k, v in (resp.get("headers") or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.webhook_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/webhook"
        t = threading.Thread(target=self._httpd.serve_forever, name="webhook", daemon=True)
        t.start()

    # ------------------------------------------------------------------ ingest
    def _continue_ingest(self, event: dict) -> None:
        with self._cont_lock:
            self._continuations.append(event)

    def _throttle(self) -> None:
        """Keep the emulated queue shallow: moto's SQS slows down with depth (docs/benchmarks.md: every send scans the queued messages).
        After Ctrl-C, stop ingest before it queues another chunk."""
        while not self._stop.is_set():
            if self._interrupted.is_set():
                raise Interrupted("the run was interrupted")
            attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue_url,
                                                  AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
            if int(attrs.get("ApproximateNumberOfMessages", 0)) < 50:
                return
            time.sleep(0.2)
        if self._interrupted.is_set():
            raise Interrupted("the run was interrupted")

    def _s3_event(self, f: FileRun) -> dict:
        obj = f.obj
        assert obj is not None and f.uploaded is not None
        when = f.uploaded.strftime("%Y-%m-%dT%H:%M:%S.") + f"{f.uploaded.microsecond // 1000:03d}Z"
        return {"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION,
            "eventTime": when, "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "local"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": uuid.uuid4().hex[:16]},
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "incoming",
                   "bucket": {"name": obj.bucket, "ownerIdentity": {"principalId": "local"},
                              "arn": f"arn:aws:s3:::{obj.bucket}"},
                   "object": {"key": s3_event_key(obj.key), "size": obj.size or 0, "eTag": obj.etag or "",
                              "versionId": obj.version_id or "", "sequencer": uuid.uuid4().hex[:18].upper()}},
        }]}

    def _ingest_all(self, files: list[FileRun]) -> None:
        try:
            for f in files:
                if self._interrupted.is_set():
                    return
                if f.obj is None:  # an event the intake refused: there is no file
                    continue
                self._ingest_handler(self._s3_event(f), FakeContext("ingest", 900))
                while True:
                    with self._cont_lock:
                        event = self._continuations.pop(0) if self._continuations else None
                    if event is None:
                        break
                    self._ingest_handler(event, FakeContext("ingest", 900))
        except Interrupted:
            return
        except Exception as err:  # surfaced by run(): a crash here is a bug, not a row outcome
            if not self._interrupted.is_set():
                self._errors.append(f"ingest failed: {err!r}")

    # ------------------------------------------------------------------ dispatch workers
    def _note_received(self, body: str) -> None:
        try:
            doc = json.loads(body)
            job, rows = str(doc["job"]), [int(r) for r in doc["rows"]]
        except (ValueError, KeyError, TypeError):
            return
        with self._received_lock:
            self._received.setdefault(job, set()).update(rows)

    def _dispatch_worker(self, n: int, express_only: bool = False) -> None:
        """One dispatcher. It takes from the express lane first (a short poll), then from the
        chunk queue; with `express_only` it reads the express lane alone, as the express lane's
        own event source does on AWS (a small job's chunk is picked up while every other worker
        is busy with a batch of big chunks)."""
        lanes = [(self.express_url, "ExpressQueue")] if self.express_url else []
        if not express_only:
            lanes.append((self.queue_url, "ChunkQueue"))
        while lanes and not self._stop.is_set():
            try:
                url, resource, messages = self._receive(lanes)
                if not messages:
                    continue
                if self._stop.is_set():  # taken after the stop: leave them to the queue
                    break
                for m in messages:
                    self._note_received(m["Body"])
                arn = self.stack.physical[resource]["Arn"]  # the record's own queue: a hand-back goes back there
                try:
                    result = self._dispatch_handler(sqs_event(messages, arn), FakeContext(f"dispatch-{n}", 60))
                except Exception as err:  # the whole batch stays on the queue, as on AWS
                    if not self._stop.is_set():
                        self._errors.append(f"dispatch invocation failed: {err!r}")
                    continue
                self._delete_handled(url, messages, result)
            except Exception as err:
                if not self._stop.is_set():
                    self._errors.append(f"dispatch worker: {err!r}")
                    time.sleep(0.5)

    def _delete_handled(self, url: str, messages: list[dict], result: Any) -> None:
        """As Lambda's SQS event source does after an invocation: delete every message the
        handler did not name in `batchItemFailures` (those come back after their visibility)."""
        failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
        done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(QueueUrl=url, Entries=done)

    def _receive(self, lanes: list[tuple[str, str]]) -> tuple[str, str, list[dict]]:
        """The first lane's messages that has any (short polls; the last lane long-polls 1 s)."""
        for i, (url, resource) in enumerate(lanes):
            last = i == len(lanes) - 1
            resp = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1 if last else 0,
                                            AttributeNames=["All"], MessageAttributeNames=["All"])
            if resp.get("Messages") or last:
                return url, resource, resp.get("Messages", [])
        return "", "", []
    # ------------------------------------------------------------------ the report worker
    def _report_worker(self) -> None:
        """The report function's SQS event source: requests (a job settled, outcomes arrived,
        debounced with DelaySeconds) → the ReportFunction handler, a batch at a time, with
        partial batch failures as on AWS."""
        arn = self.stack.physical["ReportQueue"]["Arn"]
        while not self._report_stop.is_set():
            try:
                # Short polls a second apart: requests are few (one a minute per job at most once
                # it is written), and a long poll keeps the one emulated AWS process busy that
                # the webhook and dispatch wait on.
                resp = self.sqs.receive_message(QueueUrl=self.report_queue_url, MaxNumberOfMessages=10,
                                                WaitTimeSeconds=0, AttributeNames=["All"])
                messages = resp.get("Messages", [])
                if not messages:
                    self._report_stop.wait(1.0)
                    continue
                if self._report_stop.is_set():
                    continue
                result = self._report_handler(sqs_event(messages, arn), FakeContext("report", 900))
                self._delete_handled(self.report_queue_url, messages, result)
            except Exception as err:
                if not self._report_stop.is_set():
                    self._errors.append(f"report worker: {err!r}")
                    time.sleep(0.5)

    # ------------------------------------------------------------------ the run
    def upload(self, paths: list[Path]) -> list[FileRun]:
        """Upload each file as `incoming/<file name>` (every upload its own S3 version, so the
        same name twice is two jobs), with the column mapping as object metadata, as a user
        would upload it on AWS."""
        metadata: dict[str, str] = {}
        if self.o.phone_columns:
            metadata["phone-columns"] = metadata_value(",".join(self.o.phone_columns))
        if self.o.id_column:
            metadata["id-column"] = metadata_value(self.o.id_column)
        self._demo_flows_for(paths)
        files: list[FileRun] = []
        taken: set[str] = set()
        out = Path(self.o.out_dir)
        last = datetime.min.replace(tzinfo=UTC)
        for p in paths:
            uploaded = max(datetime.now(UTC), last + timedelta(milliseconds=1))  # distinct, ordered
            last = uploaded
            envelope = event_envelope(p)
            if envelope is not None:  # through the intake function, as EventBridge would deliver it
                obj, error = self._take_event(envelope)
                key = obj.key if obj else ""
            else:
                key = f"incoming/{p.name}"
                extra: dict[str, Any] = {"Metadata": metadata} if metadata else {}
                put = self.s3.put_object(Bucket=self.bucket, Key=key, Body=p.read_bytes(), **extra)
                obj, error = ObjectRef(self.bucket, key, put.get("VersionId"), put.get("ETag"), p.stat().st_size), ""
            n = 1
            name = report_base_name(p.name, upload_stamp(uploaded))
            while name in taken or (out / f"{name}.results.csv").exists():
                n += 1
                name = report_base_name(p.name, upload_stamp(uploaded), n)
            taken.add(name)
            files.append(FileRun(p, key, obj, uploaded, name))
            if error:  # refused whole by the intake: nothing was written, nothing to wait for
                out.mkdir(parents=True, exist_ok=True)
                with (out / f"{name}.results.csv").open("w", encoding="utf-8", newline="") as fh:
                    ReportWriter(fh)  # the header line only, as for a file rejected whole
                files[-1].summary = summary_dict(file=str(p), flow="", error=error, job="")
        return files

    def _take_event(self, envelope: dict) -> tuple[ObjectRef | None, str]:
        """An `Outbound Calls Requested` event through the intake handler: the request's file
        (written now, or by an earlier delivery of the same event), or why it was refused."""
        out = self._intake_handler(envelope, FakeContext("intake", 30)) or {}
        if out.get("status") not in ("written", "already written"):
            return None, str(out.get("reason") or "not an 'Outbound Calls Requested' event (detail-type)")
        head = self.s3.head_object(Bucket=self.bucket, Key=out["key"])
        return ObjectRef(self.bucket, out["key"], head.get("VersionId"), head.get("ETag"), head["ContentLength"]), ""

    def _demo_flows_for(self, paths: list[Path]) -> None:
        """With the bundled simulator, a JSON file's own flow-id works without a security-id
        (the simulator's demo id, as for --flow-id); with --api-url it needs its own."""
        if self.o.api_url or not self._own_sim:
            return
        from ..simulator import DEMO_SECURITY_ID

        for p in paths:
            if not p.name.lower().removesuffix(".gz").endswith(".json"):
                continue
            envelope = event_envelope(p)
            if envelope is not None:
                detail = envelope.get("detail")
                flow = detail.get("flow-id") if isinstance(detail, dict) else None
                if isinstance(flow, str) and FLOW_ID_RE.match(flow) and flow not in self._flows:
                    self._flows[flow] = DEMO_SECURITY_ID
                    self.sim.add_flow(flow, DEMO_SECURITY_ID)
                    self._put_flow_secret(flow, DEMO_SECURITY_ID)
                continue
            try:
                with p.open("rb") as stream:
                    contacts = open_contacts(stream, p.name, self._parse_options())
                    flow = contacts.flow_id
                    contacts.close()
            except Exception:  # noqa: BLE001 - ingest rejects the file with its reason
                continue
            if flow and FLOW_ID_RE.match(flow) and flow not in self._flows:
                self._flows[flow] = DEMO_SECURITY_ID
                self.sim.add_flow(flow, DEMO_SECURITY_ID)
                self._put_flow_secret(flow, DEMO_SECURITY_ID)

    def run(self, paths: list[Path], files: list[FileRun] | None = None) -> dict:
        started = time.monotonic()
        files = files if files is not None else self.upload(paths)
        counter = threading.Thread(target=self._estimate_rows, args=(files,), name="count-rows", daemon=True)
        counter.start()
        ingest = threading.Thread(target=self._ingest_all, args=(files,), name="ingest", daemon=True)
        ingest.start()
        for n in range(max(1, self.o.concurrency)):
            t = threading.Thread(target=self._dispatch_worker, args=(n,), name=f"dispatch-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.express_url:  # the express lane's own event source (template: DispatchFunction's Express event)
            t = threading.Thread(target=self._dispatch_worker, args=(n + 1, True), name="dispatch-express", daemon=True)
            t.start()
            self._threads.append(t)
        reporter = threading.Thread(target=self._report_worker, name="report", daemon=True)
        reporter.start()

        abort_reason, status = "", Status.FAILED
        progress = Progress(self.progress, self.o.rate)
        try:
            abort_reason = self._watch(files, ingest, started, progress)
        except KeyboardInterrupt:
            self.gate.closed.set()  # nothing more goes out, from this instant
            self._interrupted.set()
            self.interrupted = True
            status = Status.CANCELLED
            abort_reason = INTERRUPT_REASON + (INTERRUPT_REASON_STATE if self.o.state_dir is not None
                                               else INTERRUPT_REASON_NO_STATE)
        progress.end()
        # From here on a Ctrl-C only cuts the waits short (answers in flight, webhooks): the
        # reports and the local state are written whatever happens.
        # (The previous handler comes back in __exit__, after the emulator has stopped.)
        previous = self._on_sigint(self._late_sigint)
        if previous is not None and self._previous_sigint is None:
            self._previous_sigint = previous
        if self.interrupted:
            self._say("interrupted: nothing more is sent; waiting briefly for answers in flight "
                      "(Ctrl-C again to stop waiting)")
        if abort_reason:
            self.gate.closed.set()
        self._stop.set()
        t0 = time.monotonic()
        self._wait_inflight()
        for t in self._threads:
            t.join(timeout=2.0 if abort_reason else max(5.0, self.settings.api_read_timeout_s + 5))
        ingest.join(timeout=5 if abort_reason else 30)
        log.info("dispatchers and ingest stopped in %.1f s", time.monotonic() - t0)
        if abort_reason:
            t0 = time.monotonic()
            unknown = self.gate.inflight_rows(f"$flow.key.{self.settings.correlation_key}")
            for f in files:
                if f.obj is None:  # an event the intake refused: its summary is written already
                    continue
                self._settle_unsent(f, status, abort_reason, unknown.get(f.obj.job_id, set()))
            log.info("unsent rows settled and reports written in %.1f s", time.monotonic() - t0)
        if not self.interrupted:
            self._await_webhooks()
            self._reconcile(files)
        self._report_stop.set()  # the final writes below are the last (nothing writes behind them)
        reporter.join(timeout=30)
        t0 = time.monotonic()
        result = self._collect(files, started, abort_reason)
        log.info("reports collected in %.1f s", time.monotonic() - t0)
        t0 = time.monotonic()
        self.save_state()
        try:
            self._save_suppression()
        except Exception:  # the reports matter more
            log.exception("the local suppression list could not be saved")
        log.info("local state saved in %.1f s", time.monotonic() - t0)
        self._keep_last_run(files, result)
        if self.state_saved is not None:
            result["state_claims"] = self.state_saved
        if self.state_error:
            result["state_error"] = self.state_error
        return result

    def _late_sigint(self, *_: Any) -> None:
        """Ctrl-C once sending has stopped (or finished): stop waiting (answers in flight,
        flow-end webhooks); the reports and the state are still written. Said at once."""
        first = not self._hurry.is_set()
        self._hurry.set()
        if not self.interrupted:
            self.late_interrupt = True
            if first:
                self._say("interrupted: everything was already sent; no longer waiting for flow-end webhooks, "
                          "writing the reports and saving the state")
        elif first:
            self._say("interrupted again: no longer waiting; writing the reports and saving the state")

    @staticmethod
    def _on_sigint(handler: Any) -> Any:
        """Install a SIGINT handler (main thread only); returns the one it replaced."""
        if handler is None or threading.current_thread() is not threading.main_thread():
            return None
        return signal.signal(signal.SIGINT, handler)

    def save_state(self) -> None:
        if self.o.state_dir is None:
            return
        if self._claimed is None or len(self._claimed) >= 5_000:  # the embedded AWS reads ~1,000 claims/s
            self._say("saving duplicate protection (the accepted calls' claims) in "
                      f"{self.o.state_dir}; this can take a minute for a big run")
        try:
            if self._claimed is None:
                claims = LocalState.claims_in(self.ddb, self.state_table, released=self._released)
            else:  # this run's claims read by key; earlier runs' as loaded (merged in by write)
                wanted = [h for h, owner in self._claimed.items() if not self._is_released(owner)]
                claims = LocalState.claims_at(self.ddb, self.state_table, wanted, released=self._released)
            self.state_saved = LocalState(self.o.state_dir).write(claims)
        except OSError as err:  # the reports matter more; the person is told (cli)
            self.state_error = f"{err.strerror or err}"
        except Exception as err:  # noqa: BLE001 - a bug; still told, the reports are written
            self.state_error = f"{type(err).__name__}: {err}"

    def _is_released(self, owner: str) -> bool:
        ref = parse_row_ref(owner)
        return ref is not None and ref[1] in self._released.get(ref[0], ())

    def _say(self, text: str) -> None:
        print(f"phonon-outbound: {text}", file=self.progress, flush=True)

    def _watch(self, files: list[FileRun], ingest: threading.Thread, started: float, progress: Progress) -> str:
        """Until every job completed (or the run must stop): progress, and the stop rules."""
        store = wiring.store()
        last_change, last_state = time.monotonic(), None
        while True:
            metas = [store.jobs.get_job(f.obj.job_id) or {} if f.obj else {"completed": bool(f.summary)} for f in files]
            if all(m.get("completed") for m in metas) and not ingest.is_alive():
                return ""
            state = [(m.get("chunks_settled"), m.get("checkpoint_row"), m.get("accepted")) for m in metas]
            if state != last_state:
                last_state, last_change = state, time.monotonic()
            self._show_progress(progress, files, metas, started)
            waiting = self._window_wait(metas)
            if waiting:  # chunks held for the calling window: waiting, not stalled
                last_change = time.monotonic()
                if waiting != self._window_said:
                    progress.end()
                    self._say(waiting)
                    self._window_said = waiting
            flows = self._flow_controls(files, metas)
            paused = self._paused(files, metas, flows)
            if paused:  # a paused job or flow: waiting for `phonon-outbound resume`, not stalled
                last_change = time.monotonic()
            if paused != self._paused_said:
                progress.end()
                self._say(paused or "resumed: sending again")
                self._paused_said = paused
            capped, allowance = self._capped(files, metas, flows)
            if capped != self._capped_said:  # `phonon-outbound limit` set, changed or removed a cap
                progress.end()
                self._say(capped or "no cap: sending at the global rate")
                self._capped_said = capped
            breaker = self._open_breaker(metas)
            if breaker:
                return f"not sent: Phonon refused the account or flow ({breaker}); run stopped"
            if self._errors and not ingest.is_alive() and time.monotonic() - last_change > 10:
                return f"not sent: the local pipeline failed ({self._errors[0]})"
            # A capped job is slow by choice: one chunk may take `allowance` seconds at its cap.
            if time.monotonic() - last_change > self.o.stall_timeout_s + allowance:
                return f"not sent: no progress for {self.o.stall_timeout_s:.0f} s; run stopped"
            time.sleep(0.2)

    _window_said = ""
    _paused_said = ""
    _capped_said = ""

    @staticmethod
    def _steered(files: list[FileRun], metas: list[dict]) -> Iterator[tuple[FileRun, dict, str]]:
        """(file, its job item, its flow) of each job of the run a pause or a cap can still hold."""
        for f, m in zip(files, metas, strict=True):
            if f.obj is not None and not m.get("completed") and not m.get("cancelled_reason"):
                yield f, m, str(m.get("flow") or "")

    def _flow_controls(self, files: list[FileRun], metas: list[dict]) -> dict[str, FlowControl]:
        """Each flow's control item (its pause and its cap), read once per look."""
        store = wiring.store()
        return {flow: store.jobs.flow_control(flow) for flow in {flow for _, _, flow in self._steered(files, metas)}}

    def _capped(self, files: list[FileRun], metas: list[dict], flows: dict[str, FlowControl]) -> tuple[str, float]:
        """("capped: <file> at N calls/min; …", the seconds one chunk takes at the lowest cap)
        while a job of the run (or its flow) is capped and not finished; ("", 0) else."""
        held, allowance = [], 0.0
        for f, m, flow in self._steered(files, metas):
            cap = Control(job_cap=read_cap(m.get("rate_cap")), flow_cap=flows[flow].cap).cap
            if cap is not None:
                held.append(f"{f.key} at {cap:,} calls/min")
                allowance = max(allowance, 60.0 * self.settings.batch_size / cap)
        return ("capped: " + "; ".join(held)) if held else "", allowance

    @classmethod
    def _paused(cls, files: list[FileRun], metas: list[dict], flows: dict[str, FlowControl]) -> str:
        """"paused: …" while a job of the run (or its flow) is paused and not finished; "" else."""
        held = []
        for f, m, flow in cls._steered(files, metas):
            paused = str(m.get("paused_reason") or "") or flow_pause_text(flow, flows[flow].paused)
            if paused:
                held.append(f"{f.key} ({paused})")
        return ("paused: " + "; ".join(held) + " — waiting for 'phonon-outbound resume'") if held else ""

    @staticmethod
    def _window_wait(metas: list[dict]) -> str:
        """What an unfinished job says it waits for (docs/calling-windows.md), while it waits."""
        from phonon_outbound.windows import seconds_until

        for m in metas:
            wait = m.get("window_wait") or {}
            if wait and not m.get("completed") and (not wait.get("opens") or (seconds_until(wait["opens"]) or 0) > 0):
                return str(wait.get("reason", ""))
        return ""

    def _show_progress(self, progress: Progress, files: list[FileRun], metas: list[dict], started: float) -> None:
        total: int | None = 0
        done = sent = accepted = 0
        for f, m in zip(files, metas, strict=True):
            if m.get("error"):
                continue
            known = int(m["total_rows"]) if m.get("ingest_done") else f.rows_estimate
            total = None if total is None or known is None else total + known
            acc, fail, dup = (int(m.get(k, 0) or 0) for k in ("accepted", "failed", "duplicate"))
            counts = m.get("counts") or {}
            done += int(m.get("total_rows", 0)) if m.get("completed") else acc + fail + dup + int(
                counts.get("rejected", 0))
            sent += acc + fail
            accepted += acc
        progress.update(time.monotonic(), started, total, done, sent, accepted)

    def _estimate_rows(self, files: list[FileRun]) -> None:
        """Each file's number of data rows, for the ETA (the reader's own validation pass)."""
        for f in files:
            if self._stop.is_set():
                return
            try:
                with f.path.open("rb") as stream:
                    contacts = open_contacts(stream, f.path.name, self._parse_options())
                    f.rows_estimate = int(contacts.row_count)
                    contacts.close()
            except Exception:  # noqa: BLE001 - a rejected file shows no ETA; ingest says why
                f.rows_estimate = 0

    def _parse_options(self) -> ParseOptions:
        """The reader's options as ingest builds them (the same settings and builder), with
        this run's column mapping."""
        return parse_options(self.settings, phone_columns=self.o.phone_columns or None, id_column=self.o.id_column)

    def _wait_inflight(self) -> None:
        deadline = time.monotonic() + self.o.inflight_grace_s
        while self.gate.inflight() and time.monotonic() < deadline and not self._hurry.is_set():
            time.sleep(0.05)

    def _settle_unsent(self, f: FileRun, status: str, reason: str, unknown: set[int]) -> None:
        """The report of a job the run stopped before it finished, written here: every row
        with its outcome so far; rows never sent get `status` with `reason` and their
        client-identifier (read from the file with the reader ingest uses); rows whose request
        was on the wire when the run stopped are FAILED as "may have been placed".

        Written straight to --out rather than as row items for the job's own report: the
        embedded DynamoDB takes ~1 s per 1,000 row items to write and ~2 s to read them back
        (measured: 18,000 unsent rows cost 98 s after a Ctrl-C), and the local report is the
        one the person reads."""
        store = wiring.store()
        job = f.obj.job_id if f.obj else ""
        meta = (store.jobs.get_job(job) if job else None) or {}
        if meta.get("completed"):
            return
        known = store.rows.iter_outcomes(job) if meta else iter(())
        received = self._received.get(job, set())
        released = self._released.setdefault(job, set())
        counts = dict.fromkeys(STATUSES, 0)
        out = Path(self.o.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        local_csv = out / f"{f.local_name}.results.csv"
        error = None
        with local_csv.open("w", encoding="utf-8", newline="") as fh:
            writer = ReportWriter(fh)
            nxt = next(known, None)
            try:
                with f.path.open("rb") as stream:
                    contacts = open_contacts(stream, f.path.name, self._parse_options())
                    try:
                        for item in contacts.rows():
                            while nxt is not None and int(nxt["row"]) < item.row:
                                nxt = next(known, None)
                            cells: tuple[str, ...] = ()
                            if nxt is not None and int(nxt["row"]) == item.row:
                                st = nxt.get("status") or (Status.ACCEPTED if nxt.get("phonon_uuid") else Status.FAILED)
                                row_reason = nxt.get("reason", "") if nxt.get("status") else (
                                    WEBHOOK_ONLY_REASON if nxt.get("phonon_uuid") else reason)
                                row = (nxt.get("cid") or item.client_id, st, nxt.get("phonon_uuid", ""),
                                       nxt.get("request_id", ""), placed_anyway(st, nxt, row_reason))
                                cells = outcome_cells(st, nxt)
                            elif isinstance(item, RejectedRow):
                                row = (item.client_id, Status.REJECTED, "", "", item.reason)
                            elif item.row in unknown:
                                row = (item.client_id, Status.FAILED, "", "", IN_FLIGHT_REASON)
                            else:
                                row = (item.client_id, status, "", "", reason)
                                if item.row in received:
                                    released.add(item.row)  # claimed, never sent: no duplicate later
                            counts[row[1]] = counts.get(row[1], 0) + 1
                            writer.write(item.row, *row, cells)
                    finally:
                        contacts.close()
            except FileRejected as err:
                error = meta.get("error") or err.reason
                counts = dict.fromkeys(STATUSES, 0)
                fh.seek(0)
                fh.truncate()
                ReportWriter(fh)
        f.summary = summary_dict(
            file=str(f.path), flow=meta.get("flow", ""), counts={**counts, "rows": sum(counts.values())},
            api_requests=int(meta.get("api_requests", 0)),
            timings={"elapsed_s": time.time() - float(meta.get("created_at") or time.time())},
            notes=meta.get("notes", []) or [],
            report=str(local_csv), error=error, job=job, stopped=reason)

    def _open_breaker(self, metas: list[dict]) -> str:
        store = wiring.store()
        for flow in {m.get("flow") for m in metas if m.get("flow")}:
            item = store.limits.get(f"{BREAKER}{flow}")
            if item and item.get("open"):
                return str(item.get("reason", "account-level refusal"))
        return ""

    def _await_webhooks(self) -> None:
        if self.sim is not None and hasattr(self.sim, "wait_webhooks_idle"):
            rate = getattr(self.sim, "webhook_rate_per_s", None)
            pending = int(self.sim.stats()["webhooks"]["pending"])
            if rate and pending > rate * self.o.webhook_grace_s:
                return  # they could not all arrive within the grace: do not wait for a part
            deadline = time.monotonic() + self.o.webhook_grace_s
            while time.monotonic() < deadline and not self._hurry.is_set():
                if self.sim.wait_webhooks_idle(0.5):
                    break
            time.sleep(0.2)
            return
        deadline = time.monotonic() + min(self.o.webhook_grace_s, 5.0)
        while (self.webhook_pushes and time.monotonic() < deadline and time.monotonic() - self.last_push < 2.0
               and not self._hurry.is_set()):
            time.sleep(0.2)

    reconciled: dict[str, int] | None = None

    def _reconcile(self, files: list[FileRun]) -> None:
        """The reconciler once (its handler, as the schedule would run it, naming this run's
        jobs; `reconcile_after_s` 0): outcomes whose push never came are pulled before the
        final report write (docs/operating.md, "Missed webhooks: the reconciler")."""
        handler = getattr(self, "_reconcile_handler", None)
        jobs = [f.obj.job_id for f in files if f.obj is not None]
        if handler is None or not jobs or self._hurry.is_set():
            return
        total: dict[str, int] = {}
        t0 = time.monotonic()
        try:
            for i in range(0, len(jobs), 100):  # the handler takes at most 100 named jobs
                out = handler({"jobs": jobs[i:i + 100]}, FakeContext("reconcile", 300))
                for k, v in out.items():
                    if isinstance(v, int) and not isinstance(v, bool):
                        total[k] = total.get(k, 0) + v
        except Exception:  # the reports matter more
            log.exception("the reconciler failed")
        self.reconciled = total
        log.info("reconciler ran in %.1f s: %s", time.monotonic() - t0, total)

    def _report_keys(self, f: FileRun) -> tuple[str, str]:
        """Where this job's report is in S3: the names fixed on its job item (one per upload),
        else the names reports had before them."""
        meta = (wiring.store().jobs.get_job(f.obj.job_id) if f.obj else None) or {}
        return job_report_keys({"key": f.key, **meta})

    def _collect(self, files: list[FileRun], started: float, abort_reason: str) -> dict:
        store, finisher = wiring.store(), wiring.finisher()
        out = Path(self.o.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        entries = []
        count_names = ("rows", *(s.lower() for s in STATUSES))
        totals = dict.fromkeys(count_names, 0)
        api_requests = 0
        for f in files:
            local_csv = out / f"{f.local_name}.results.csv"
            local_summary = out / f"{f.local_name}.summary.json"
            if f.summary:  # written here: the run stopped before the job finished
                summary = dict(f.summary)
            else:
                # The final write, after the webhook grace (flow-end outcomes may have arrived
                # since the report function's last write), downloaded at once: a job without its
                # own report name (older ingest) shares `reports/<key>.results.csv` with every
                # upload of the same key.
                meta = (store.jobs.get_job(f.obj.job_id) if f.obj is not None else None) or {}
                if f.obj is not None and meta.get("completed") and not (abort_reason and meta.get("report_csv_key")):
                    finisher.finalize(f.obj.job_id, force=True, final=True)
                csv_key, summary_key = self._report_keys(f)
                try:
                    self.s3.download_file(self.bucket, csv_key, str(local_csv))
                    self.s3.download_file(self.bucket, summary_key, str(local_summary))
                    summary = json.loads(local_summary.read_text())
                except Exception as err:
                    summary = {"rows": 0, "error": abort_reason or f"no report was written ({err!r})"}
                    with local_csv.open("w", encoding="utf-8", newline="") as fh:
                        ReportWriter(fh)
            summary["report"] = str(local_csv)
            entry: dict[str, Any] = {"file": str(f.path), "key": f.key,
                                     **{k: int(summary.get(k, 0)) for k in count_names}, "report": str(local_csv)}
            for k in ("error", "notes", "flow", "calling_window"):
                if summary.get(k):
                    entry[k] = summary[k]
            local_summary.write_text(json.dumps({**summary, "file": str(f.path)}, indent=2))
            entries.append(entry)
            for k in totals:
                totals[k] += entry[k]
            api_requests += int(summary.get("api_requests", 0))
        result: dict[str, Any] = {"files": entries, "totals": totals, "api_requests": api_requests,
                                  "elapsed_s": round(time.monotonic() - started, 3)}
        dlq = int(self.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
                  ["Attributes"].get("ApproximateNumberOfMessages", 0))
        result["dead_letter_messages"] = dlq
        result["webhooks_received"] = self.webhook_pushes
        if self.reconciled:  # outcomes pulled from the simulator's pull API (pushes lost, or late)
            result["reconciler"] = {k: self.reconciled.get(k, 0) for k in ("requests", "pulled", "no_data")}
        if self._own_sim and self.sim is not None and not self.interrupted:
            pending = int(self.sim.stats()["webhooks"]["pending"])
            if pending:
                result["webhooks_pending"] = pending
        if abort_reason:
            result["error"] = abort_reason
        if self.interrupted:
            result["interrupted"] = True
        elif self.late_interrupt:
            result["interrupted_after_sending"] = True
        if self.state_loaded:
            result["state_claims_loaded"] = self.state_loaded
        if self._errors:
            result["internal_errors"] = self._errors[:5]
        try:  # the picture of the run (docs/operating.md); the reports matter more
            result["picture"] = self._run_picture(files, entries, dlq, result["webhooks_received"])
        except Exception:  # noqa: BLE001
            log.exception("the run's summary could not be made")
        return result

    def _keep_last_run(self, files: list[FileRun], result: dict) -> None:
        """`<state dir>/last-run.json` for `phonon-outbound status` once this run has ended
        (stack.py): when it ended, the run's summary, each job's final picture and where its
        report files are. Nothing per row, no phone numbers. With --no-state nothing is kept,
        and an earlier run's snapshot is removed so it never passes for this run's."""
        from ..stack import remove_last_run, write_last_run

        try:
            if self.o.state_dir is None:
                if self.o.live_dir is not None:
                    remove_last_run(self.o.live_dir)
                return
            pictures = {p.job: p for p in self.pictures}
            out = Path(self.o.out_dir)
            jobs = []
            for f, entry in zip(files, result["files"], strict=True):
                job = f.obj.job_id if f.obj is not None else ""
                pic = pictures.get(job) if job else None
                jobs.append({"job": job, "file": str(f.path), "key": f.key,
                             "results_csv": str(Path(entry["report"]).resolve()),
                             "summary_json": str((out / f"{f.local_name}.summary.json").resolve()),
                             "picture": pic.to_dict() if pic is not None else None,
                             **({"error": entry["error"]} if entry.get("error") else {})})
            write_last_run(self.o.state_dir, {
                "ended_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "limit": self.o.rate,
                "run": result.get("picture"), "jobs": jobs})
        except Exception:  # noqa: BLE001 - the reports matter more
            log.exception("the run's snapshot for `status` could not be written")

    def _run_picture(self, files: list[FileRun], entries: list[dict], dlq: int, webhooks: int) -> dict:
        """Each job's picture (devkit job_status.py; the outcome mix from its downloaded report) for
        the summary `run` prints and `run --html`, kept in `self.pictures`."""
        from ..job_status import mix_from_report, picture, run_summary, settled_chunks

        store = wiring.store()
        self.pictures, chunks = [], []
        for f, entry in zip(files, entries, strict=True):
            job = f.obj.job_id if f.obj is not None else ""
            settled = settled_chunks(store, job) if job else []
            pic = picture(store, job, self.o.rate, outcomes=False, chunks=settled) if job else None
            if pic is None:
                continue
            pic.file, pic.mix, pic.mix_skipped = str(f.path), mix_from_report(entry["report"]), ""
            self.pictures.append(pic)
            chunks.extend(settled)
        return run_summary(self.pictures, sorted(chunks, key=lambda c: c["at"]), self.o.rate, dlq, webhooks)
