"""The metrics the dashboard draws that issue 12 added: `ActiveJobs` (watchdog, every run) and
`CircuitOpen` per flow (limiter.CircuitBreaker, when it opens, is found open, or closes), as
the EMF lines CloudWatch reads them from the function's output."""

from __future__ import annotations

import json

import pytest

from phonon_outbound import observability
from phonon_outbound.limiter import CircuitBreaker
from phonon_outbound.store import MemoryStore

from .test_watchdog import Ctx, _handler, _value, jobs  # noqa: F401 - `jobs` is a fixture


def _emf(out: str, name: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and f'"{name}"' in line]


def test_watchdog_emits_active_jobs_every_run(jobs, capsys):  # noqa: F811
    observability.metrics.clear_metrics()  # an earlier test may have counted without a flush
    _handler()({}, Ctx())
    [blob] = _emf(capsys.readouterr().out, "ActiveJobs")
    assert _value(blob["ActiveJobs"]) == 3  # the fixture's three active jobs (stale or not), not the completed one
    assert blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "PhononOutbound"


@pytest.fixture
def metrics_on(monkeypatch):
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.setattr(observability, "_metrics_on", True)


def test_circuit_state_per_flow(metrics_on, capsys):
    now = [1000.0]
    breaker = CircuitBreaker(MemoryStore(), "Flow0001", open_s=60, clock=lambda: now[0])
    assert breaker.check().allow
    assert _emf(capsys.readouterr().out, "CircuitOpen") == []  # a closed breaker writes nothing per chunk
    breaker.trip("account refused", 403)
    [opened] = _emf(capsys.readouterr().out, "CircuitOpen")
    assert _value(opened["CircuitOpen"]) == 1 and opened["flow"] == "Flow0001" and opened["service"] == "phonon-outbound"
    dims = opened["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
    assert set(dims) == {"flow", "service"}  # the dashboard's SEARCH names exactly these
    assert not breaker.check().allow
    assert _value(_emf(capsys.readouterr().out, "CircuitOpen")[0]["CircuitOpen"]) == 1  # still open: said again
    now[0] += 61
    assert breaker.check().probe
    capsys.readouterr()
    breaker.close()
    [closed] = _emf(capsys.readouterr().out, "CircuitOpen")
    assert _value(closed["CircuitOpen"]) == 0 and closed["flow"] == "Flow0001"
    breaker.close()  # already closed: nothing more
    assert _emf(capsys.readouterr().out, "CircuitOpen") == []


def test_no_metric_lines_when_metrics_are_off(monkeypatch, capsys):
    monkeypatch.setattr(observability, "_metrics_on", False)  # the local run: stdout stays for --json
    CircuitBreaker(MemoryStore(), "Flow0001", clock=lambda: 1.0).trip("x", 403)
    assert _emf(capsys.readouterr().out, "CircuitOpen") == []
