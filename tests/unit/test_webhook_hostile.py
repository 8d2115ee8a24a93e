"""The webhook under hostile pushes (issue 10 #5), through the real handler against moto.

Every case is a Function URL event an outside caller could send. Each must get its 4xx answer
(never a 5xx, never an exception) and leave nothing behind: no results item, no row uuid.
Replays and contradicting pushes are checked for what they keep."""

from __future__ import annotations

import base64
import copy
import json
import uuid as uuidlib
from collections.abc import Callable

import boto3
import pytest
from boto3.dynamodb.conditions import Key

from phonon_outbound import wiring
from phonon_outbound.store import job_pk
from phonon_outbound.webhook import MAX_BODY_BYTES

from ..conftest import ROOT

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")]

JOB = "0123456789abcdef0123"
GOOD_UUID = "501c78ee-8d06-498e-8952-fce3495f326b"


class Ctx:
    function_name = "webhook"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:webhook"
    memory_limit_in_mb = 256
    log_group_name = "/aws/lambda/webhook"
    log_stream_name = "test"

    def __init__(self) -> None:
        self.aws_request_id = str(uuidlib.uuid4())

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 10_000


def push_doc(uuid: str = GOOD_UUID, row: int = 1, **extra) -> dict:
    return {"phonon-uuid": uuid,
            "callDetails": [{"calleeNumber": "919812345670", "didNumber": "918069000000",
                             "startTime": "2026-11-26 15:30:01", "connectTime": "2026-11-26 15:30:09",
                             "endTime": "2026-11-26 15:31:02", "duration": "53000", "hangupCause": "NORMAL_CLEARING",
                             "incoming": False, "dtmfPressesd": ["1"]}],
            "keys": [{"name": "$flow.key.CustomerName", "value": "Aarav Sharma"},
                     {"name": "$flow.key.OutboundRef", "value": f"{JOB}.{row}"}],
            "recordingUrls": ["https://example.invalid/recording.mp3"], **extra}


class Hook:
    def __init__(self, creds: dict):
        self.creds = creds
        self.store = wiring.store()

    @property
    def auth(self) -> str:
        return "Basic " + base64.b64encode(f"{self.creds['username']}:{self.creds['password']}".encode()).decode()

    def event(self, body: object = None, *, raw: str | None = None, b64: bool = False, method: str = "POST",
              auth: object = "ok") -> dict:
        text = raw if raw is not None else (json.dumps(body) if body is not None else None)
        event = {
            "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
            "headers": {"content-type": "application/json", "host": "x.lambda-url.us-east-1.on.aws",
                        "user-agent": "Phonon-Webhook"},
            "requestContext": {"accountId": "anonymous", "apiId": "x", "domainName": "x.lambda-url.us-east-1.on.aws",
                               "http": {"method": method, "path": "/", "protocol": "HTTP/1.1",
                                        "sourceIp": "203.0.113.20", "userAgent": "Phonon-Webhook"},
                               "requestId": str(uuidlib.uuid4()), "routeKey": "$default", "stage": "$default"},
            "isBase64Encoded": b64,
        }
        if text is not None:
            event["body"] = base64.b64encode(text.encode("utf-8", "surrogatepass")).decode() if b64 else text
        if auth == "ok":
            event["headers"]["authorization"] = self.auth
        elif auth is not None:
            event["headers"]["authorization"] = auth
        return event

    def call(self, event: dict) -> tuple[int, dict]:
        import webhook_handler

        resp = webhook_handler.handler(event, Ctx())
        return resp["statusCode"], json.loads(resp["body"])

    def results(self) -> list[dict]:
        return self.store.results.table.scan()["Items"]

    def row_uuid(self, row: int) -> str | None:
        from phonon_outbound.store import row_sk

        item = self.store.state.get_item(Key={"pk": job_pk(JOB), "sk": row_sk(row)}).get("Item") or {}
        return item.get("phonon_uuid")


