"""`phonon-outbound` as a user runs it: a separate process, real loopback HTTP, the embedded AWS."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from phonon_outbound_dev.simulator import FaultPlan, PhononSimulator

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "phonon_outbound_dev.cli"]
FLOW = "Flow1234"
SID = "S" * 64

pytestmark = pytest.mark.e2e


def run_cli(*args: str, timeout: float = 240, cwd: Path | None = None, env: dict | None = None,
            state: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in a child process. `run` keeps its duplicate-protection state in `state`
    (a per-test folder) unless the arguments say otherwise."""
    full = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "outbound"), str(ROOT / "devkit")]), **(env or {})}
    full.pop("AWS_ENDPOINT_URL", None)
    if args[:1] == ("run",) and "--no-state" not in args and "--state-dir" not in args:
        args = (*args[:1], "--state-dir", str(state or Path(tempfile.mkdtemp(prefix="po-state-"))), *args[1:])
    return subprocess.run([*CLI, *args], cwd=cwd or ROOT, env=full, capture_output=True, text=True, timeout=timeout)


def write_csv(path: Path, n: int, prefix: str = "E") -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["client-identifier", "phone", "Name"])
        for i in range(n):
            w.writerow([f"{prefix}-{i:05d}", f"98{i:08d}", f"Name {i}"])
    return path


def read_report(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_make_run_sample_file_every_row_has_a_status(tmp_path):
    proc = run_cli("run", "--json", "--out", str(tmp_path), "--flow-id", "DemoFlw1", "events/sample-contacts.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    f = result["files"][0]
    assert f["rows"] == 24 and f["accepted"] == 24
    report = read_report(f["report"])
    assert len(report) == 24 and all(r["status"] == "ACCEPTED" and r["request-id"] for r in report)
    # the simulator's flow-end webhooks came back through the local webhook handler
    assert result["webhooks_received"] == 24
    assert all(r["phonon-uuid"] for r in report)
    assert "rows/s" in proc.stderr and "calls/min (limit 30,000)" in proc.stderr  # progress on stderr


@pytest.mark.parametrize("shape", ["200", "202"])
def test_1200_rows_against_an_independent_server_make_exactly_three_requests(tmp_path, shape):
    data = write_csv(tmp_path / "big.csv", 1200)
    with PhononSimulator(shape=shape, flows={FLOW: SID}) as sim:
        proc = run_cli("run", "--json", "--api-url", sim.url, "--flow-id", FLOW, "--security-id", SID,
                       "--out", str(tmp_path / "out"), str(data))
        stats = sim.stats()
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["totals"]["accepted"] == 1200 and result["api_requests"] == 3
    assert stats["requests"] == 3
    assert len(stats["calls_by_client_identifier"]) == 1200
    assert set(stats["calls_by_client_identifier"].values()) == {1}
    report = read_report(result["files"][0]["report"])
    assert all(r["request-id"] for r in report)
    if shape == "200":
        assert all(r["phonon-uuid"] for r in report)
        assert len({r["phonon-uuid"] for r in report}) == 1200


def test_an_account_level_refusal_ends_the_run_with_a_reason_and_nothing_accepted(tmp_path):
    data = write_csv(tmp_path / "acct.csv", 50)
    with PhononSimulator(flows={FLOW: SID}, faults=FaultPlan(probabilities={"http403": 1.0})) as sim:
        proc = run_cli("run", "--json", "--api-url", sim.url, "--flow-id", FLOW, "--security-id", SID,
                       "--out", str(tmp_path / "out"), str(data))
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert "403" in result["error"] or "whitelist" in result["error"].lower()
    assert result["totals"]["accepted"] == 0 and result["totals"]["failed"] == 50
    report = read_report(result["files"][0]["report"])
    assert len(report) == 50 and all(r["status"] == "FAILED" and "not sent" in r["reason"] for r in report)
    # every FAILED row keeps its client-identifier, also those of chunks never taken
    assert [r["client-identifier"] for r in report] == [f"E-{i:05d}" for i in range(50)]


def test_a_wrong_security_id_is_an_account_level_stop(tmp_path):
    data = write_csv(tmp_path / "sid.csv", 5)
    with PhononSimulator(flows={FLOW: SID}) as sim:
        proc = run_cli("run", "--json", "--api-url", sim.url, "--flow-id", FLOW, "--security-id", "X" * 64,
                       "--out", str(tmp_path / "out"), str(data))
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert "security" in result["error"].lower()
    assert result["totals"]["accepted"] == 0


def test_check_writes_the_same_report_without_sending(tmp_path):
    proc = run_cli("check", "--json", "--flow-id", "DemoFlw1", "--out", str(tmp_path), "events/sample-contacts-mixed.csv")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    report = read_report(result["files"][0]["report"])
    by_id = {r["row"]: r for r in report}
    assert by_id["1"]["status"] == "ACCEPTED"
    # the reason names the column and masks the value (no cell value echoed raw)
    assert by_id["2"]["status"] == "REJECTED" and "Phone" in by_id["2"]["reason"]
    assert "12345" not in by_id["2"]["reason"]
    assert result["api_requests"] == 0


def test_usage_errors_exit_2_and_send_nothing(tmp_path):
    assert run_cli("run", str(tmp_path / "missing.csv")).returncode == 2
    assert run_cli("run", "--batch-size", "0", "events/sample-contacts.csv").returncode == 2
    assert run_cli("run", "--api-url", "http://127.0.0.1:9/x", "--flow-id", FLOW,
                   "events/sample-contacts.csv").returncode == 2


def test_a_batch_size_bigger_than_one_second_of_the_rate_is_lowered_and_said_and_one_dispatcher_is_two(tmp_path):
    # Given 600 records/min (10 a second) and a request for 50-call chunks
    data = write_csv(tmp_path / "slow.csv", 30)
    with PhononSimulator(flows={FLOW: SID}, rate_per_minute=600) as sim:
        proc = run_cli("run", "--json", "--rate", "600", "--batch-size", "50", "--concurrency", "1", "--api-url", sim.url,
                       "--flow-id", FLOW, "--security-id", SID, "--out", str(tmp_path / "out"), str(data))
        stats = sim.stats()
    # Then the run says so and sends 10-call requests, none refused for rate
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--batch-size 50 lowered to 10" in proc.stderr
    assert "--concurrency 1 raised to 2" in proc.stderr  # as AWS's event source, never fewer than two
    assert json.loads(proc.stdout)["totals"]["accepted"] == 30
    assert stats["requests"] == 3 and stats.get("rate_refusals", 0) == 0
