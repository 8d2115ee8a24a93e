"""The bundled Phonon simulator over real loopback HTTP, driven by the real PhononClient."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from phonon_outbound.api.body import MAX_BODY_BYTES, build_body
from phonon_outbound.api.classify import Kind, classify
from phonon_outbound.api.client import PhononClient
from phonon_outbound_dev.simulator import (
    CREATE_PATH,
    DEMO_FLOW_ID,
    DEMO_SECURITY_ID,
    FaultPlan,
    PhononSimulator,
)

REPO = Path(__file__).resolve().parents[2]


def make_calls(n: int, prefix: str = "c", numbers=("916262772728",), **extra) -> list[dict]:
    out = []
    for i in range(n):
        call = {"client-identifier": f"{prefix}{i}", "contact-numbers": list(numbers),
                "keys": [{"name": "$flow.key.OutboundRef", "value": f"job1.{prefix}{i}"}]}
        call.update(extra)
        out.append(call)
    return out


def body_of(calls, security_id=DEMO_SECURITY_ID, flow_id=DEMO_FLOW_ID) -> bytes:
    return build_body(security_id, flow_id, calls)


def wait_for(predicate, timeout=10.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.fixture
def sim():
    with PhononSimulator(seed=1) as s:
        yield s


@pytest.fixture
def client(sim):
    with PhononClient(sim.url, connect_timeout=2, read_timeout=5) as c:
        yield c


def raw_post(url: str, data: bytes) -> requests.Response:
    return requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=5)


class Receiver:
    """A tiny webhook endpoint: records pushes, checks HTTP Basic auth, can fail on purpose."""

    def __init__(self, auth: tuple[str, str] | None = None, fail_first: int = 0):
        self.received: list[tuple[dict, object]] = []
        self.hits = 0
        self.lock = threading.Lock()
        expected = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode() if auth else None
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.hits += 1
                    fail = outer.hits <= fail_first
                if expected and self.headers.get("Authorization") != expected:
                    code = 401
                elif fail:
                    code = 500
                else:
                    code = 200
                    with outer.lock:
                        outer.received.append((dict(self.headers), json.loads(data)))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhook"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# ---- success shapes and checksum -----------------------------------------------------------------
def test_202_shape_accepts(sim, client):
    a = client.post(body_of(make_calls(3)))
    assert a.http_status == 202 and a.code == 202 and a.message == "Accepted"
    assert a.call_details is None and a.request_id
    v = classify(a)
    assert v.kind is Kind.ACCEPTED and v.accepted_ids == {}
    s = sim.stats()
    assert s["requests"] == 1 and s["accepted_requests"] == 1 and s["calls_accepted"] == 3
    assert s["calls_by_client_identifier"] == {"c0": 1, "c1": 1, "c2": 1}
    assert [n for _, n in s["accepted"]] == [3]
    calls = sim.accepted_calls()
    assert [c["client-identifier"] for c in calls] == ["c0", "c1", "c2"]
    assert sim.accepted_bodies() == [body_of(make_calls(3))]
    assert {c["request-id"] for c in calls} == {a.request_id}


def test_200_shape_has_call_details():
    with PhononSimulator(shape="200") as sim, PhononClient(sim.url) as client:
        a = client.post(body_of(make_calls(4)))
        assert a.http_status == 200 and a.code == 200 and a.message == "Success"
        v = classify(a)
        assert v.kind is Kind.ACCEPTED
        assert set(v.accepted_ids) == {"c0", "c1", "c2", "c3"}
        assert len(set(v.accepted_ids.values())) == 4
        assert {c["phonon-uuid"] for c in sim.accepted_calls()} == set(v.accepted_ids.values())


def test_checksum_repeat_of_identical_bytes(sim, client):
    body = body_of(make_calls(2))
    assert classify(client.post(body)).kind is Kind.ACCEPTED
    again = client.post(body)
    assert (again.code, again.message) == (201, "Checksum Repeated")
    assert classify(again, on_retry=True).kind is Kind.ALREADY_ACCEPTED
    s = sim.stats()
    assert s["checksum_repeats"] == 1 and s["calls_accepted"] == 2 and s["called_twice"] == []
    # one byte different: a new request, and the simulator shows the call placed twice
    assert classify(client.post(body.replace(b"job1.c0", b"job2.c0"))).kind is Kind.ACCEPTED
    s = sim.stats()
    assert s["calls_by_client_identifier"]["c0"] == 2 and s["called_twice"] == ["c0", "c1"]


def test_refused_bodies_are_not_remembered_by_default(client, sim):
    sim.set_faults(FaultPlan(sequence=["http500"]))
    body = body_of(make_calls(1))
    assert classify(client.post(body)).kind is Kind.TRANSIENT
    assert classify(client.post(body), on_retry=True).kind is Kind.ACCEPTED


def test_checksum_scope_all_models_the_pessimistic_reading():
    with PhononSimulator(checksum_scope="all", faults=FaultPlan(sequence=["http500"])) as sim, \
            PhononClient(sim.url) as client:
        body = body_of(make_calls(1))
        assert classify(client.post(body)).kind is Kind.TRANSIENT
        assert client.post(body).code == 201  # refused once, never placed, yet "repeated"
        assert sim.stats()["calls_accepted"] == 0


# ---- validation, like Phonon ---------------------------------------------------------------------
def _call(**over):
    call = {"client-identifier": "x1", "contact-numbers": ["916262772728"], "keys": []}
    call.update(over)
    return call


def _without(key):
    call = _call()
    del call[key]
    return call


def _raw(**top):
    data = {"api-version": "1.0", "security-id": DEMO_SECURITY_ID, "flow-id": DEMO_FLOW_ID, "calls": [_call()]}
    data.update(top)
    return json.dumps(data).encode()


VALIDATION = [
    ("bad json", b"{not json", 400, 400, Kind.RECORD),
    ("json array", b"[1,2]", 400, 400, Kind.RECORD),
    ("not utf-8", b'{"a":"\xff"}', 400, 400, Kind.RECORD),
    ("api version", _raw(**{"api-version": "2.0"}), 200, 203, Kind.PERMANENT),
    ("api version number", _raw(**{"api-version": 1.0}), 200, 203, Kind.PERMANENT),
    ("unknown flow", _raw(**{"flow-id": "Nope1234"}), 200, 301, Kind.FLOW),
    ("wrong security id", _raw(**{"security-id": "x" * 64}), 202, 202, Kind.ACCOUNT),
    ("missing flow id", _raw(**{"flow-id": None}), 200, 210, Kind.RECORD),
    ("empty calls", _raw(calls=[]), 200, 302, Kind.PERMANENT),
    ("missing client-identifier", _raw(calls=[_without("client-identifier")]), 200, 210, Kind.RECORD),
    ("empty client-identifier", _raw(calls=[_call(**{"client-identifier": ""})]), 200, 210, Kind.RECORD),
    ("missing contact-numbers", _raw(calls=[_without("contact-numbers")]), 200, 210, Kind.RECORD),
    ("empty contact-numbers", _raw(calls=[_call(**{"contact-numbers": []})]), 200, 210, Kind.RECORD),
    ("missing keys", _raw(calls=[_without("keys")]), 200, 210, Kind.RECORD),
    ("past start-time", _raw(calls=[_call(**{"start-time": "2020-01-01T10:00:00+05:30"})]), 200, 210, Kind.RECORD),
    ("start-time without offset", _raw(calls=[_call(**{"start-time": "2099-01-01T10:00:00"})]), 200, 210,
     Kind.RECORD),
    ("short number", _raw(calls=[_call(**{"contact-numbers": ["12345"]})]), 200, 205, Kind.RECORD),
    ("letters in number", _raw(calls=[_call(**{"contact-numbers": ["91626277272a"]})]), 200, 205, Kind.RECORD),
    ("spaces in number", _raw(calls=[_call(**{"contact-numbers": ["+91 6262772728"]})]), 200, 205, Kind.RECORD),
    ("too long number", _raw(calls=[_call(**{"contact-numbers": ["1234567890123456"]})]), 200, 205, Kind.RECORD),
    ("second number bad", _raw(calls=[_call(), _call(**{"client-identifier": "x2",
                                                         "contact-numbers": ["916262772728", "9.18E+11"]})]),
     200, 205, Kind.RECORD),
]


@pytest.mark.parametrize("name,body,http_status,code,kind", VALIDATION, ids=[v[0] for v in VALIDATION])
def test_validation_codes(sim, client, name, body, http_status, code, kind):
    a = client.post(body)
    assert (a.http_status, a.code) == (http_status, code), name
    assert classify(a).kind is kind
    s = sim.stats()
    assert s["calls_accepted"] == 0 and s["refusals"] == {str(code): 1}


def test_too_many_calls_303():
    with PhononSimulator(max_calls=3) as sim, PhononClient(sim.url) as client:
        a = client.post(body_of(make_calls(4)))
        assert a.code == 303 and classify(a).kind is Kind.TOO_LARGE
        assert classify(client.post(body_of(make_calls(3)))).kind is Kind.ACCEPTED


@pytest.mark.parametrize("numbers", [["+916262772728"], [916262772728], ["6262772728"],
                                     ["916262772728", "918000000001"]])
def test_accepted_number_forms(client, numbers):
    assert classify(client.post(_raw(calls=[_call(**{"contact-numbers": numbers})]))).kind is Kind.ACCEPTED


def test_future_start_time_and_any_client_identifier_type(client):
    body = _raw(calls=[_call(**{"start-time": "2099-06-29T09:42:00+05:30", "client-identifier": 17})])
    assert classify(client.post(body)).kind is Kind.ACCEPTED


def test_body_over_256_kb_is_not_processed_then_connection_still_usable(sim, client):
    big = body_of(make_calls(1, keys=[{"name": "$flow.key.Blob", "value": "x" * MAX_BODY_BYTES}]))
    assert len(big) > MAX_BODY_BYTES
    a = client.post(big)
    assert a.http_status == 413 and a.code is None
    v = classify(a)
    assert v.kind is Kind.TOO_LARGE
    assert sim.stats()["refusals"] == {"http413": 1}
    assert classify(client.post(body_of(make_calls(1)))).kind is Kind.ACCEPTED


def test_body_of_exactly_256_kb_is_processed(client):
    base = body_of(make_calls(1, keys=[{"name": "$flow.key.Blob", "value": ""}]))
    pad = MAX_BODY_BYTES - len(base)
    body = body_of(make_calls(1, keys=[{"name": "$flow.key.Blob", "value": "x" * pad}]))
    assert len(body) == MAX_BODY_BYTES
    assert classify(client.post(body)).kind is Kind.ACCEPTED


def test_other_paths_and_methods(sim):
    assert requests.get(sim.url, timeout=5).status_code == 405
    assert raw_post(sim.base_url + "/nope", b"{}").status_code == 404
    assert sim.stats()["requests"] == 0


# ---- faults ------------------------------------------------------------------------------------
def test_scripted_refusal_faults(sim, client):
    sim.set_faults(FaultPlan(sequence=["http500", "gw206", "http429", "http403", "invalid_security_id",
                                       "bad_gateway", None]))
    body = body_of(make_calls(1))
    kinds = []
    statuses = []
    for i in range(7):
        a = client.post(body)
        statuses.append((a.http_status, a.code))
        kinds.append(classify(a, on_retry=i > 0).kind)
    assert statuses == [(500, 500), (200, 206), (429, None), (403, 401), (202, 202), (502, None), (202, 202)]
    assert kinds == [Kind.TRANSIENT, Kind.TRANSIENT, Kind.RATE_LIMITED, Kind.ACCOUNT, Kind.ACCOUNT,
                     Kind.TRANSIENT, Kind.ACCEPTED]
    s = sim.stats()
    assert s["calls_accepted"] == 1 and s["requests"] == 7
    assert s["faults_injected"] == {"http500": 1, "gw206": 1, "http429": 1, "http403": 1,
                                    "invalid_security_id": 1, "bad_gateway": 1}
    assert s["refusals"] == {"500": 1, "206": 1, "http429": 1, "401": 1, "202": 1, "http502": 1}
    assert s["rate_refusals"] == 0  # injected 429s are faults, not the limiter


def test_slow_fault_read_timeout_then_resend_is_repeat(sim):
    sim.set_faults(FaultPlan(sequence=["slow"], slow_s=0.6))
    body = body_of(make_calls(2))
    with PhononClient(sim.url, read_timeout=0.3) as client:
        a = client.post(body)
    assert a.http_status is None and a.error == "read timeout after 0.3 s" and a.maybe_delivered
    assert classify(a).kind is Kind.TRANSIENT
    assert wait_for(lambda: sim.stats()["accepted_requests"] == 1)
    with PhononClient(sim.url) as client:
        assert classify(client.post(body), on_retry=True).kind is Kind.ALREADY_ACCEPTED
    assert sim.stats()["calls_accepted"] == 2


def test_drop_after_accept(sim, client):
    sim.set_faults(FaultPlan(sequence=["drop_after_accept"]))
    body = body_of(make_calls(2))
    a = client.post(body)
    assert a.http_status is None and a.maybe_delivered is True
    assert a.error.startswith("connection lost before an answer")
    assert classify(a).kind is Kind.TRANSIENT
    s = sim.stats()
    assert s["calls_accepted"] == 2 and s["dropped_answers"] == 1
    assert classify(client.post(body), on_retry=True).kind is Kind.ALREADY_ACCEPTED
    assert sim.stats()["called_twice"] == []


def test_partial_209(sim, client):
    sim.set_faults(FaultPlan(sequence=["partial209"]))
    v = classify(client.post(body_of(make_calls(5))))
    assert v.kind is Kind.PARTIAL and set(v.accepted_ids) == {"c0", "c2", "c4"}
    assert sim.stats()["calls_accepted"] == 3


def test_record_error_numbers(sim, client):
    sim.set_faults(FaultPlan(record_error_numbers=["+918000000009"]))
    bad = body_of(make_calls(1, prefix="b", numbers=("916262772728", "918000000009")))
    assert client.post(bad).code == 205
    assert classify(client.post(body_of(make_calls(3)))).kind is Kind.ACCEPTED
    sim.set_faults(FaultPlan(record_error_numbers=["918000000009"], record_error_code=402))
    a = client.post(bad)
    assert (a.code, a.message) == (402, "Phone Not Whitelisted") and classify(a).kind is Kind.RECORD


def test_seeded_probabilities_repeat():
    def run():
        plan = FaultPlan(probabilities={"http500": 0.3, "gw206": 0.2}, seed=42)
        with PhononSimulator(faults=plan) as sim, PhononClient(sim.url) as client:
            return [client.post(body_of(make_calls(1, prefix=f"r{i}-"))).code for i in range(25)]

    first, second = run(), run()
    assert first == second
    assert {500, 206, 202} <= set(first)


def test_fault_plan_json_roundtrip_and_validation():
    plan = FaultPlan(sequence=["http500", None, "slow"], probabilities={"gw206": 0.1}, seed=3, slow_s=0.5,
                     record_error_numbers=["+918000000009"])
    data = json.loads(json.dumps(plan.to_dict()))
    assert FaultPlan.from_dict(data) == plan
    assert plan.record_error_numbers == ["918000000009"]
    assert FaultPlan.from_dict({"sequence": ["ok", ""]}).sequence == [None, None]
    with pytest.raises(ValueError):
        FaultPlan(sequence=["explode"])
    with pytest.raises(ValueError):
        FaultPlan(probabilities={"http500": 0.8, "gw206": 0.5})
    with pytest.raises(ValueError):
        FaultPlan.from_dict({"bogus": 1})


# ---- rate limit -------------------------------------------------------------------------------------
def test_rate_limit_counts_call_records():
    with PhononSimulator(rate_per_minute=5) as sim, PhononClient(sim.url) as client:
        assert classify(client.post(body_of(make_calls(3, prefix="a")))).kind is Kind.ACCEPTED
        a = client.post(body_of(make_calls(3, prefix="b")))
        assert a.http_status == 429 and a.retry_after_s is not None and a.retry_after_s >= 1
        assert classify(a).kind is Kind.RATE_LIMITED
        assert classify(client.post(body_of(make_calls(2, prefix="c")))).kind is Kind.ACCEPTED
        s = sim.stats()
        assert s["rate_refusals"] == 1 and s["calls_accepted"] == 5
        assert sum(n for _, n in s["accepted"]) == 5
        assert s["accepted"] == sorted(s["accepted"])


def test_rate_window_slides():
    with PhononSimulator(rate_per_minute=2, rate_window_s=0.3) as sim, PhononClient(sim.url) as client:
        assert client.post(body_of(make_calls(2, prefix="a"))).code == 202
        assert client.post(body_of(make_calls(1, prefix="b"))).http_status == 429
        time.sleep(0.4)
        assert client.post(body_of(make_calls(1, prefix="b"))).code == 202
        assert sim.stats()["rate_refusals"] == 1


# ---- concurrency ------------------------------------------------------------------------------------
def test_concurrent_identical_bodies_accept_once_and_distinct_bodies_all():
    with PhononSimulator(latency_s=(0.0, 0.02), seed=5) as sim:
        same = body_of(make_calls(2, prefix="same"))
        bodies = [same] * 8 + [body_of(make_calls(3, prefix=f"d{i}-")) for i in range(8)]

        def send(b):
            with PhononClient(sim.url) as c:
                return c.post(b).code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(send, bodies))
        assert codes[:8].count(202) == 1 and codes[:8].count(201) == 7
        assert codes[8:] == [202] * 8
        s = sim.stats()
        assert s["calls_accepted"] == 2 + 24 and s["called_twice"] == [] and s["checksum_repeats"] == 7


def test_connection_refused_is_not_delivered():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with PhononClient(f"http://127.0.0.1:{port}{CREATE_PATH}", connect_timeout=2) as client:
        a = client.post(body_of(make_calls(1)))
    assert a.http_status is None and a.maybe_delivered is False
    v = classify(a)
    assert v.kind is Kind.TRANSIENT and "not sent" in v.reason


# ---- webhooks ---------------------------------------------------------------------------------------
def test_webhooks_pushed_with_basic_auth_and_keys_echoed():
    with Receiver(auth=("hook", "s3cret")) as rx, PhononSimulator(
            webhook_url=rx.url, webhook_auth=("hook", "s3cret"), webhook_delay_s=0.05, seed=9) as sim, \
            PhononClient(sim.url) as client:
        v = classify(client.post(body_of(make_calls(3, numbers=("+916262772728", "918000000001")))))
        assert v.kind is Kind.ACCEPTED
        assert sim.wait_webhooks_idle(10)
        assert len(rx.received) == 3
        by_uuid = {c["phonon-uuid"]: c for c in sim.accepted_calls()}
        for headers, payload in rx.received:
            assert headers["Content-Type"] == "application/json"
            assert set(payload) == {"phonon-uuid", "callDetails", "keys", "recordingUrls"}
            call = by_uuid[payload["phonon-uuid"]]
            assert payload["keys"] == call["keys"]
            assert payload["keys"][0]["name"] == "$flow.key.OutboundRef"
            (attempt,) = payload["callDetails"]  # answered on the first number
            assert attempt["calleeNumber"] == "916262772728"
            assert attempt["hangupCause"] == "NORMAL_CLEARING" and attempt["incoming"] is False
            assert attempt["dtmfPressesd"] == [] and attempt["didNumber"]
            for k in ("startTime", "connectTime", "endTime"):
                assert attempt[k].endswith("+05:30")
            assert attempt["startTime"] <= attempt["connectTime"] <= attempt["endTime"]
            assert int(attempt["duration"]) > 0
            assert payload["recordingUrls"] == []
        w = sim.stats()["webhooks"]
        assert (w["queued"], w["sent"], w["failed"], w["pending"]) == (3, 3, 0, 0)


def test_webhooks_are_paced_when_a_push_rate_is_set():
    # Given at most 10 pushes a second and 15 calls accepted at once
    with Receiver() as rx, PhononSimulator(webhook_url=rx.url, webhook_delay_s=0, webhook_rate_per_s=10,
                                           seed=9) as sim, PhononClient(sim.url) as client:
        assert classify(client.post(body_of(make_calls(15)))).kind is Kind.ACCEPTED
        # Then after ~0.5 s only the first handful have arrived, and all of them within ~1.5 s
        assert not sim.wait_webhooks_idle(0.5)
        assert 3 <= len(rx.received) <= 8
        assert sim.wait_webhooks_idle(10)
        assert len(rx.received) == 15


def test_webhook_wrapped_in_body_and_unanswered_outcomes_try_alternates():
    with Receiver() as rx, PhononSimulator(
            webhook_url=rx.url, webhook_delay_s=0.0, webhook_wrap=True,
            webhook_outcomes={"NO_ANSWER": 1.0}, seed=2) as sim, PhononClient(sim.url) as client:
        client.post(body_of(make_calls(1, numbers=("916262772728", "918000000001"))))
        assert sim.wait_webhooks_idle(10)
        ((_, payload),) = rx.received
        inner = payload["body"]
        assert [a["calleeNumber"] for a in inner["callDetails"]] == ["916262772728", "918000000001"]
        assert all(a["hangupCause"] == "NO_ANSWER" and "connectTime" not in a and a["duration"] == "0"
                   for a in inner["callDetails"])


def test_webhook_outcomes_are_deterministic_per_call():
    sim = PhononSimulator(seed=4, webhook_outcomes={"NORMAL_CLEARING": 0.5, "USER_BUSY": 0.5})
    record = {"phonon-uuid": "u-1", "contact-numbers": ["916262772728", "918000000001"], "keys": []}
    first = sim._webhook_payload(record)
    second = sim._webhook_payload(record)
    assert [a["hangupCause"] for a in first["callDetails"]] == [a["hangupCause"] for a in second["callDetails"]]


def test_webhook_retries_failed_pushes():
    with Receiver(fail_first=2) as rx, PhononSimulator(webhook_url=rx.url, webhook_delay_s=0.0,
                                                       webhook_threads=1) as sim, \
            PhononClient(sim.url) as client:
        client.post(body_of(make_calls(2)))
        assert sim.wait_webhooks_idle(10)
        assert len(rx.received) == 2
        w = sim.stats()["webhooks"]
        assert w["sent"] == 2 and w["failed"] == 0 and w["attempts"] == 4


def test_webhook_gives_up_after_retries():
    with Receiver(auth=("hook", "right")) as rx, PhononSimulator(
            webhook_url=rx.url, webhook_auth=("hook", "wrong"), webhook_delay_s=0.0, webhook_retries=1) as sim, \
            PhononClient(sim.url) as client:
        client.post(body_of(make_calls(2)))
        assert sim.wait_webhooks_idle(10)
        w = sim.stats()["webhooks"]
        assert rx.received == [] and w["failed"] == 2 and w["attempts"] == 4 and w["sent"] == 0


def test_no_webhooks_for_refused_or_repeated_requests():
    with Receiver() as rx, PhononSimulator(webhook_url=rx.url, webhook_delay_s=0.0) as sim, \
            PhononClient(sim.url) as client:
        body = body_of(make_calls(1))
        client.post(body)
        client.post(body)
        client.post(body_of(make_calls(1), flow_id="Unknown1"))
        assert sim.wait_webhooks_idle(10)
        assert len(rx.received) == 1


def test_stop_is_prompt_with_pending_webhooks():
    with Receiver() as rx:
        sim = PhononSimulator(webhook_url=rx.url, webhook_delay_s=60).start()
        with PhononClient(sim.url) as client:
            client.post(body_of(make_calls(5)))
        assert not sim.wait_webhooks_idle(0.1)
        started = time.monotonic()
        sim.stop()
        assert time.monotonic() - started < 5
        assert sim.stats()["webhooks"]["abandoned"] == 5 and rx.received == []
        sim.stop()  # idempotent


# ---- admin endpoints ------------------------------------------------------------------------------------
def test_admin_endpoints(sim, client):
    base = sim.base_url
    r = raw_post(base + "/_sim/faults", json.dumps({"sequence": ["http500"]}).encode())
    assert r.status_code == 200 and r.json()["faults"]["sequence"] == ["http500"]
    assert client.post(body_of(make_calls(1))).code == 500
    assert client.post(body_of(make_calls(1))).code == 202
    stats = requests.get(base + "/_sim/stats", timeout=5).json()
    assert stats["requests"] == 2 and stats["calls_accepted"] == 1
    assert stats["calls_by_client_identifier"] == {"c0": 1}
    assert len(stats["accepted"]) == 1 and stats["accepted"][0][1] == 1
    assert len(requests.get(base + "/_sim/calls", timeout=5).json()["calls"]) == 1

    assert raw_post(base + "/_sim/faults", b'{"sequence": ["nope"]}').status_code == 400
    assert raw_post(base + "/_sim/faults", b"not json").status_code == 400

    assert raw_post(base + "/_sim/flows", json.dumps({"flow-id": "Other123", "security-id": "z" * 64}).encode()).ok
    assert client.post(body_of(make_calls(1), security_id="z" * 64, flow_id="Other123")).code == 202

    r = raw_post(base + "/_sim/config", json.dumps({"shape": "200", "rate_per_minute": 100}).encode())
    assert r.ok and r.json()["shape"] == "200"
    a = client.post(body_of(make_calls(1, prefix="s")))
    assert a.code == 200 and a.call_details
    assert raw_post(base + "/_sim/config", b'{"shape": "201"}').status_code == 400

    assert raw_post(base + "/_sim/reset", b"").ok
    stats = requests.get(base + "/_sim/stats", timeout=5).json()
    assert stats["requests"] == 0 and stats["calls_accepted"] == 0 and stats["calls_by_client_identifier"] == {}
    # reset forgets checksums too
    assert client.post(body_of(make_calls(1))).code == 200


def test_default_security_id_accepts_any_flow():
    with PhononSimulator(default_security_id=DEMO_SECURITY_ID) as sim, PhononClient(sim.url) as client:
        assert client.post(body_of(make_calls(1), flow_id="AbCd1234")).code == 202
        assert client.post(body_of(make_calls(1), flow_id="short")).code == 301


def test_constructor_validation():
    with pytest.raises(ValueError):
        PhononSimulator(shape="201")
    with pytest.raises(ValueError):
        PhononSimulator(latency_s=(2, 1))
    with pytest.raises(ValueError):
        PhononSimulator(checksum_scope="some")
    assert len(DEMO_SECURITY_ID) == 64 and DEMO_SECURITY_ID.isalnum() and len(DEMO_FLOW_ID) == 8


# ---- the command line -----------------------------------------------------------------------------------
def test_main_serves_until_interrupted():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "layers" / "outbound"), str(REPO / "devkit")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "phonon_outbound_dev.simulator", "--port", "0", "--shape", "200", "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith(CREATE_PATH)
        with PhononClient(url) as client:
            assert client.post(body_of(make_calls(2))).code == 200
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "2 calls accepted" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_main_rejects_bad_arguments(capsys):
    from phonon_outbound_dev.simulator import main

    assert main(["--webhook-auth", "no-colon", "--port", "0"]) == 2
    assert main(["--faults", '{"sequence": ["explode"]}', "--port", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["--shape", "999"])
