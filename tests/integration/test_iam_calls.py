"""Every AWS call each Lambda handler makes, checked against its role in the SAM-translated
template, on the resource it touches (moto does not enforce IAM: without this a new boto3 call
passes every test and fails on AWS with AccessDenied).

Given the stack built on moto from template.yaml with the functions' AWS settings (REPORT_QUEUE_URL
set, as Globals sets it on AWS: ingest, dispatch, the webhook, the watchdog and the reconciler ask
the report function for reports on ReportQueue, and the report function writes them),
When each handler runs through its paths (ingest: a contact file, a file rejected whole, a file
deleted before it was read (404), a file paused for time and continued by invoking itself, a file
from the failure queue, a `cancel/` file, a `suppress/` file, a suppression event, control events;
dispatch: chunks accepted, backed off after HTTP 500s, handed back while paused, cancelled; the
webhook: flow-end pushes with call events on, an opt-out; the report function: settled jobs'
reports, rewrites for outcomes, the schedule's final writes, a task-token answer; the watchdog: an
orphaned job's report; the reconciler: outcomes from the pull API; intake: an EventBridge request,
an SQS request with a task token, rejected ones),
Then every call recorded while a handler ran needs IAM actions (the explicit map `ACTIONS`; an
operation not on it fails the test, so a new call forces a decision) which that function's role
grants on the ARN of the bucket key / queue / table or index / secret / event bus / function the
call named. And ingest and dispatch never write a results report (only a suppress/ file's, under
reports/suppress/), publish an event or answer a task token (the grants they just lost).

How: a botocore `before-parameter-build` hook (and an `after-call` one, for S3 reads answered 404,
which need s3:ListBucket or AWS answers 403) on the default boto3 session's botocore session,
registered before `wiring.reset()` so every client and resource the code builds has it; a count of
`BaseClient._make_api_call` while a handler runs proves no client missed it. Each handler module's
`handler` is wrapped so only its own invocation is recorded, and runs with its own `wiring` cache
(each function is its own process on AWS: one function's cached secret or salt must not spare
another the call). A `before-call.lambda.Invoke` stub answers ingest's self-invocation (moto has no
function to run). Grants are the role's statements in `tools.sam_translate.translate(template.yaml)`,
their Ref / Fn::GetAtt / Fn::Sub resolved by the stack's own resolver (devkit's LocalStack, which
built the moto resources and holds their physical names), matched as IAM does (`*` and `?`).
Statements with a Condition (the kms:ViaService ones) never count for a direct call. Not covered:
IAM conditions, the KMS calls AWS makes on a function's behalf, logs/X-Ray (not boto3 calls of
ours), the report's multipart upload (reports here are small: one PutObject) and the paths not
driven here (e.g. a busy report writer asking again).

The conftest's DynamoDB item-size check is turned off here: its read-back GetItem would be taken
for the handler's own call.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import boto3
import botocore.client
import pytest

from phonon_outbound import wiring
from phonon_outbound.ingest import ObjectRef
from phonon_outbound_dev.local.runner import FakeContext, sqs_event
from tests.unit.test_iam import _actions, _role_of, _statements
from tools.sam_translate import translate

from .conftest import Ctx, Harness, csv_rows
from .test_ingest_events import destination_record

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REGION, ACCOUNT = "us-east-1", "123456789012"

# ------------------------------------------------------------------ operation -> IAM action
# (service, operation) -> the IAM action(s) it needs. Resource-level specifics (a version, an
# index, a transaction's items, a 404 without ListBucket) are in `_needs`. Keep it small: an
# operation missing here fails the test until someone decides what it needs.
ACTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("s3", "GetObject"): ("s3:GetObject",),  # with VersionId: s3:GetObjectVersion
    ("s3", "HeadObject"): ("s3:GetObject",),  # with VersionId: s3:GetObjectVersion
    ("s3", "PutObject"): ("s3:PutObject",),
    ("s3", "CreateMultipartUpload"): ("s3:PutObject",),
    ("s3", "UploadPart"): ("s3:PutObject",),
    ("s3", "CompleteMultipartUpload"): ("s3:PutObject",),
    ("s3", "AbortMultipartUpload"): ("s3:AbortMultipartUpload",),
    ("s3", "ListObjectsV2"): ("s3:ListBucket",),
    ("sqs", "SendMessage"): ("sqs:SendMessage",),
    ("sqs", "SendMessageBatch"): ("sqs:SendMessage",),
    ("sqs", "ReceiveMessage"): ("sqs:ReceiveMessage",),
    ("sqs", "DeleteMessage"): ("sqs:DeleteMessage",),
    ("sqs", "DeleteMessageBatch"): ("sqs:DeleteMessage",),
    ("sqs", "ChangeMessageVisibility"): ("sqs:ChangeMessageVisibility",),
    ("sqs", "ChangeMessageVisibilityBatch"): ("sqs:ChangeMessageVisibility",),
    ("sqs", "GetQueueAttributes"): ("sqs:GetQueueAttributes",),
    ("dynamodb", "GetItem"): ("dynamodb:GetItem",),
    ("dynamodb", "PutItem"): ("dynamodb:PutItem",),
    ("dynamodb", "UpdateItem"): ("dynamodb:UpdateItem",),
    ("dynamodb", "DeleteItem"): ("dynamodb:DeleteItem",),
    ("dynamodb", "Query"): ("dynamodb:Query",),  # with IndexName: on the index's ARN
    ("dynamodb", "Scan"): ("dynamodb:Scan",),  # with IndexName: on the index's ARN
    ("dynamodb", "BatchGetItem"): ("dynamodb:BatchGetItem",),  # on each table named
    ("dynamodb", "BatchWriteItem"): ("dynamodb:BatchWriteItem",),  # on each table named
    ("dynamodb", "TransactWriteItems"): (),  # per item: Put/Update/Delete/ConditionCheck (`TRANSACT`)
    ("dynamodb", "TransactGetItems"): (),  # per item: dynamodb:GetItem
    ("secretsmanager", "GetSecretValue"): ("secretsmanager:GetSecretValue",),
    ("secretsmanager", "DescribeSecret"): ("secretsmanager:DescribeSecret",),
    ("events", "PutEvents"): ("events:PutEvents",),  # on each entry's bus
    ("stepfunctions", "SendTaskSuccess"): ("states:SendTaskSuccess",),  # a token: no resource level ("*")
    ("stepfunctions", "SendTaskFailure"): ("states:SendTaskFailure",),
    ("stepfunctions", "SendTaskHeartbeat"): ("states:SendTaskHeartbeat",),
    ("lambda", "Invoke"): ("lambda:InvokeFunction",),
}
TRANSACT = {"Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem", "Delete": "dynamodb:DeleteItem",
            "ConditionCheck": "dynamodb:ConditionCheckItem", "Get": "dynamodb:GetItem"}
S3_READS = {"GetObject", "HeadObject"}
S3_WRITES = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}


@dataclass
class Call:
    function: str
    service: str
    operation: str
    params: dict
    status: int = 0  # the HTTP status (after-call), 0 if none came back

    @property
    def what(self) -> str:
        p = self.params
        if self.service == "s3":
            return f"s3://{p.get('Bucket')}/{p.get('Key', p.get('Prefix', ''))}" + (
                f" (version {p['VersionId']})" if p.get("VersionId") else "")
        if self.service == "sqs":
            return str(p.get("QueueUrl", ""))
        if self.service == "dynamodb":
            tables = p.get("TableName") or ",".join(p.get("RequestItems", {})) or "transaction"
            return f"{tables}" + (f" index {p['IndexName']}" if p.get("IndexName") else "")
        if self.service == "secretsmanager":
            return str(p.get("SecretId", ""))
        if self.service == "events":
            return ",".join(sorted({e.get("EventBusName", "default") for e in p.get("Entries", [])}))
        if self.service == "lambda":
            return str(p.get("FunctionName", ""))
        return ""


@dataclass
class Recorder:
    """The AWS calls made while a handler runs, by function."""

    calls: list[Call] = field(default_factory=list)
    made: dict[str, int] = field(default_factory=dict)  # _make_api_call count while a handler ran
    current: str | None = None
    handlers: Any = None  # the wrapped handlers (`Handlers`)
    caches: dict[str, dict] = field(default_factory=dict)  # each function's own `wiring._cache`
    invoked: list[dict] = field(default_factory=list)  # payloads of lambda Invoke (a continuation)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def before(self, params: dict, model: Any, context: dict, **_: Any) -> None:
        function = self.current  # s3transfer's threads run inside the handler's window too
        if function is None:
            return
        call = Call(function, model.service_model.service_name, model.name, json.loads(json.dumps(
            params, default=str)))
        context["iam_trace_call"] = call
        with self.lock:
            self.calls.append(call)

    def after(self, http_response: Any, context: dict, **_: Any) -> None:
        call = context.get("iam_trace_call")
        if call is not None and http_response is not None:
            call.status = int(getattr(http_response, "status_code", 0) or 0)

    def invoke(self, params: dict, **_: Any) -> tuple[Any, dict]:
        """Lambda's answer to an asynchronous self-invocation (moto has no function to run): the
        payload is kept for the test to run as the fresh invocation."""
        body = params.get("body", b"")
        self.invoked.append(json.loads(body.decode() if isinstance(body, bytes) else body))
        return SimpleNamespace(status_code=202, headers={}), {"StatusCode": 202, "ResponseMetadata": {}}

    @contextmanager
    def running(self, function: str) -> Iterator[None]:
        assert self.current is None, f"{function} ran inside {self.current}'s invocation"
        self.current = function
        try:
            yield
        finally:
            self.current = None

    def wrap(self, module: Any, function: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """The handler, recorded as `function`, with its own `wiring` cache: on AWS each function
        is its own process, so one function's cached clients, secrets and salt must not spare
        another its calls (the harness's continuation and throttle hooks are carried in)."""
        real = module.handler

        def handler(event: Any, context: Any) -> Any:
            outer = wiring._cache
            own = self.caches.setdefault(function, {})
            for hook in ("continuation", "throttle"):
                if hook in outer:
                    own[hook] = outer[hook]
                else:
                    own.pop(hook, None)
            monkeypatch.setattr(wiring, "_cache", own)
            try:
                with self.running(function):
                    return real(event, context)
            finally:
                monkeypatch.setattr(wiring, "_cache", outer)

        monkeypatch.setattr(module, "handler", handler)

    def of(self, function: str) -> list[Call]:
        return [c for c in self.calls if c.function == function]


def _load(function_dir: str, module: str) -> Any:
    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location(f"{module}_iam_trace", ROOT / "functions" / function_dir / f"{module}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def dynamodb_item_sizes():
    """Off here (tests/integration/conftest.py): its read-back GetItem is not the handler's call."""
    yield []


@pytest.fixture(scope="module")
def cfn() -> dict:
    from tests.conftest import ROOT

    return translate(ROOT / "template.yaml")


@dataclass
class Handlers:
    ingest: Callable
    dispatch: Callable
    webhook: Callable
    intake: Callable
    report: Callable
    watchdog: Callable
    reconcile: Callable


@pytest.fixture
def traced(stack, monkeypatch):
    """The recorder, hooked into every client made from now on, and every handler wrapped."""
    rec = Recorder()
    session = boto3._get_default_session()._session  # moto's own default session (mock_aws)
    session.register("before-parameter-build", rec.before, unique_id="iam-trace-before")
    session.register("after-call", rec.after, unique_id="iam-trace-after")
    session.register("before-call.lambda.Invoke", rec.invoke, unique_id="iam-trace-invoke")
    real_reset = wiring.reset

    def reset() -> None:  # a reset forgets every function's cache too
        real_reset()
        rec.caches.clear()

    monkeypatch.setattr(wiring, "reset", reset)
    wiring.reset()  # clients cached before the hook are made again, with it

    real = botocore.client.BaseClient._make_api_call

    def counted(client: Any, operation_name: str, api_params: dict) -> Any:
        if rec.current is not None:
            with rec.lock:
                rec.made[rec.current] = rec.made.get(rec.current, 0) + 1
        return real(client, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counted)

    import intake_handler

    import dispatch_handler
    import ingest_handler
    import webhook_handler

    report, watchdog, reconcile = (_load("report", "report_handler"), _load("watchdog", "watchdog_handler"),
                                   _load("reconcile", "reconcile_handler"))
    for module, function in ((ingest_handler, "IngestFunction"), (dispatch_handler, "DispatchFunction"),
                             (webhook_handler, "WebhookFunction"), (intake_handler, "IntakeFunction"),
                             (report, "ReportFunction"), (watchdog, "WatchdogFunction"),
                             (reconcile, "ReconcileFunction")):
        rec.wrap(module, function, monkeypatch)
    rec.handlers = Handlers(ingest_handler.handler, dispatch_handler.handler, webhook_handler.handler,
                            intake_handler.handler, report.handler, watchdog.handler, reconcile.handler)
    yield rec
    session.unregister("before-parameter-build", unique_id="iam-trace-before")
    session.unregister("after-call", unique_id="iam-trace-after")
    session.unregister("before-call.lambda.Invoke", unique_id="iam-trace-invoke")


# ------------------------------------------------------------------ what a call needs, what a role grants
def _secret_arn(secret_id: str) -> str:
    if secret_id.startswith("arn:"):
        return secret_id
    sm = boto3.client("secretsmanager", region_name=REGION)  # read outside any handler's window
    try:
        return sm.describe_secret(SecretId=secret_id)["ARN"]
    except sm.exceptions.ResourceNotFoundException:
        return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret_id}-AbCdEf"  # as AWS would name it


def _table_arn(table: str, index: str | None = None) -> str:
    arn = table if table.startswith("arn:") else f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}"
    return f"{arn}/index/{index}" if index else arn


