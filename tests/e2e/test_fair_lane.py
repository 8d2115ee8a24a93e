"""The local run serves a small job's chunk from the express lane while the chunk queue still
holds a bigger job's backlog (docs/operating.md, "Fair share between jobs"). Order only, read
from the simulator's log of accepted calls: no timing is asserted (the figures are `make bench`'s,
tests/bench/fair_bench.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from phonon_outbound_dev.local.runner import LocalPipeline, RunOptions
from phonon_outbound_dev.simulator import PhononSimulator
from tests.bench.fair_bench import write_file

pytestmark = pytest.mark.e2e
FLOW, SID = "FairLane", "L" * 64


def run(tmp_path: Path, express_max_rows: int) -> list[str]:
    big, small = tmp_path / "campaign.csv", tmp_path / "urgent.csv"
    write_file(big, 60, "B", 700_000_000)  # 12 chunks of 5 at 10 calls/s: a 6 s backlog
    write_file(small, 3, "S", 800_000_000)  # ingested after the campaign's 12 chunks are queued
    with PhononSimulator(flows={FLOW: SID}, seed=3) as sim:
        opts = RunOptions(flow_id=FLOW, api_url=sim.url, security_id=SID, rate=600, batch_size=5, concurrency=1,
                          out_dir=tmp_path / f"out-{express_max_rows}", webhook_grace_s=0, state_dir=None,
                          settings={"express_max_rows": express_max_rows})
        with LocalPipeline(opts, progress=io.StringIO()) as pipeline:
            result = pipeline.run([big, small])
        order = [c["client-identifier"] for c in sim.accepted_calls()]
    assert result["totals"]["accepted"] == 63, result
    return order


def test_a_small_jobs_chunk_goes_out_from_the_express_lane_before_the_campaigns_backlog_is_drained(tmp_path):
    order = run(tmp_path, express_max_rows=10)
    first_small = next(i for i, cid in enumerate(order) if cid.startswith("S-"))
    # Then at least a third of the campaign's calls are sent after the small job's first call
    # (without the lane the small job's chunk is queued behind all 12: see the next test)
    assert sum(1 for cid in order[first_small:] if cid.startswith("B-")) >= 20, order


def test_without_the_express_lane_the_small_job_waits_behind_the_backlog(tmp_path):
    order = run(tmp_path, express_max_rows=0)
    first_small = next(i for i, cid in enumerate(order) if cid.startswith("S-"))
    assert sum(1 for cid in order[first_small:] if cid.startswith("B-")) < 20, order
