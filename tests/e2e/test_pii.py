"""No contact number, security-id or webhook credential in any log line, event or report
reason (issue 10 #6), over a whole local pipeline at DEBUG.

In-process against moto (resources from template.yaml): the ingest handler, the dispatch
handler, the bundled Phonon simulator over real HTTP, its flow-end pushes to the webhook
handler served on loopback, and an EventBridge rule on the pipeline's bus whose SQS target
captures every event published. Every line the service logger and the package's own loggers
write (DEBUG), everything printed (metrics), every event, every report reason and summary is
searched for each contact number in every usual writing, the security-id and the webhook
credentials."""

from __future__ import annotations

import base64
import contextlib
import importlib
import io
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest

from phonon_outbound import wiring
from phonon_outbound.observability import logger as service_logger
from phonon_outbound_dev.simulator import DEMO_FLOW_ID, DEMO_SECURITY_ID, PhononSimulator

from ..integration.conftest import Ctx, Harness

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")]

# Ten-digit Indian mobile numbers, each written differently in the file; and cell values that
# are not valid numbers (they must not be echoed either).
NUMBERS = {
    "P-01": ("+919812345670", "9812345670"),
    "P-02": ("919812345671", "9812345671"),
    "P-03": ("09812345672", "9812345672"),
    "P-04": ("98123 45673", "9812345673"),
    "P-05": ("+91 98123-45674", "9812345674"),
    "P-06": ("(0)98123 45675", "9812345675"),
}
INVALID = {"P-07": ("87654321", "87654321"), "P-08": ("8765432109876543", "8765432109876543"),
           "P-09": ("+91 87654 3210", "8765432")}


def contact_file() -> bytes:
    lines = ["client-identifier,Phone,CustomerName,email"]
    for cid, (written, _) in NUMBERS.items():
        lines.append(f'{cid},"{written}",Customer {cid},{cid.lower()}@example.com')
    for cid, (written, _) in INVALID.items():
        lines.append(f'{cid},"{written}",Customer {cid},{cid.lower()}@example.com')
    return ("\n".join(lines) + "\n").encode()


def headerless_file() -> bytes:
    """A file whose first line is a contact, not a header (issue 10 #6's example)."""
    return b"Aarav Sharma,9812345679,aarav@example.com\nDiya Patel,9812345678,diya@example.com\n"


def variants(nsn: str) -> set[str]:
    """Every usual writing of an Indian national significant number (10 digits)."""
    return {nsn, "0" + nsn, "91" + nsn, "+91" + nsn, f"+91 {nsn}", f"{nsn[:5]} {nsn[5:]}", f"{nsn[:5]}-{nsn[5:]}",
            f"+91 {nsn[:5]} {nsn[5:]}", f"{nsn[:3]}-{nsn[3:6]}-{nsn[6:]}"}


def leaks(text: str, secrets: dict[str, str], numbers: set[str]) -> list[str]:
    found = [f"{name}" for name, value in secrets.items() if value and value in text]
    for nsn in sorted(numbers):
        hit = next((v for v in sorted(variants(nsn)) if v in text), None)
        if hit is not None:
            found.append(f"number {nsn} as {hit!r}")
    return found


HANDLERS = ("ingest_handler", "dispatch_handler", "webhook_handler")


def reload_handlers() -> None:
    """powertools reads POWERTOOLS_LOGGER_LOG_EVENT when a handler is decorated (at import)."""
    for name in HANDLERS:
        importlib.reload(importlib.import_module(name))


