"""The simulator's pull API v2 (POST /pull/v2) and pushes lost on purpose, over real loopback
HTTP, driven by the real PhononClient (what the reconciler uses). docs/operating.md,
"Missed webhooks: the reconciler", lists what is assumed about Phonon's undocumented answer."""

from __future__ import annotations

import json

import pytest
import requests

from phonon_outbound.api.client import PhononClient
from phonon_outbound_dev.simulator import (
    DEMO_FLOW_ID,
    DEMO_SECURITY_ID,
    PULL_PATH,
    PhononSimulator,
    main,
    parse_drop_webhooks,
)

from .test_api_simulator import Receiver, body_of, make_calls, wait_for

OTHER_FLOW, OTHER_SID = "OthrFlw2", "B" * 64


def pull_body(security_id: str = DEMO_SECURITY_ID, flow_id: str = DEMO_FLOW_ID, **ids) -> bytes:
    doc = {"security-id": security_id, "flow-id": flow_id, **{k.replace("_", "-"): v for k, v in ids.items()}}
    return json.dumps(doc).encode()


@pytest.fixture
def sim():
    with PhononSimulator(seed=3, webhook_delay_s=0.0, flows={DEMO_FLOW_ID: DEMO_SECURITY_ID,
                                                             OTHER_FLOW: OTHER_SID}) as s:
        yield s


def send(sim: PhononSimulator, n: int, prefix: str = "c", shape: str = "202", flow=(DEMO_FLOW_ID, DEMO_SECURITY_ID)):
    """n calls accepted by the create endpoint; returns the answer."""
    sim.shape = shape
    with PhononClient(sim.url) as c:
        answer = c.post(body_of(make_calls(n, prefix), security_id=flow[1], flow_id=flow[0]))
    assert answer.code in (200, 202)
    return answer


def pull(sim: PhononSimulator, body: bytes):
    with PhononClient(sim.pull_url) as c:
        return c.post(body)


def test_a_request_id_brings_back_every_ended_call_of_its_request_shaped_like_the_push(sim):
    # Given a 202-shape answer: a request-id, no phonon-uuid
    answer = send(sim, 3)
    assert answer.call_details is None and answer.request_id
    # When the request-id is pulled
    got = pull(sim, pull_body(request_ids=[answer.request_id], fetch_attempt="ALL"))
    # Then 200 Success with one record per call, shaped like the flow-end push: its uuid, our
    # correlation variable in keys, the attempts
    assert (got.http_status, got.code, got.message) == (200, 200, "Success")
    records = got.payload["data"]
    assert {r["phonon-uuid"] for r in records} == {c["phonon-uuid"] for c in sim.accepted_calls()}
    assert sorted(k["value"] for r in records for k in r["keys"]) == ["job1.c0", "job1.c1", "job1.c2"]
    assert all(r["callDetails"] and r["callDetails"][-1]["hangupCause"] for r in records)
    # and the pull is not a create request: the create endpoint's counters are untouched
    assert (sim.stats()["requests"], len(sim.accepted_calls())) == (1, 3)
    assert sim.stats()["pulls"]["records"] == 3


def test_a_uuid_brings_back_that_call_only_and_last_trims_to_the_last_attempt(sim):
    answer = send(sim, 3, shape="200")
    uuid = answer.call_details[1]["phonon-uuid"]
    sim.webhook_outcomes = {"NO_ANSWER": 1.0}  # two numbers tried, neither answers: two attempts
    sim.shape = "200"
    with PhononClient(sim.url) as c:
        two = c.post(body_of(make_calls(1, "t", numbers=("916262772728", "916262772729"))))
    both = pull(sim, pull_body(phonon_uuids=[uuid, two.call_details[0]["phonon-uuid"]]))
    assert [r["phonon-uuid"] for r in both.payload["data"]] == [uuid, two.call_details[0]["phonon-uuid"]]
    assert len(both.payload["data"][1]["callDetails"]) == 2  # ALL by default
    last = pull(sim, pull_body(phonon_uuids=[two.call_details[0]["phonon-uuid"]], fetch_attempt="LAST"))
    assert len(last.payload["data"][0]["callDetails"]) == 1


def test_213_no_data_until_the_flow_has_ended(sim):
    sim.webhook_delay_s = 3600.0  # the calls are still running
    answer = send(sim, 2)
    got = pull(sim, pull_body(request_ids=[answer.request_id]))
    assert (got.http_status, got.code, got.message) == (200, 213, "No Data Available")
    # an id nobody knows: 213 too
    assert pull(sim, pull_body(phonon_uuids=["0b7c6f0e-nobody"])).code == 213
    assert sim.stats()["pulls"]["no_data"] == 2


def test_at_most_200_ids_in_one_request(sim):
    answer = send(sim, 1)
    ids = [f"u-{i}" for i in range(199)]
    # 200 ids (uuids and request-ids together) are fine
    assert pull(sim, pull_body(phonon_uuids=ids, request_ids=[answer.request_id])).code == 200
    # 201 are refused with a 4xx answer, whatever their kind
    over = pull(sim, pull_body(phonon_uuids=[*ids, "u-199"], request_ids=[answer.request_id]))
    assert (over.http_status, over.code) == (400, 400) and "Max Data List Size" in over.message
    log = sim.pull_log()
    assert [(p["ids"], p["code"]) for p in log] == [(200, 200), (201, 400)]