@pytest.fixture(scope="module")
def webhook_stack():
    """One moto stack built from template.yaml for the module (these tests only read and write
    the webhook's items, which `hook` clears before each test): ~1 s instead of ~0.5 s a test."""
    from moto import mock_aws

    from phonon_outbound_dev.local.cfn import LocalStack, load_template

    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
            mp.delenv(key, raising=False)
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_REGION": "us-east-1"}.items():
            mp.setenv(key, value)
        with mock_aws():
            stack = LocalStack(load_template(ROOT / "template.yaml"), ROOT)
            stack.create_resources(boto3.session.Session(region_name="us-east-1"))
            env = stack.function_environment()
            env["POWERTOOLS_METRICS_DISABLED"] = "true"
            for k, v in env.items():
                mp.setenv(k, v)
            creds = json.loads(boto3.client("secretsmanager", region_name="us-east-1").get_secret_value(
                SecretId=env["WEBHOOK_SECRET_NAME"])["SecretString"])
            yield creds
            wiring.reset()


@pytest.fixture
def hook(webhook_stack) -> Hook:
    wiring.reset()  # no service caches from an earlier test
    h = Hook(webhook_stack)
    with h.store.results.table.batch_writer() as batch:
        for item in h.store.results.table.scan(ProjectionExpression="#u", ExpressionAttributeNames={"#u": "phonon-uuid"})[
                "Items"]:
            batch.delete_item(Key=item)
    with h.store.state.batch_writer() as batch:
        for item in h.store.state.query(KeyConditionExpression=Key("pk").eq(job_pk(JOB)))["Items"]:
            batch.delete_item(Key={"pk": item["pk"], "sk": item["sk"]})
    h.store.jobs.put_job(JOB, {"flow": "wruHzoCK", "key": "incoming/a.csv", "ingest_done": True, "total_rows": 3})
    return h


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _details(n: int) -> list[dict]:
    return [{"duration": "1"}] * n