def _needs(call: Call) -> list[tuple[str, str]]:
    """(IAM action, resource ARN) pairs the call needs."""
    key = (call.service, call.operation)
    if key not in ACTIONS:
        raise AssertionError(
            f"{call.function} calls {call.service}.{call.operation} on {call.what!r}, which is not in "
            f"tests/integration/test_iam_calls.py ACTIONS: add the IAM action(s) it needs there, and grant "
            f"them in template.yaml (and tests/unit/test_iam.py ALLOWED)")
    actions, p = ACTIONS[key], call.params
    if call.service == "s3":
        bucket = f"arn:aws:s3:::{p['Bucket']}"
        if call.operation == "ListObjectsV2":
            return [(a, bucket) for a in actions]
        obj = f"{bucket}/{p['Key']}"
        if call.operation in S3_READS:
            needs = [("s3:GetObjectVersion" if p.get("VersionId") else "s3:GetObject", obj)]
            if call.status == 404:  # without s3:ListBucket AWS answers a missing key 403, not 404
                needs.append(("s3:ListBucket", bucket))
            return needs
        return [(a, obj) for a in actions]
    if call.service == "sqs":
        url = p["QueueUrl"]
        arn = f"arn:aws:sqs:{REGION}:{url.rstrip('/').split('/')[-2]}:{url.rstrip('/').split('/')[-1]}"
        return [(a, arn) for a in actions]
    if call.service == "dynamodb":
        if call.operation in ("BatchGetItem", "BatchWriteItem"):
            return [(a, _table_arn(t)) for t in p["RequestItems"] for a in actions]
        if call.operation.startswith("Transact"):
            return [(TRANSACT[kind], _table_arn(item[kind]["TableName"]))
                    for item in p["TransactItems"] for kind in item]
        return [(a, _table_arn(p["TableName"], p.get("IndexName"))) for a in actions]
    if call.service == "secretsmanager":
        return [(a, _secret_arn(p["SecretId"])) for a in actions]
    if call.service == "events":
        buses = {e.get("EventBusName") or "default" for e in p["Entries"]}
        return [(a, b if b.startswith("arn:") else f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{b}")
                for b in sorted(buses) for a in actions]
    if call.service == "stepfunctions":
        return [(a, "*") for a in actions]  # a task token names no resource IAM can scope
    if call.service == "lambda":
        name = p["FunctionName"]
        arn = name if name.startswith("arn:") else f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
        return [(a, arn) for a in actions]
    raise AssertionError(f"no resource rule for {call.service}")


def _iam_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    rx = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(rx, value, re.IGNORECASE if ignore_case else 0) is not None


def grants(cfn: dict, stack: Any, function: str) -> list[tuple[str, str, str]]:
    """(action pattern, resolved resource pattern, Sid) of every unconditional Allow of the role."""
    name, role = _role_of(cfn, function)
    out = []
    for st in _statements(cfn, name, role):
        if st.get("Effect") != "Allow" or "Condition" in st:
            continue
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for action in _actions(st):
            for r in resources:
                out.append((action, str(stack.resolve(r)), st.get("Sid", "")))
    return out


def ungranted(cfn: dict, stack: Any, rec: Recorder, function: str) -> list[str]:
    """One line per call of the function that its role does not allow."""
    allowed = grants(cfn, stack, function)
    role = _role_of(cfn, function)[0]
    problems = []
    for call in rec.of(function):
        for action, arn in _needs(call):
            if any(_iam_match(a, action, ignore_case=True) and _iam_match(r, arn) for a, r, _ in allowed):
                continue
            on = sorted({r for a, r, _ in allowed if _iam_match(a, action, ignore_case=True)})
            problems.append(f"{function} ({role}): {call.service}.{call.operation} on {call.what} needs {action} on "
                            f"{arn}; template.yaml grants {action} " + (f"only on {on}" if on else "on nothing"))
    return sorted(set(problems))


def assert_granted(cfn: dict, stack: Any, rec: Recorder, functions: list[str]) -> None:
    for function in functions:
        assert rec.of(function), f"{function}: no AWS call was recorded: the hook or the scenario is broken"
        assert rec.made.get(function, 0) == len(rec.of(function)), (
            f"{function}: {rec.made.get(function)} API calls made but {len(rec.of(function))} recorded: a client "
            f"was built without the hook")
    problems = [p for f in functions for p in ungranted(cfn, stack, rec, f)]
    if problems:
        pytest.fail("AWS calls the template does not allow (AccessDenied on AWS):\n" + "\n".join(problems),
                    pytrace=False)


def actions_of(rec: Recorder, function: str) -> set[tuple[str, str]]:
    return {(a, r) for c in rec.of(function) for a, r in _needs(c)}


# ------------------------------------------------------------------ drivers
class OutOfTime(Ctx):
    """An invocation already below its time margin: ingest pauses and continues itself."""

    def get_remaining_time_in_millis(self) -> int:
        return -1


def report_queue(h: Harness) -> tuple[str, str]:
    return h.stack.physical["ReportQueue"]["Ref"], h.stack.physical["ReportQueue"]["Arn"]


def drain_reports(h: Harness, rec: Recorder, timeout: float = 20.0) -> int:
    """The report function's event source: every visible request on ReportQueue → its handler."""
    url, arn = report_queue(h)
    handled = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = h.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
            "Messages", [])
        if not messages:
            return handled
        out = rec.handlers.report(sqs_event(messages, arn), FakeContext("report", 900))
        failed = {f["itemIdentifier"] for f in out.get("batchItemFailures", [])}
        assert not failed, out
        for m in messages:
            h.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        handled += len(messages)
    raise AssertionError("the report queue did not drain")


