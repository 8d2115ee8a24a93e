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

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import boto3

from .. import wiring
from ..ingest import ObjectRef
from ..jobs import report_keys
from .cfn import ACCOUNT, REGION, LocalStack, load_template

DEMO_SECRET_NAME = "security-id"


def find_root() -> Path:
    """The project folder holding template.yaml: the current directory or one above it, else
    the checkout this package was installed from (editable install)."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "template.yaml").is_file() and (folder / "functions").is_dir():
            return folder
    pkg = Path(__file__).resolve().parents[4]
    if (pkg / "template.yaml").is_file():
        return pkg
    raise FileNotFoundError("template.yaml not found: run from the phonon-outbound project folder")


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
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


@dataclass
class RunOptions:
    flow_id: str | None = None
    api_url: str | None = None
    security_id: str | None = None
    rate: int = 30_000
    batch_size: int = 500
    concurrency: int = 2
    out_dir: Path = Path("outbound-reports")
    shape: str = "202"
    time_zone: str | None = None
    default_region: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # extra Settings overrides (tests)
    visibility_timeout: int | None = None
    stall_timeout_s: float = 300.0
    webhook_grace_s: float = 30.0
    # Flow-end pushes a second from the bundled simulator. Each costs the webhook handler two
    # writes in the one embedded DynamoDB (~60 pushes/s at most here); unpaced, a big run's
    # pushes (one per accepted call, all at once) starved dispatch: 30,000 rows took 412 s
    # instead of ~76 s. Real flow ends arrive spread over the campaign as calls end.
    webhook_rate: float | None = 20.0
    simulator: Any = None  # a started PhononSimulator to use instead of starting one


@dataclass
class FileRun:
    path: Path
    key: str
    obj: ObjectRef | None = None
    summary: dict = field(default_factory=dict)


class LocalPipeline:
    def __init__(self, options: RunOptions, progress: TextIO = sys.stderr):
        self.o = options
        self.progress = progress
        self.root = find_root()
        self._saved_env: dict[str, str | None] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[str] = []
        self._continuations: list[dict] = []
        self._cont_lock = threading.Lock()
        self.sim: Any = None
        self._own_sim = False
        self.webhook_pushes = 0
        self.last_push = 0.0

    # ------------------------------------------------------------------ set-up / tear-down
    def __enter__(self) -> LocalPipeline:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        self.moto = MotoServer().start()
        self.endpoint = self.moto.url
        self._setenv({
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
            "POWERTOOLS_DEV": "false",
        })
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
        self.bucket = env["BUCKET_NAME"]
        self.queue_url = env["CHUNK_QUEUE_URL"]
        self.dlq_url = self.stack.physical["ChunkDeadLetterQueue"]["Ref"]

        # Webhook endpoint first: the simulator needs its URL.
        self._webhook_handler = _load_handler(self.stack, "WebhookFunction")
        self._start_webhook_server()
        creds = json.loads(self.session.client("secretsmanager").get_secret_value(
            SecretId=env["WEBHOOK_SECRET_NAME"])["SecretString"])

        api_url = self.o.api_url
        if not api_url:
            from ..api.simulator import DEMO_FLOW_ID, DEMO_SECURITY_ID, PhononSimulator
            flows = {DEMO_FLOW_ID: DEMO_SECURITY_ID}
            if self.o.flow_id and self.o.flow_id != DEMO_FLOW_ID:
                flows[self.o.flow_id] = self.o.security_id or DEMO_SECURITY_ID
            if self.o.simulator is not None:
                self.sim = self.o.simulator
            else:
                self.sim = PhononSimulator(shape=self.o.shape, flows=flows, webhook_url=self.webhook_url,
                                           webhook_auth=(creds["username"], creds["password"]),
                                           webhook_rate_per_s=self.o.webhook_rate).start()
                self._own_sim = True
            api_url = self.sim.url
            self._put_flow_secret(DEMO_FLOW_ID, DEMO_SECURITY_ID)
            if self.o.flow_id and self.o.flow_id != DEMO_FLOW_ID:
                self._put_flow_secret(self.o.flow_id, self.o.security_id or DEMO_SECURITY_ID)
        elif self.o.flow_id:
            if not self.o.security_id:
                raise ValueError("--security-id (or PHONON_SECURITY_ID) is required with --api-url and --flow-id")
            self._put_flow_secret(self.o.flow_id, self.o.security_id)

        env.update({"API_URL": api_url})
        local = {"retry_base_s": 0.5, "retry_max_s": 5.0, "breaker_open_s": 30.0, "chunk_lease_s": 30.0,
                 "dispatch_max_wait_s": 30.0, "ingest_time_margin_s": 0.0}
        if self.o.time_zone:
            local["time_zone"] = self.o.time_zone
        if self.o.default_region:
            local["default_region"] = self.o.default_region
        local.update(self.o.settings)
        env.update({k.upper(): str(v) for k, v in local.items()})
        self._setenv(env)
        from ..observability import disable_metrics
        from ..observability import logger as domain_logger

        disable_metrics()
        domain_logger.setLevel(os.environ.get("PHONON_OUTBOUND_LOG_LEVEL", "WARNING"))
        wiring.reset()
        wiring.set_continuation(self._continue_ingest)
        wiring.set_throttle(self._throttle)
        self.settings = wiring.settings()
        self._ingest_handler = _load_handler(self.stack, "IngestFunction")
        self._dispatch_handler = _load_handler(self.stack, "DispatchFunction")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        if self._own_sim and self.sim is not None:
            self.sim.stop()
        if getattr(self, "_httpd", None) is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self.moto.stop()
        wiring.reset()
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def _setenv(self, values: dict[str, str]) -> None:
        for k, v in values.items():
            self._saved_env.setdefault(k, os.environ.get(k))
            os.environ[k] = v

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
        # One push at a time: on AWS each push is its own Lambda, but here every push shares
        # the one emulated DynamoDB with dispatch, and unbounded pushes would starve it.
        one_at_a_time = threading.Semaphore(1)

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
        """Keep the emulated queue shallow: moto's SQS slows down with depth (aws-here.md)."""
        while not self._stop.is_set():
            attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue_url,
                                                  AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
            if int(attrs.get("ApproximateNumberOfMessages", 0)) < 50:
                return
            time.sleep(0.2)

    def _s3_event(self, obj: ObjectRef) -> dict:
        return {"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION,
            "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "local"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": uuid.uuid4().hex[:16]},
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "incoming",
                   "bucket": {"name": obj.bucket, "ownerIdentity": {"principalId": "local"},
                              "arn": f"arn:aws:s3:::{obj.bucket}"},
                   "object": {"key": obj.key, "size": obj.size or 0, "eTag": obj.etag or "",
                              "versionId": obj.version_id or "", "sequencer": uuid.uuid4().hex[:18].upper()}},
        }]}

    def _ingest_all(self, files: list[FileRun]) -> None:
        try:
            for f in files:
                self._ingest_handler(self._s3_event(f.obj), FakeContext("ingest", 900))
                while True:
                    with self._cont_lock:
                        event = self._continuations.pop(0) if self._continuations else None
                    if event is None:
                        break
                    self._ingest_handler(event, FakeContext("ingest", 900))
        except Exception as err:  # surfaced by run(): a crash here is a bug, not a row outcome
            self._errors.append(f"ingest failed: {err!r}")

    # ------------------------------------------------------------------ dispatch workers
    def _dispatch_worker(self, n: int) -> None:
        while not self._stop.is_set():
            try:
                resp = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                                AttributeNames=["All"], MessageAttributeNames=["All"])
                messages = resp.get("Messages", [])
                if not messages:
                    continue
                arn = self.stack.physical["ChunkQueue"]["Arn"]
                event = {"Records": [{
                    "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                    "attributes": m.get("Attributes", {}), "messageAttributes": m.get("MessageAttributes", {}),
                    "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs", "eventSourceARN": arn,
                    "awsRegion": REGION} for m in messages]}
                try:
                    result = self._dispatch_handler(event, FakeContext(f"dispatch-{n}", 60))
                except Exception as err:  # the whole batch stays on the queue, as on AWS
                    self._errors.append(f"dispatch invocation failed: {err!r}")
                    continue
                failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
                done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                        if m["MessageId"] not in failed]
                if done:
                    self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=done)
            except Exception as err:
                if not self._stop.is_set():
                    self._errors.append(f"dispatch worker: {err!r}")
                    time.sleep(0.5)

    # ------------------------------------------------------------------ the run
    def run(self, paths: list[Path]) -> dict:
        started = time.monotonic()
        files = []
        for p in paths:
            key = f"incoming/{p.name}"
            extra = {}
            put = self.s3.put_object(Bucket=self.bucket, Key=key, Body=p.read_bytes(), **extra)
            obj = ObjectRef(self.bucket, key, put.get("VersionId"), put.get("ETag"), p.stat().st_size)
            files.append(FileRun(p, key, obj))
        ingest = threading.Thread(target=self._ingest_all, args=(files,), name="ingest", daemon=True)
        ingest.start()
        for n in range(max(1, self.o.concurrency)):
            t = threading.Thread(target=self._dispatch_worker, args=(n,), name=f"dispatch-{n}", daemon=True)
            t.start()
            self._threads.append(t)

        store = wiring.store()
        abort_reason = ""
        last_change, last_state = time.monotonic(), None
        next_print = 0.0
        while True:
            metas = [store.get_job(f.obj.job_id) or {} for f in files]
            if all(m.get("completed") for m in metas) and not ingest.is_alive():
                break
            state = [(m.get("chunks_settled"), m.get("checkpoint_row"), m.get("accepted")) for m in metas]
            if state != last_state:
                last_state, last_change = state, time.monotonic()
            if time.monotonic() >= next_print:
                self._print_progress(files, metas, started)
                next_print = time.monotonic() + 2.0
            breaker = self._open_breaker(metas)
            if breaker:
                abort_reason = f"not sent: Phonon refused the account or flow ({breaker}); run stopped"
                break
            if self._errors and not ingest.is_alive() and time.monotonic() - last_change > 10:
                abort_reason = f"not sent: the local pipeline failed ({self._errors[0]})"
                break
            if time.monotonic() - last_change > self.o.stall_timeout_s:
                abort_reason = f"not sent: no progress for {self.o.stall_timeout_s:.0f} s; run stopped"
                break
            time.sleep(0.2)

        self._stop.set()
        for t in self._threads:
            t.join(timeout=max(5.0, self.settings.api_read_timeout_s + 5))
        ingest.join(timeout=5)
        finisher = wiring.finisher()
        if abort_reason:
            for f in files:
                meta = store.get_job(f.obj.job_id) or {}
                if meta and not meta.get("completed"):
                    if not meta.get("ingest_done"):
                        store.update_job(f.obj.job_id, total_rows=int(meta.get("checkpoint_row", 0)))
                    finisher.finalize(f.obj.job_id, force=True, missing_reason=abort_reason)
        self._await_webhooks()
        for f in files:  # refresh: flow-end webhooks may have brought phonon-uuids since
            if (store.get_job(f.obj.job_id) or {}).get("completed"):
                finisher.finalize(f.obj.job_id, force=True)
        return self._collect(files, started, abort_reason)

    def _open_breaker(self, metas: list[dict]) -> str:
        store = wiring.store()
        for flow in {m.get("flow") for m in metas if m.get("flow")}:
            item = store.get_item(f"BREAKER#{flow}")
            if item and item.get("open"):
                return str(item.get("reason", "account-level refusal"))
        return ""

    def _await_webhooks(self) -> None:
        if self.sim is not None and hasattr(self.sim, "wait_webhooks_idle"):
            rate = getattr(self.sim, "webhook_rate_per_s", None)
            pending = int(self.sim.stats()["webhooks"]["pending"])
            if rate and pending > rate * self.o.webhook_grace_s:
                return  # they could not all arrive within the grace: do not wait for a part
            self.sim.wait_webhooks_idle(self.o.webhook_grace_s)
            time.sleep(0.2)
            return
        deadline = time.monotonic() + min(self.o.webhook_grace_s, 5.0)
        while self.webhook_pushes and time.monotonic() < deadline and time.monotonic() - self.last_push < 2.0:
            time.sleep(0.2)

    def _print_progress(self, files: list[FileRun], metas: list[dict], started: float) -> None:
        parts = []
        for f, m in zip(files, metas, strict=True):
            if m.get("error"):
                parts.append(f"{f.path.name}: rejected ({m['error']})")
                continue
            parts.append(f"{f.path.name}: {m.get('checkpoint_row', 0)} rows read, "
                         f"{m.get('chunks_settled', 0)}/{m.get('chunks_total', '?')} chunks settled, "
                         f"{m.get('accepted', 0)} accepted")
        print(f"[{time.monotonic() - started:6.1f}s] " + "; ".join(parts), file=self.progress, flush=True)

    def _collect(self, files: list[FileRun], started: float, abort_reason: str) -> dict:
        out = Path(self.o.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        entries = []
        totals = dict.fromkeys(("rows", "accepted", "rejected", "duplicate", "failed"), 0)
        api_requests = 0
        for f in files:
            csv_key, summary_key = report_keys(f.key)
            local_csv = out / f"{f.path.name}.results.csv"
            local_summary = out / f"{f.path.name}.summary.json"
            try:
                self.s3.download_file(self.bucket, csv_key, str(local_csv))
                self.s3.download_file(self.bucket, summary_key, str(local_summary))
                summary = json.loads(local_summary.read_text())
            except Exception as err:
                summary = {"rows": 0, "accepted": 0, "rejected": 0, "duplicate": 0, "failed": 0,
                           "error": abort_reason or f"no report was written ({err!r})"}
            summary["report"] = str(local_csv)
            entry = {"file": str(f.path), "key": f.key,
                     **{k: int(summary.get(k, 0)) for k in totals}, "report": str(local_csv)}
            for k in ("error", "notes", "flow"):
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
        if self._own_sim and self.sim is not None:
            pending = int(self.sim.stats()["webhooks"]["pending"])
            if pending:
                result["webhooks_pending"] = pending
        if abort_reason:
            result["error"] = abort_reason
        if self._errors:
            result["internal_errors"] = self._errors[:5]
        return result
