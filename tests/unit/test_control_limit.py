"""The `limit` action of control.py (docs/operating.md, "Cap a job's or a flow's rate"): what it
accepts, what it refuses and why, and what it answers, on the in-memory store. Given/When/Then."""

from __future__ import annotations

import pytest

from phonon_outbound.control import ControlError, ControlService, parse_cap
from phonon_outbound.store.memory import MemoryStore

FLOW = "Flow1234"


@pytest.fixture
def service() -> ControlService:
    store = MemoryStore()
    store.jobs.create_job("j1", {"key": "incoming/a.csv", "version": "v1", "flow": FLOW})
    store.jobs.index_job("contacts", "incoming/a.csv", "j1", {"version": "v1", "uploaded_at": "2026-12-01T00:00:00Z"})
    return ControlService(store, "contacts", lambda job: None, max_per_minute=600)


@pytest.mark.parametrize("value", [1, 600, "42", " 42 ", 42.0])
def test_a_whole_number_from_1_to_the_limit_is_a_cap(value):
    assert parse_cap(value, 600) == int(float(str(value).strip()))


@pytest.mark.parametrize("value", [0, "0", "none", " None ", "NONE", 0.0])
def test_zero_or_none_removes_the_cap(value):
    assert parse_cap(value, 600) is None


@pytest.mark.parametrize("value", [None, "", "  "])
def test_no_value_is_refused_saying_what_is_needed(value):
    with pytest.raises(ControlError, match="limit needs a value: calls per minute, a whole number from 1 to 600"):
        parse_cap(value, 600)


@pytest.mark.parametrize("value", ["abc", "1e3", "12.5", 1.5, True, False, "-5", "١٢", [100], {"n": 1}, "4155551234x"])
def test_anything_else_is_refused_with_the_rule_and_never_the_value(value):
    with pytest.raises(ControlError) as err:
        parse_cap(value, 600)
    text = str(err.value)
    assert "calls per minute, a whole number from 1 to 600" in text and "0 / none to remove the cap" in text
    assert "4155551234" not in text


@pytest.mark.parametrize("value", [601, "601", -1, 4_155_551_234, "9" * 10_000, 1e300])
def test_a_cap_out_of_range_is_refused_and_its_value_not_echoed(value):
    with pytest.raises(ControlError, match="out of range") as err:
        parse_cap(value, 600)
    assert "4155551234" not in str(err.value)


def test_capping_a_job_by_id_or_by_key_answers_like_the_other_actions(service):
    # When a job is capped by its id
    assert service.apply("limit", {"job": "j1"}, per_minute=100) == {
        "action": "limit", "job": "j1", "state": "running", "already": False, "rate_cap": 100}
    # Then the same cap again changes nothing; by its file's key (and version) names the same job
    assert service.apply("LIMIT", {"key": "a.csv", "version": "v1"}, per_minute="100") == {
        "action": "limit", "job": "j1", "key": "incoming/a.csv", "version": "v1", "state": "running",
        "already": True, "rate_cap": 100}
    # A paused job keeps its state in the answer; a cap is removed with none
    service.apply("pause", {"job": "j1"})
    assert service.apply("limit", {"job": "j1"}, per_minute="none") == {
        "action": "limit", "job": "j1", "state": "paused", "already": False, "rate_cap": None}
    assert service.store.jobs.control("j1", FLOW).job_cap is None


def test_a_bad_value_is_refused_before_anything_is_written(service):
    with pytest.raises(ControlError, match="out of range"):
        service.apply("limit", {"job": "j1"}, per_minute=601)  # the service's global limit is 600
    with pytest.raises(ControlError, match="limit needs a value"):
        service.apply("limit", {"job": "j1"})
    assert "rate_cap" not in service.store.jobs.get_job("j1")


def test_a_finished_or_cancelled_job_keeps_its_cap_and_says_so(service):
    service.apply("limit", {"job": "j1"}, per_minute=50)
    service.apply("cancel", {"job": "j1"})
    assert service.apply("limit", {"job": "j1"}, per_minute=10) == {
        "action": "limit", "job": "j1", "state": "cancelled", "already": True, "rate_cap": 50}


def test_capping_a_flow_answers_with_the_flows_state_and_cap(service):
    assert service.apply("limit", {"flow": FLOW}, per_minute=300) == {
        "action": "limit", "flow": FLOW, "state": "running", "already": False, "rate_cap": 300}
    service.apply("pause", {"flow": FLOW})
    assert service.apply("limit", {"flow": FLOW}, per_minute=300) == {
        "action": "limit", "flow": FLOW, "state": "paused", "already": True, "rate_cap": 300}
    assert service.apply("limit", {"flow": FLOW}, per_minute=0)["rate_cap"] is None
    assert service.store.jobs.flow_control(FLOW).cap is None


def test_an_unknown_action_names_limit_among_the_actions(service):
    with pytest.raises(ControlError, match="pause, resume, cancel or limit"):
        service.apply("throttle", {"job": "j1"})