def push(h: Harness, rec: Recorder, call: dict, **details: Any) -> dict:
    """Phonon's flow-end push for an accepted call, through the webhook handler with the stack's
    own credentials (as tests/integration/test_outcomes.py `push`)."""
    creds = json.loads(boto3.client("secretsmanager", region_name=REGION).get_secret_value(
        SecretId=h.env["WEBHOOK_SECRET_NAME"])["SecretString"])
    event = json.loads((h.stack.root / "events" / "webhook-flow-end.json").read_text())
    event["body"] = json.dumps({"phonon-uuid": call["phonon-uuid"], "keys": call["keys"], "callDetails": [{
        "startTime": "2026-11-30T10:00:00+05:30", "duration": "12000", "hangupCause": "NORMAL_CLEARING",
        "calleeNumber": call["contact-numbers"][0], **details}]})
    event["headers"]["authorization"] = "Basic " + base64.b64encode(
        f"{creds['username']}:{creds['password']}".encode()).decode()
    resp = rec.handlers.webhook(event, Ctx("webhook"))
    assert resp["statusCode"] == 200, resp
    return json.loads(resp["body"]) if resp.get("body") else {}


def s3_put_event(h: Harness, key: str, body: bytes) -> tuple[ObjectRef, dict]:
    put = h.s3.put_object(Bucket=h.bucket, Key=key, Body=body)
    obj = ObjectRef(h.bucket, key, put.get("VersionId"), put.get("ETag"), len(body))
    return obj, h.s3_event(obj)


