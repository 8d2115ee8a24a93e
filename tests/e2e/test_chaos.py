"""Issue 4's chaos run: 10,000 rows through the local pipeline while the API fails 20% of the
requests transiently and loses 10% of its answers after accepting. Every row must end with a
status, nobody may be called twice (counted at the simulator), no row may be missing."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from phonon_outbound_dev.local.runner import LocalPipeline, RunOptions
from phonon_outbound_dev.simulator import FaultPlan, PhononSimulator

pytestmark = pytest.mark.e2e
FLOW, SID = "Chaos123", "C" * 64


def test_chaos_10000_rows_20pct_transient_10pct_lost_answers(tmp_path: Path):
    path = tmp_path / "chaos.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["client-identifier", "phone"])
        for i in range(10_000):
            w.writerow([f"X-{i:05d}", f"97{i:08d}"])
    faults = FaultPlan(probabilities={"http500": 0.10, "gw206": 0.05, "http429": 0.05, "drop_after_accept": 0.10},
                       seed=42)
    with PhononSimulator(flows={FLOW: SID}, faults=faults, seed=42) as sim:
        opts = RunOptions(flow_id=FLOW, api_url=sim.url, security_id=SID, batch_size=100, concurrency=4,
                          out_dir=tmp_path / "out", webhook_grace_s=0,
                          settings={"max_receive_count": 12, "retry_base_s": 0.05, "retry_max_s": 0.5})
        with LocalPipeline(opts) as pipeline:
            result = pipeline.run([path])
        stats = sim.stats()
    with open(result["files"][0]["report"], newline="", encoding="utf-8") as fh:
        report = list(csv.DictReader(fh))
    assert [int(r["row"]) for r in report] == list(range(1, 10_001)), "a row is missing or out of order"
    assert {r["status"] for r in report} == {"ACCEPTED"}, result
    calls = stats["calls_by_client_identifier"]
    assert len(calls) == 10_000
    assert max(calls.values()) == 1, "somebody was called twice"
    assert stats["checksum_repeats"] > 0  # lost answers really happened and were resolved by resends
    assert result["dead_letter_messages"] == 0