@pytest.mark.parametrize(("body", "http_status", "code"), [
    (pull_body(security_id="X" * 64, request_ids=["r"]), 202, 202),  # wrong security-id: as create
    (pull_body(flow_id="Unknown1", request_ids=["r"]), 200, 301),
    (json.dumps({"flow-id": DEMO_FLOW_ID, "request-ids": ["r"]}).encode(), 200, 210),
    (pull_body(), 200, 210),  # no id at all
    (pull_body(phonon_uuids="not-a-list"), 200, 210),
    (pull_body(phonon_uuids=[7]), 200, 210),
    (pull_body(request_ids=["r"], fetch_attempt="SOME"), 200, 210),
    (b"[1, 2]", 400, 400),
    (b"\xff not json", 400, 400),
])
def test_a_pull_is_authenticated_and_validated_as_create_is(sim, body, http_status, code):
    got = pull(sim, body)
    assert (got.http_status, got.code) == (http_status, code)
    if code == 202:
        assert got.message == "Invalid Security ID"
    # the log never holds the security-id
    assert DEMO_SECURITY_ID not in json.dumps(sim.pull_log()) and "X" * 64 not in json.dumps(sim.pull_log())


def test_a_flow_gets_only_its_own_calls(sim):
    mine = send(sim, 2, "m")
    theirs = send(sim, 2, "o", flow=(OTHER_FLOW, OTHER_SID))
    got = pull(sim, pull_body(request_ids=[mine.request_id, theirs.request_id]))
    assert sorted(k["value"] for r in got.payload["data"] for k in r["keys"]) == ["job1.m0", "job1.m1"]


def test_pull_faults_answer_the_next_pulls_in_order(sim):
    answer = send(sim, 1)
    sim.set_pull_faults(["http429", "http500", None])
    got = [pull(sim, pull_body(request_ids=[answer.request_id])) for _ in range(3)]
    assert [(a.http_status, a.retry_after_s) for a in got] == [(429, 1.0), (500, None), (200, None)]
    with pytest.raises(ValueError, match="unknown pull fault"):
        sim.set_pull_faults(["partial209"])


def test_other_methods_on_the_pull_path(sim):
    assert requests.get(sim.pull_url, timeout=5).status_code == 405
    assert sim.pull_url.endswith(PULL_PATH)


# ---------------------------------------------------------------------------- pushes lost on purpose
def test_the_first_n_pushes_are_lost_and_can_still_be_pulled():
    with Receiver() as rx, PhononSimulator(webhook_url=rx.url, webhook_delay_s=0.0, drop_webhooks=2, seed=5) as sim:
        answer = send(sim, 5)
        assert wait_for(lambda: sim.stats()["webhooks"]["sent"] == 3)
        assert sim.wait_webhooks_idle(5)
        pushed = {body["phonon-uuid"] for _, body in rx.received}
        assert len(pushed) == 3 and sim.stats()["webhooks"]["lost"] == 2
        lost = {c["phonon-uuid"] for c in sim.accepted_calls()} - pushed
        got = pull(sim, pull_body(phonon_uuids=sorted(lost)))
        assert {r["phonon-uuid"] for r in got.payload["data"]} == lost
        # a later request loses nothing more: N is a count, not a rate
        with PhononClient(sim.url) as c:
            assert c.post(body_of(make_calls(2, "late"))).code == 202
        assert wait_for(lambda: sim.stats()["webhooks"]["sent"] == 5)
        assert answer.request_id


def test_a_ratio_or_named_calls_lose_their_pushes():
    with PhononSimulator(drop_webhooks=0.5, seed=9) as sim:
        send(sim, 200)
        assert 60 < sim.stats()["webhooks"]["lost"] < 140
    with PhononSimulator(drop_webhooks={"c1", "c3"}) as sim:
        send(sim, 5)
        assert sim.stats()["webhooks"]["lost"] == 2
        sim.set_drop_webhooks(None)
        send(sim, 2, "x")
        assert sim.stats()["webhooks"]["lost"] == 2


@pytest.mark.parametrize("bad", [-1, 1.5, "c1", True])
def test_drop_webhooks_refuses_what_it_cannot_mean(bad):
    with pytest.raises(ValueError):
        PhononSimulator(drop_webhooks=bad)


def test_drop_webhooks_on_the_command_line_and_the_admin_endpoint(sim):
    assert (parse_drop_webhooks("3"), parse_drop_webhooks("0.25")) == (3, 0.25)
    with pytest.raises(SystemExit):
        main(["--drop-webhooks", "lots"])
    answer = requests.post(sim.base_url + "/_sim/config", json={"drop_webhooks": 1}, timeout=5).json()
    assert answer["drop_webhooks"] == 1
    send(sim, 2)
    assert sim.stats()["webhooks"]["lost"] == 1
    assert requests.get(sim.base_url + "/_sim/pulls", timeout=5).json() == {"pulls": []}