def eventbridge(detail_type: str, detail: Any, event_id: str = "e-1", source: str = "com.example.ops") -> dict:
    return {"version": "0", "id": event_id, "detail-type": detail_type, "source": source, "account": ACCOUNT,
            "time": "2026-11-30T10:00:00Z", "region": REGION, "resources": [], "detail": detail}


def aws_settings(h_stack: Any, **more: Any) -> dict:
    """The functions' settings as on AWS: reports asked of the report function on ReportQueue."""
    return {"report_queue_url": h_stack.physical["ReportQueue"]["Ref"], "report_debounce_s": 0,
            "publish_call_events": "true", **more}


# ------------------------------------------------------------------ the tests
def test_every_call_of_ingest_dispatch_webhook_report_watchdog_and_intake_is_granted_on_what_it_touches(
        make_harness, stack, cfn, traced):
    """Given the stack on moto with the AWS settings, when every handler but the reconciler runs
    its paths, then each call it made is allowed to its role on the resource it named; and ingest
    and dispatch wrote no results report, published no event, answered no task token."""
    from phonon_outbound_dev.simulator import DEMO_FLOW_ID, FaultPlan

    rec = traced
    h = make_harness(batch_size=5, opt_out_dtmf="9", report_final_wait_s=0, pause_poll_s=1, **aws_settings(stack))
    assert h.env["REPORT_QUEUE_URL"] == stack.physical["ReportQueue"]["Ref"]  # the premise: as on AWS
    run = rec.handlers

    # ingest: a suppress/ file (its small report under reports/suppress/) and a suppression event
    _, event = s3_put_event(h, "suppress/dnc.csv", b"phone\n9899999999\n")
    assert run.ingest(event, Ctx("ingest"))["files"][0]["entries"] == 1
    run.ingest(eventbridge("Suppression Requested", {"action": "add", "numbers": ["+919899999998"]}), Ctx("ingest"))
    # ingest → dispatch → report: a contact file, its chunks accepted, its settled report
    a = h.upload("a.csv", csv_rows(12))
    h.ingest(a)
    h.sim.set_faults(FaultPlan(sequence=["http500"] * 3))  # dispatch: a chunk backed off (visibility)
    h.drain()
    assert drain_reports(h, rec) >= 1
    assert h.job(a).get("completed")
    # webhook: a flow-end push per call (call events on), one an opt-out; the report rewritten
    calls = [c for c in h.sim.accepted_calls() if any(
        k["name"] == "$flow.key.OutboundRef" and k["value"].startswith(f"{a.job_id}.") for k in c["keys"])]
    assert len(calls) == 12
    for i, call in enumerate(calls):
        assert push(h, rec, call, **({"dtmfPressesd": ["9"]} if i == 0 else {}))["matched"] is True
    drain_reports(h, rec)
    # report: the schedule asks for the final write, which the report function makes
    run.report(json.loads((h.stack.root / "events" / "schedule-event.json").read_text()), FakeContext("report", 60))
    drain_reports(h, rec)
    # ingest: a file rejected whole, and a file deleted before ingest read it
    bad = h.upload("bad.csv", b"no,column,of,phones\n1,2,3,4\n")
    h.ingest(bad)
    gone = h.upload("gone.csv", csv_rows(2))
    h.s3.delete_object(Bucket=h.bucket, Key=gone.key)
    h.ingest(gone)
    # ingest: a file paused for lack of time, continued in a fresh invocation of itself (lambda
    # Invoke of its own ARN, as deployed: FunctionName ${AWS::StackName}-ingest)
    late = h.upload("late.csv", csv_rows(4, prefix="L"))
    wiring._cache.pop("continuation", None)  # the harness's stand-in for the self-invocation
    me = f"{stack.stack}-ingest"
    assert run.ingest(h.s3_event(late), OutOfTime(me))["files"][0]["status"] == "paused"
    [continuation] = rec.invoked
    assert run.ingest(continuation, Ctx(me))["files"][0]["status"] != "paused"
    # ingest: a file whose invocations all failed, from the failure queue (its on-failure destination)
    failed = h.upload("failed.csv", csv_rows(2, prefix="F"))
    run.ingest(destination_record(h, h.s3_event(failed)), Ctx(me))
    assert h.job(failed).get("status") == "REJECTED", h.job(failed)  # its report says why
    # ingest: control events (pause, resume) and a cancel/ file, then dispatch of cancelled chunks
    b = h.upload("b.csv", csv_rows(10, prefix="B"))
    h.ingest(b)
    control = eventbridge("Outbound Control", {"action": "pause", "job": b.job_id})
    assert run.ingest(control, Ctx("ingest"))["files"][0]["status"] == "controlled"
    h.dispatch(h.receive())  # dispatch: a paused job's chunks handed back with a delay
    control["detail"]["action"] = "resume"
    run.ingest(control, Ctx("ingest"))
    _, cancel = s3_put_event(h, "cancel/incoming/b.csv", b"")
    assert run.ingest(cancel, Ctx("ingest"))["files"][0]["status"] == "controlled"
    h.drain()
    drain_reports(h, rec)
    # intake: an EventBridge request (then ingested, dispatched, reported), an SQS request with a
    # task token (answered by the report function), a request rejected whole (its event)
    req = [{"client-identifier": f"R-{i}", "contact-numbers": [f"97{i:08d}"]} for i in range(3)]
    assert run.intake(eventbridge("Outbound Calls Requested", {"flow-id": DEMO_FLOW_ID, "calls": req},
                                  "ev-1", "com.example.crm"), Ctx("intake"))["status"] == "written"
    assert run.intake(eventbridge("Outbound Calls Requested", {"calls": []}, "ev-2", "com.example.crm"),
                      Ctx("intake"))["status"] == "rejected"
    intake_arn = h.stack.physical["IntakeQueue"]["Arn"]
    messages = [{"MessageId": f"m-{i}", "ReceiptHandle": f"r-{i}", "Body": json.dumps(body),
                 "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"}}
                for i, body in enumerate(({"task-token": "TOKEN-ok", "calls": req},
                                          {"task-token": "TOKEN-bad", "calls": [{}] * 10_001}))]
    out = run.intake(sqs_event(messages, intake_arn), Ctx("intake"))
    assert [f["itemIdentifier"] for f in out["batchItemFailures"]] == ["m-1"]
    for o in h.s3.list_objects_v2(Bucket=h.bucket, Prefix="incoming/requests/")["Contents"]:
        head = h.s3.head_object(Bucket=h.bucket, Key=o["Key"])
        h.ingest(ObjectRef(h.bucket, o["Key"], head.get("VersionId"), head.get("ETag"), head["ContentLength"]))
    h.drain()
    drain_reports(h, rec)
    # watchdog: a job whose report writer died long ago gets its report asked for
    store = wiring.store()
    store.jobs.put_job("orphan", {
        "key": "incoming/orphan.csv", "flow": DEMO_FLOW_ID, "active_shard": "A", "ingest_done": True,
        "total_rows": 1, "chunks_total": 1, "chunks_settled": 1, "status": "DISPATCHING",
        "report_csv_key": "reports/incoming/orphan.csv.20261130T000000.000Z.results.csv",
        "report_summary_key": "reports/incoming/orphan.csv.20261130T000000.000Z.summary.json",
        "updated_at": int(time.time()) - 3 * 3600, "finalizing": int(time.time()) - 3600})
    store.rows.put_rows("orphan", [{"row": 1, "status": "ACCEPTED", "cid": "C-1", "request_id": "r-1"}])
    assert run.watchdog({}, FakeContext("watchdog", 60))["reports_requested"] == ["orphan"]
    drain_reports(h, rec)

    # the paths ran: what each function is there for was called
    bucket = f"arn:aws:s3:::{h.bucket}"
    assert any(a == "s3:PutObject" and r.startswith(f"{bucket}/reports/suppress/dnc.csv.")
               for a, r in actions_of(rec, "IngestFunction"))
    assert ("s3:ListBucket", bucket) in actions_of(rec, "IngestFunction")  # the deleted file's 404
    assert ("lambda:InvokeFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{me}") in actions_of(
        rec, "IngestFunction")
    report_actions = {a for a, _ in actions_of(rec, "ReportFunction")}
    assert {"s3:PutObject", "events:PutEvents", "states:SendTaskSuccess"} <= report_actions
    assert {"events:PutEvents", "sqs:SendMessage", "dynamodb:BatchGetItem"} <= {
        a for a, _ in actions_of(rec, "WebhookFunction")}
    assert {"s3:PutObject", "events:PutEvents", "states:SendTaskFailure"} <= {
        a for a, _ in actions_of(rec, "IntakeFunction")}

    assert_granted(cfn, stack, rec, ["IngestFunction", "DispatchFunction", "WebhookFunction", "ReportFunction",
                                     "WatchdogFunction", "IntakeFunction"])

    # the reverse, for the grants ingest and dispatch just lost: with REPORT_QUEUE_URL set they
    # write no results report (only a suppress/ file's, under reports/suppress/), publish nothing,
    # answer no task token
    for function in ("IngestFunction", "DispatchFunction"):
        wrong = [f"{c.service}.{c.operation} {c.what}" for c in rec.of(function)
                 if (c.service == "s3" and c.operation in S3_WRITES | {"AbortMultipartUpload"}
                     and c.params.get("Key", "").startswith("reports/")
                     and not c.params["Key"].startswith("reports/suppress/"))
                 or c.service in ("events", "stepfunctions")]
        assert not wrong, f"{function} does the report function's work itself: {wrong}"
    assert not [c for c in rec.of("DispatchFunction") if c.service == "s3"]
    assert {"sqs:ChangeMessageVisibility", "sqs:SendMessage", "secretsmanager:GetSecretValue"} <= {
        a for a, _ in actions_of(rec, "DispatchFunction")}