class Pipeline:
    def __init__(self, stack, monkeypatch, log_event: bool = False):
        self.monkeypatch = monkeypatch
        self.log_event = log_event
        if log_event:  # what an operator turns on to debug: every incoming event logged whole
            monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")
            reload_handlers()
        self.lock = threading.RLock()  # in-process moto: one writer at a time
        self.pushes: list[int] = []
        self._serve_webhook()
        env = stack.function_environment()
        self.creds = json.loads(boto3.client("secretsmanager", region_name="us-east-1").get_secret_value(
            SecretId=env["WEBHOOK_SECRET_NAME"])["SecretString"])
        self.sim = PhononSimulator(shape="202", flows={DEMO_FLOW_ID: DEMO_SECURITY_ID}, seed=11,
                                   webhook_url=self.webhook_url,
                                   webhook_auth=(self.creds["username"], self.creds["password"]),
                                   webhook_delay_s=0.05).start()
        env.update({"API_URL": self.sim.url, "DEFAULT_FLOW_ID": DEMO_FLOW_ID, "RETRY_BASE_S": "0",
                    "RETRY_MAX_S": "0", "CHUNK_LEASE_S": "2", "INGEST_TIME_MARGIN_S": "0",
                    "DISPATCH_MAX_WAIT_S": "5", "API_READ_TIMEOUT_S": "5", "DISPATCH_PARALLELISM": "1",
                    "POWERTOOLS_LOG_LEVEL": "DEBUG", "BATCH_SIZE": "4",
                    "EXPRESS_MAX_ROWS": "0",  # one lane: the harness drains the chunk queue
                    "REPORT_QUEUE_URL": ""})  # reports in-line: the harness has no report worker
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        with contextlib.suppress(sm.exceptions.ResourceExistsException):
            sm.create_secret(Name=f"{env['FLOW_SECRET_PREFIX']}{DEMO_FLOW_ID}",
                             SecretString=json.dumps({"security-id": DEMO_SECURITY_ID}))
        wiring.reset()
        self.harness = Harness(stack, self.sim, boto3.client("s3", region_name="us-east-1"),
                               boto3.client("sqs", region_name="us-east-1"), env)
        self.events_queue = self._capture_events(env.get("EVENT_BUS_NAME", "default"))
        self.messages: list[str] = []

    def _serve_webhook(self) -> None:
        pipeline = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                import webhook_handler

                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                event = {"version": "2.0", "routeKey": "$default", "rawPath": self.path, "rawQueryString": "",
                         "headers": {k.lower(): v for k, v in self.headers.items()},
                         "requestContext": {"http": {"method": "POST", "path": self.path, "sourceIp": "127.0.0.1"},
                                            "requestId": "r", "accountId": "anonymous"},
                         "body": raw.decode(), "isBase64Encoded": False}  # as a Function URL passes JSON
                with pipeline.lock:
                    resp = webhook_handler.handler(event, Ctx("webhook", 15))
                pipeline.pushes.append(resp["statusCode"])
                payload = resp["body"].encode()
                self.send_response(resp["statusCode"])
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.webhook_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def _capture_events(bus: str) -> str:
        sqs = boto3.client("sqs", region_name="us-east-1")
        events = boto3.client("events", region_name="us-east-1")
        url = sqs.create_queue(QueueName="pii-captured-events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="pii-capture-all", EventBusName=bus, EventPattern=json.dumps({"account": ["123456789012"]}))
        events.put_targets(Rule="pii-capture-all", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
        return url

    def run(self, name: str, data: bytes) -> tuple[list[dict], dict]:
        h = self.harness
        obj = h.upload(name, data)
        with self.lock:
            h.ingest(obj)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self.lock:
                messages = h.receive()
                self.messages += [m["Body"] for m in messages]
                if messages:
                    h.dispatch(messages)
                    continue
                attrs = h.sqs.get_queue_attributes(QueueUrl=h.queue_url, AttributeNames=["All"])["Attributes"]
            if all(int(attrs.get(k, 0)) == 0 for k in ("ApproximateNumberOfMessages",
                                                         "ApproximateNumberOfMessagesNotVisible",
                                                         "ApproximateNumberOfMessagesDelayed")):
                break
            time.sleep(0.1)
        self.sim.wait_webhooks_idle(30)
        with self.lock:  # the report again, now with the uuids the flow-end pushes brought
            wiring.finisher().finalize(obj.job_id, force=True)
            return h.report(obj), h.summary(obj)

    def events(self) -> list[str]:
        sqs = boto3.client("sqs", region_name="us-east-1")
        out: list[str] = []
        while True:
            got = sqs.receive_message(QueueUrl=self.events_queue, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return out
            for m in got:
                out.append(m["Body"])
                sqs.delete_message(QueueUrl=self.events_queue, ReceiptHandle=m["ReceiptHandle"])

    def close(self) -> None:
        self.sim.stop()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.log_event:
            self.monkeypatch.delenv("POWERTOOLS_LOGGER_LOG_EVENT")
            reload_handlers()


@pytest.fixture
def debug_logs():
    """Everything the service logger (as formatted for CloudWatch) and the package's standard
    loggers (as written, unmasked) write at DEBUG."""
    stream = io.StringIO()
    formatted = logging.StreamHandler(stream)
    formatted.setFormatter(service_logger.registered_formatter)
    raw = logging.StreamHandler(stream)
    raw.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    service = logging.getLogger(service_logger.name)
    # the layer's package and the developer kit's (local runner, simulator)
    packages = [logging.getLogger("phonon_outbound"), logging.getLogger("phonon_outbound_dev")]
    levels = (service.level, *(p.level for p in packages))
    service.addHandler(formatted)
    service.setLevel(logging.DEBUG)
    for package in packages:
        package.addHandler(raw)
        package.setLevel(logging.DEBUG)
    yield stream
    service.removeHandler(formatted)
    service.setLevel(levels[0])
    for package, level in zip(packages, levels[1:], strict=True):
        package.removeHandler(raw)
        package.setLevel(level)


@pytest.fixture
def pipeline(stack, monkeypatch, request):
    p = Pipeline(stack, monkeypatch, log_event=getattr(request, "param", False))
    yield p
    p.close()
    wiring.reset()


ALL_NUMBERS = {nsn for _, nsn in NUMBERS.values()} | {digits for _, digits in INVALID.values()}
def secrets_of(p: Pipeline) -> dict[str, str]:
    return {"security-id": DEMO_SECURITY_ID, "webhook password": p.creds["password"],
            "webhook credential": base64.b64encode(f"{p.creds['username']}:{p.creds['password']}".encode()).decode()}


@pytest.mark.parametrize("pipeline", [False, True], ids=["events-not-logged", "events-logged"], indirect=True)
def test_no_number_secret_or_credential_in_logs_events_or_summary(pipeline, debug_logs, capfd):
    report, summary = pipeline.run("pii/contacts.csv", contact_file())

    # The run did what a run does: calls placed, flow-end pushes taken, rows rejected with reasons
    by_cid = {r["client-identifier"]: r for r in report}
    assert {by_cid[c]["status"] for c in NUMBERS} == {"ACCEPTED"}
    assert {by_cid[c]["status"] for c in INVALID} == {"REJECTED"} and all(by_cid[c]["reason"] for c in INVALID)
    assert pipeline.pushes and set(pipeline.pushes) == {200}
    assert all(by_cid[c]["phonon-uuid"] for c in NUMBERS)
    events = pipeline.events()
    kinds = [json.loads(e)["detail-type"] for e in events]
    assert kinds.count("Outbound Job Completed") == 1 and kinds.count("Outbound Call Completed") == len(NUMBERS)
    assert all(json.loads(e)["detail"]["source"]["key"] == "incoming/pii/contacts.csv" for e in events
               if json.loads(e)["detail-type"] == "Outbound Job Completed")
    logs = debug_logs.getvalue()
    printed = capfd.readouterr()
    assert "phonon_outbound.api.client DEBUG" in logs and '"message":"report written"' in logs
    if pipeline.log_event:  # the chunk messages and the pushes were logged (masked)
        assert '"Records"' in logs and '"authorization"' in logs and '"calleeNumber' in logs

    secrets = secrets_of(pipeline)
    found = {
        "logs and printed metrics": leaks(logs + printed.out + printed.err, secrets, ALL_NUMBERS),
        "events": leaks("\n".join(events), secrets, ALL_NUMBERS),
        "summary": leaks(json.dumps(summary, ensure_ascii=False), secrets, ALL_NUMBERS),
        "report reasons (secrets)": leaks("\n".join(r["reason"] for r in report), secrets, set()),
        "chunk messages (secrets)": leaks("\n".join(pipeline.messages), secrets, set()),
    }
    assert {where: what for where, what in found.items() if what} == {}


def test_no_number_in_a_report_reason(pipeline):
    report, _ = pipeline.run("pii/contacts.csv", contact_file())
    reasons = [r["reason"] for r in report if r["reason"]]
    print(reasons)
    assert len(reasons) == len(INVALID) and all("Phone" in r for r in reasons)  # each names the column
    assert leaks("\n".join(reasons), {}, ALL_NUMBERS) == []


def test_a_headerless_file_does_not_leak_its_first_line(pipeline, debug_logs, capfd):
    report, summary = pipeline.run("pii/headerless.csv", headerless_file())
    printed = capfd.readouterr()
    sources = {"logs": debug_logs.getvalue() + printed.out + printed.err, "events": "\n".join(pipeline.events()),
               "report reasons": "\n".join(r["reason"] for r in report),
               "summary": json.dumps(summary, ensure_ascii=False)}
    assert "error" in summary
    found = {where: leaks(text, {}, {"9812345679", "9812345678"})
             + [v for v in ("Aarav Sharma", "aarav@example.com") if v in text] for where, text in sources.items()}
    assert {where: what for where, what in found.items() if what} == {}


def test_the_search_finds_what_it_looks_for():
    """The leak finder itself: each writing of a number is found, a masked one is not."""
    for writing in ("+919812345670", "09812345670", "98123 45670", "+91 98123 45670", "98123-45670", "9812345670"):
        assert leaks(f"x {writing} y", {}, {"9812345670"}), writing
    assert leaks("x •••••670 y", {"s": "SECRET"}, {"9812345670"}) == []
    assert leaks("a SECRET b", {"s": "SECRET"}, set()) == ["s"]


def test_the_run_command_at_debug_with_events_logged_prints_no_number_or_secret(tmp_path):
    """`phonon-outbound run` as a user runs it (a separate process), everything at DEBUG and
    every incoming event logged: its stdout, stderr and reports carry no number or secret."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "contacts.csv").write_bytes(contact_file())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "layers" / "outbound"), str(root / "devkit")]), "PHONON_OUTBOUND_LOG_LEVEL": "DEBUG",
           "POWERTOOLS_LOG_LEVEL": "DEBUG", "POWERTOOLS_LOGGER_LOG_EVENT": "true"}
    env.pop("AWS_ENDPOINT_URL", None)
    log_file = tmp_path / "run.log"
    done = subprocess.run([sys.executable, "-m", "phonon_outbound_dev.cli", "run", "--flow-id", DEMO_FLOW_ID, "--json",
                           "--verbose", "--log-file", str(log_file),
                           "--out", str(tmp_path / "out"), str(tmp_path / "contacts.csv")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    result = json.loads(done.stdout[done.stdout.index("{"):])
    assert result["totals"]["accepted"] == len(NUMBERS) and result["totals"]["rejected"] == len(INVALID)
    logs = log_file.read_text()
    for text in (done.stderr, logs):  # --verbose: the machine logs on stderr as well as in the log file
        assert '"authorization"' in text and '"Records"' in text  # the events were logged
    reports = "\n".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    found = {where: leaks(text, {"security-id": DEMO_SECURITY_ID}, ALL_NUMBERS)
             for where, text in (("stdout", done.stdout), ("stderr", done.stderr), ("log file", logs),
                                 ("reports", reports))}
    assert {where: what for where, what in found.items() if what} == {}