# (case id, how to build the event from the Hook, expected status). None of them may store anything.
Case = tuple[str, Callable[[Hook], dict], int]
HOSTILE: list[Case] = [
    # --- credentials: 401, whatever the header holds
    ("no-authorization", lambda h: h.event(push_doc(), auth=None), 401),
    ("empty-authorization", lambda h: h.event(push_doc(), auth=""), 401),
    ("non-ascii-authorization", lambda h: h.event(push_doc(), auth="Basic cGhvbm9uOnPDqWNyZXQ=ñ"), 401),
    ("non-ascii-scheme", lambda h: h.event(push_doc(), auth="Bäsic " + _b64("phonon:x")), 401),
    ("no-colon", lambda h: h.event(push_doc(), auth="Basic " + _b64("phononsecret")), 401),
    ("bad-base64", lambda h: h.event(push_doc(), auth="Basic !!!notbase64"), 401),
    ("truncated-base64", lambda h: h.event(push_doc(), auth="Basic cGhvbm9"), 401),
    ("huge-authorization", lambda h: h.event(push_doc(), auth="Basic " + "A" * 200_000), 401),
    ("bearer-scheme", lambda h: h.event(push_doc(), auth="Bearer " + _b64("phonon:x")), 401),
    ("scheme-only", lambda h: h.event(push_doc(), auth="Basic"), 401),
    ("wrong-password", lambda h: h.event(push_doc(), auth="Basic " + _b64(f"{h.creds['username']}:wrong")), 401),
    ("wrong-user", lambda h: h.event(push_doc(), auth="Basic " + _b64(f"root:{h.creds['password']}")), 401),
    ("binary-credentials", lambda h: h.event(push_doc(), auth="Basic " + base64.b64encode(b"\xff\xfe:\xff").decode()),
     401),
    ("authorization-not-a-string", lambda h: h.event(push_doc(), auth=["Basic", "x"]), 401),
    ("password-prefix", lambda h: h.event(push_doc(), auth="Basic " + _b64(
        f"{h.creds['username']}:{h.creds['password'][:-1]}")), 401),
    # --- method: 405
    ("get", lambda h: h.event(push_doc(), method="GET"), 405),
    ("put", lambda h: h.event(push_doc(), method="PUT"), 405),
    ("no-method", lambda h: {**h.event(push_doc()), "requestContext": {}}, 405),
    # --- the body itself: 400 / 413
    ("empty-body", lambda h: h.event(raw=""), 400),
    ("no-body", lambda h: h.event(None), 400),
    ("not-json", lambda h: h.event(raw="hello"), 400),
    ("json-array", lambda h: h.event([push_doc()]), 400),
    ("json-string", lambda h: h.event("phonon-uuid"), 400),
    ("base64-not-base64", lambda h: {**h.event(raw="x", b64=True), "body": "!!!not base64!!!"}, 400),
    ("base64-not-utf8", lambda h: {**h.event(raw="x", b64=True),
                                   "body": base64.b64encode(b'{"phonon-uuid": "\xff\xfe"}').decode()}, 400),
    ("base64-not-json", lambda h: h.event(raw="hello, world", b64=True), 400),
    ("lone-surrogate", lambda h: h.event(raw='{"phonon-uuid": "a\ud800"}'), 400),
    ("deep-nesting", lambda h: h.event(raw="[" * 200_000), 400),
    ("body-5.9MB", lambda h: h.event(push_doc(padding="x" * 5_900_000)), 413),
    ("body-5.9MB-base64", lambda h: h.event(push_doc(padding="x" * 4_400_000), b64=True), 413),
    ("body-just-over-limit", lambda h: h.event(raw=" " * (MAX_BODY_BYTES + 1)), 413),
    ("200k-callDetails", lambda h: h.event(push_doc(callDetails=[{}] * 200_000)), 400),
    ("200k-callDetails-5MB", lambda h: h.event(push_doc(callDetails=[{"duration": "1"}] * 200_000)), 413),
    ("wrapped-not-json", lambda h: h.event({"body": "not json"}), 400),
    ("wrapped-list", lambda h: h.event({"body": [push_doc()]}), 400),
    # --- the uuid
    ("uuid-object", lambda h: h.event(push_doc(uuid={"$ne": None})), 400),
    ("uuid-true", lambda h: h.event(push_doc(uuid=True)), 400),
    ("uuid-number", lambda h: h.event(push_doc(uuid=12345)), 400),
    ("uuid-null", lambda h: h.event(push_doc(uuid=None)), 400),
    ("uuid-blank", lambda h: h.event(push_doc(uuid="")), 400),
    ("uuid-3000-chars", lambda h: h.event(push_doc(uuid="a" * 3000)), 400),
    ("uuid-65-chars", lambda h: h.event(push_doc(uuid="a" * 65)), 400),
    ("uuid-path", lambda h: h.event(push_doc(uuid="../../etc/passwd")), 400),
    ("uuid-spaces", lambda h: h.event(push_doc(uuid="abc def")), 400),
    ("uuid-non-ascii", lambda h: h.event(push_doc(uuid="ａｂｃ")), 400),
    ("no-uuid", lambda h: h.event({"keys": push_doc()["keys"]}), 400),
    # --- numbers
    ("duration-NaN", lambda h: h.event(raw=json.dumps(push_doc()).replace('"53000"', "NaN")), 400),
    ("duration-Infinity", lambda h: h.event(raw=json.dumps(push_doc()).replace('"53000"', "Infinity")), 400),
    ("duration-minus-Infinity", lambda h: h.event(raw=json.dumps(push_doc()).replace('"53000"', "-Infinity")), 400),
    ("duration-1e300", lambda h: h.event(raw=json.dumps(push_doc()).replace('"53000"', "1e300")), 400),
    ("duration-1e400", lambda h: h.event(raw=json.dumps(push_doc()).replace('"53000"', "1e400")), 400),
    ("duration-string-1e300", lambda h: h.event(push_doc(callDetails=[{"duration": "1e300"}])), 400),
    ("duration-negative", lambda h: h.event(push_doc(callDetails=[{"duration": -5}])), 400),
    ("duration-5000-digits", lambda h: h.event(raw=json.dumps(push_doc()).replace('"53000"', "9" * 5000)), 400),
    ("duration-400-digits", lambda h: h.event(raw=json.dumps(push_doc()).replace('"53000"', "9" * 400)), 400),
    ("hangupCause-400-digits", lambda h: h.event(raw=json.dumps(push_doc()).replace('"NORMAL_CLEARING"', "9" * 400)),
     400),
    ("duration-text", lambda h: h.event(push_doc(callDetails=[{"duration": "abc"}])), 400),
    ("duration-bool", lambda h: h.event(push_doc(callDetails=[{"duration": True}])), 400),
    ("duration-object", lambda h: h.event(push_doc(callDetails=[{"duration": {"n": 1}}])), 400),
    # --- shapes and bounds
    ("callDetails-101", lambda h: h.event(push_doc(callDetails=_details(101))), 400),
    ("callDetails-string", lambda h: h.event(push_doc(callDetails="lots")), 400),
    ("callDetails-item-number", lambda h: h.event(push_doc(callDetails=[1])), 400),
    ("hangupCause-3000", lambda h: h.event(push_doc(callDetails=[{"hangupCause": "x" * 3000}])), 400),
    ("startTime-object", lambda h: h.event(push_doc(callDetails=[{"startTime": {"a": 1}}])), 400),
    ("keys-20001", lambda h: h.event(push_doc(keys=[{"name": f"k{i}", "value": "v"} for i in range(20_001)])), 400),
    ("key-name-2000", lambda h: h.event(push_doc(keys=[{"name": "k" * 2000, "value": "v"}])), 400),
    ("key-value-300KB", lambda h: h.event(push_doc(keys=[{"name": "$flow.key.Notes", "value": "v" * 300_000}])), 400),
    ("keys-string", lambda h: h.event(push_doc(keys="OutboundRef=x.1")), 400),
    ("key-name-number", lambda h: h.event(push_doc(keys=[{"name": 919812345670, "value": "x"}])), 400),
    ("key-value-object", lambda h: h.event(push_doc(keys=[{"name": "$flow.key.OutboundRef", "value": {"a": 1}}])),
     400),
    ("smsDetails-101", lambda h: h.event(push_doc(smsDetails=[{"deliveryStatus": "DELIVERED"}] * 101)), 400),
    ("deliveryStatus-long", lambda h: h.event(push_doc(emailDetails=[{"deliveryStatus": "x" * 100}])), 400),
    ("recordingUrls-101", lambda h: h.event(push_doc(recordingUrls=["https://x.invalid/r"] * 101)), 400),
    ("recordingUrl-number", lambda h: h.event(push_doc(recordingUrls=[1])), 400),
]