def test_every_call_of_the_reconciler_is_granted_on_what_it_touches(make_harness, stack, cfn, traced, monkeypatch):
    """Given accepted calls whose flow-end pushes never came and the simulator's pull API, when
    the reconciler runs (the schedule, then named jobs), then each call it made, and the report
    function's for the requests it sent, is allowed to its role on the resource it named."""
    rec = traced
    h = make_harness(batch_size=5, reconcile_after_s=0, **aws_settings(stack))
    monkeypatch.setenv("PULL_API_URL", h.sim.pull_url)
    wiring.reset()
    run = rec.handlers
    a = h.upload("a.csv", csv_rows(6))
    h.ingest(a)
    h.drain()
    drain_reports(h, rec)
    summary = run.reconcile({}, FakeContext("reconcile", 60))
    assert summary["pulled"] > 0 and summary["errors"] == 0, summary
    b = h.upload("b.csv", csv_rows(3, prefix="B"))
    h.ingest(b)
    h.drain()
    drain_reports(h, rec)
    assert run.reconcile({"jobs": [b.job_id]}, FakeContext("reconcile", 60))["pulled"] > 0
    drain_reports(h, rec)
    assert {"events:PutEvents", "sqs:SendMessage", "dynamodb:UpdateItem"} <= {
        a for a, _ in actions_of(rec, "ReconcileFunction")}
    assert_granted(cfn, stack, rec, ["ReconcileFunction", "ReportFunction", "IngestFunction", "DispatchFunction"])
