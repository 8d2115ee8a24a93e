"""Missed webhooks, end to end (issue 12, item 2): a local run in the bulk endpoint's 202 shape
whose simulator loses some flow-end pushes on purpose; the reconciler (run once after the
webhook grace, as the schedule would) pulls their outcomes before the final report write, so
every ACCEPTED row of the report has its phonon-uuid — which, in the 202 shape, only a push or
a pull can bring."""

from __future__ import annotations

import json

import pytest

from phonon_outbound import wiring
from phonon_outbound_dev.local.runner import LocalPipeline, RunOptions
from tests.e2e.test_cli import read_report, run_cli, write_csv

pytestmark = pytest.mark.e2e

LOST = 15


def test_pushes_lost_on_purpose_are_pulled_before_the_final_report(tmp_path):
    data = write_csv(tmp_path / "lossy.csv", 300)
    opts = RunOptions(flow_id="DemoFlw1", batch_size=50, out_dir=tmp_path / "out", shape="202",
                      drop_webhooks=LOST, webhook_rate=None)
    with LocalPipeline(opts) as pipeline:
        result = pipeline.run([data])
        calls = pipeline.sim.accepted_calls()
        job = next(iter(wiring.store().jobs.jobs_for_key(pipeline.bucket, "incoming/lossy.csv")))["job"]
        rows = list(wiring.store().rows.iter_outcomes(job))
    lost = {c["phonon-uuid"] for c in calls if c.get("push-lost")}
    # Given 300 calls accepted, 15 of whose pushes Phonon "sent" and we never got
    assert len(calls) == 300 and len(lost) == LOST
    assert result["webhooks_received"] <= 300 - LOST
    # Then the reconciler pulled them (by request-id: the 202 answer gave no uuid)
    assert result["reconciler"]["pulled"] >= LOST and result["reconciler"]["no_data"] == 0
    # and the final report has every row ACCEPTED with its phonon-uuid, the lost ones included
    report = read_report(result["files"][0]["report"])
    assert [r["status"] for r in report] == ["ACCEPTED"] * 300
    assert {r["phonon-uuid"] for r in report} == {c["phonon-uuid"] for c in calls}
    assert lost <= {r["phonon_uuid"] for r in rows}
    # every row has its outcome in the report (none PENDING), the lost ones' by pull
    assert {r["outcome"] for r in report} == {"ANSWERED"}
    # (a push still on its way when the reconciler ran is pulled too: its outcome says "pull")
    assert lost <= {r["phonon_uuid"] for r in rows if r.get("outcome_src") == "pull"}
    assert all(r.get("outcome_src") in ("webhook", "pull") for r in rows)


def test_run_drop_webhooks_on_the_command_line(tmp_path):
    data = write_csv(tmp_path / "cli.csv", 30)
    proc = run_cli("run", "--json", "--flow-id", "DemoFlw1", "--drop-webhooks", "4", "--no-state", "--out",
                   str(tmp_path / "out"), str(data))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["webhooks_received"] <= 26 and result["reconciler"]["pulled"] >= 4
    assert all(r["phonon-uuid"] for r in read_report(result["files"][0]["report"]))
    bad = run_cli("run", "--flow-id", "DemoFlw1", "--drop-webhooks", "-2", str(data))
    assert bad.returncode == 2 and "--drop-webhooks" in bad.stderr