@pytest.mark.parametrize(("build", "status"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_a_hostile_push_gets_its_4xx_and_nothing_is_stored(hook, build, status):
    got, body = hook.call(build(hook))
    assert got == status, body
    assert set(body) == {"error"}
    assert hook.results() == []
    assert [hook.row_uuid(r) for r in (1, 2, 3)] == [None, None, None]


def test_the_table_has_at_least_40_distinct_hostile_pushes():
    assert len({c[0] for c in HOSTILE}) == len(HOSTILE) >= 40


def test_no_error_answer_echoes_what_was_sent(hook):
    got, body = hook.call(hook.event(push_doc(uuid="919812345670" * 10)))
    assert got == 400 and "919812345670" not in json.dumps(body)
    got, body = hook.call(hook.event(push_doc(keys=[{"name": "919812345670", "value": {"x": "9198"}}])))
    assert got == 400 and "919812345670" not in json.dumps(body)
    assert body["error"].startswith("invalid push: keys.0.value")


# ------------------------------------------------------------------------------ what Phonon really sends
LENIENT: list[tuple[str, Callable[[Hook], dict]]] = [
    ("as-documented", lambda h: h.event(push_doc())),
    ("wrapped-object", lambda h: h.event({"body": push_doc()})),
    ("wrapped-json-text", lambda h: h.event({"body": json.dumps(push_doc())})),
    ("base64", lambda h: h.event(push_doc(), b64=True)),
    ("utf8-bom", lambda h: h.event(raw="\ufeff" + json.dumps(push_doc()))),
    ("only-the-uuid", lambda h: h.event({"phonon-uuid": GOOD_UUID, "keys": push_doc()["keys"]})),
    ("uuid-alias", lambda h: h.event({"phononUuid": GOOD_UUID, "keys": push_doc()["keys"]})),
    ("keys-as-object", lambda h: h.event(push_doc(keys={"$flow.key.OutboundRef": f"{JOB}.1", "$flow.key.Age": 31}))),
    ("numeric-duration", lambda h: h.event(push_doc(callDetails=[{"duration": 53000, "hangupCause": 16}]))),
    ("decimal-duration", lambda h: h.event(push_doc(callDetails=[{"duration": "53000.0", "connectTime": "x"}]))),
    ("empty-strings-and-nulls", lambda h: h.event(push_doc(callDetails=[{"duration": "", "hangupCause": None,
                                                                          "startTime": ""}], smsDetails=None))),
    ("unknown-fields", lambda h: h.event(push_doc(newField={"nested": [1, 2]}, callDetails=[{"cdrId": "x##y"}]))),
    ("a-wide-crm-export", lambda h: h.event(push_doc(keys=[*push_doc()["keys"], *(
        {"name": f"$flow.key.Column {i}", "value": "x" * 20} for i in range(5000)),
        {"name": "$flow.key.Notes", "value": "n" * 100_000}]))),
    ("recording-url-as-text", lambda h: h.event(push_doc(recordingUrls="https://example.invalid/r.mp3"))),
    ("sms-and-email", lambda h: h.event(push_doc(smsDetails=[{"status": "SENT"}],
                                                 emailDetails=[{"deliveryStatus": "BOUNCED"}]))),
    ("mixed-case-header", lambda h: {**(e := h.event(push_doc(), auth=None)),
                                     "headers": {**e["headers"], "Authorization": h.auth}}),
]


@pytest.mark.parametrize("build", [c[1] for c in LENIENT], ids=[c[0] for c in LENIENT])
def test_what_phonon_really_sends_is_stored(hook, build):
    got, body = hook.call(build(hook))
    assert (got, body) == (200, {"ok": True, "phonon-uuid": GOOD_UUID, "matched": True})
    (item,) = hook.results()
    assert item["job"] == JOB and item["row"] == 1 and item["status"] == "COMPLETED"
    assert hook.row_uuid(1) == GOOD_UUID


def test_the_stored_outcome_is_typed_and_carries_no_number_of_the_push(hook):
    assert hook.call(hook.event(push_doc(callDetails=[
        {"calleeNumber": "919800000001", "duration": 0, "hangupCause": "NO_ANSWER"},
        {"calleeNumber": "919800000002", "connectTime": "t", "duration": "61000.0", "hangupCause": 16}])))[0] == 200
    item = wiring.store().results.get_result(GOOD_UUID)
    assert (item["attempts"], item["connected"], item["duration"], item["hangup_cause"]) == (2, True, 61000, "16")
    assert "919800000001" not in json.dumps(item, default=str) and "919800000002" not in json.dumps(item, default=str)
    assert item["expires_at"] > item["webhook_at"]


# ------------------------------------------------------------------------------ replays and contradictions
def test_a_replay_of_the_same_push_is_idempotent(hook):
    event = hook.event(push_doc())
    assert hook.call(event)[0] == 200
    first = wiring.store().results.get_result(GOOD_UUID)
    assert hook.call(copy.deepcopy(event)) == (200, {"ok": True, "phonon-uuid": GOOD_UUID, "matched": True})
    again = wiring.store().results.get_result(GOOD_UUID)
    assert {k: v for k, v in again.items() if k not in ("webhook_at", "expires_at")} == {
        k: v for k, v in first.items() if k not in ("webhook_at", "expires_at")}
    assert hook.row_uuid(1) == GOOD_UUID and len(hook.results()) == 1


def test_a_second_uuid_for_the_same_row_cannot_overwrite_it(hook):
    assert hook.call(hook.event(push_doc()))[0] == 200
    got, body = hook.call(hook.event(push_doc(uuid="ffffffff-0000-4000-8000-000000000000")))
    assert got == 409 and "another phonon-uuid" in body["error"]
    assert hook.row_uuid(1) == GOOD_UUID
    assert [i["phonon-uuid"] for i in hook.results()] == [GOOD_UUID]


def test_a_uuid_the_chunk_outcome_already_has_cannot_be_replaced(hook):
    wiring.store().rows.put_outcomes(JOB, 0, [{"row": 1, "status": "ACCEPTED", "cid": "C1", "request_id": "r1",
                                          "phonon_uuid": GOOD_UUID, "numbers": ["919812345670"]}], at=1)
    got, _ = hook.call(hook.event(push_doc(uuid="ffffffff-0000-4000-8000-000000000000")))
    assert got == 409 and hook.results() == [] and hook.row_uuid(1) is None
    assert hook.call(hook.event(push_doc()))[0] == 200
    assert wiring.store().results.get_result(GOOD_UUID)["client-identifier"] == "C1"


def test_the_same_uuid_for_another_row_cannot_rebind_it(hook):
    assert hook.call(hook.event(push_doc(row=1)))[0] == 200
    got, body = hook.call(hook.event(push_doc(row=2)))
    assert got == 409 and "another row" in body["error"]
    assert wiring.store().results.get_result(GOOD_UUID)["row"] == 1
    assert (hook.row_uuid(1), hook.row_uuid(2)) == (GOOD_UUID, None)  # row 2's half was taken back


def test_an_unmatched_uuid_cannot_be_rebound_to_another_ref_but_can_then_match(hook):
    stray = push_doc(keys=[{"name": "$flow.key.OutboundRef", "value": "nosuchjob.4"}])
    assert hook.call(hook.event(stray)) == (200, {"ok": True, "phonon-uuid": GOOD_UUID, "matched": False})
    other = push_doc(keys=[{"name": "$flow.key.OutboundRef", "value": "otherjob.5"}])
    assert hook.call(hook.event(other))[0] == 409
    assert wiring.store().results.get_result(GOOD_UUID)["ref"] == "nosuchjob.4"


def test_a_uuid_the_dispatcher_recorded_keeps_its_row(hook):
    wiring.store().results.put_results([{"phonon-uuid": GOOD_UUID, "job": JOB, "row": 2, "status": "ACCEPTED"}])
    assert hook.call(hook.event(push_doc(row=1)))[0] == 409
    assert hook.call(hook.event(push_doc(keys=[])))[0] == 409  # nor unbound by a push without our ref
    assert hook.call(hook.event(push_doc(row=2)))[0] == 200
    item = wiring.store().results.get_result(GOOD_UUID)
    assert (item["row"], item["status"]) == (2, "COMPLETED")


def test_a_correlation_value_of_another_shape_is_unmatched_and_not_stored(hook):
    odd = push_doc(keys=[{"name": "$flow.key.OutboundRef", "value": "x" * 200}])
    assert hook.call(hook.event(odd)) == (200, {"ok": True, "phonon-uuid": GOOD_UUID, "matched": False})
    item = wiring.store().results.get_result(GOOD_UUID)
    assert item["unmatched"] is True and "ref" not in item
