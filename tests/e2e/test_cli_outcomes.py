"""Outcomes in the report, end to end on the local pipeline (202 shape: the API answers with a
request-id only, the outcome of every call comes later in Phonon's flow-end push): the bundled
simulator pushes one flow-end webhook per accepted call, the webhook records each row's
outcome and asks the report function (the local report worker, through the report queue) for
a rewrite, and the run's final write after the webhook grace has an outcome on every row."""

from __future__ import annotations

import csv
import json
import time

import pytest

from tests.e2e.test_cli import write_csv

pytestmark = pytest.mark.e2e

ROWS = 5_000


def test_a_5000_row_run_reports_an_outcome_on_every_accepted_row_after_the_pushes(tmp_path):
    from phonon_outbound_dev.local.runner import LocalPipeline, RunOptions

    data = write_csv(tmp_path / "campaign.csv", ROWS)
    # Pushes unpaced by the simulator, four handled at a time by the local webhook (a push
    # waits on the emulated DynamoDB's answers), and a grace long enough for all of them: the
    # run ends once the simulator has none pending.
    opts = RunOptions(flow_id="DemoFlw1", out_dir=tmp_path / "out", shape="202", webhook_rate=None,
                      webhook_concurrency=4, webhook_grace_s=600.0,
                      # `Outbound Call Completed` has its own tests: one emulated call less per push
                      settings={"publish_call_events": False})
    started = time.monotonic()
    with LocalPipeline(opts) as pipeline:
        result = pipeline.run([data])
    elapsed = time.monotonic() - started
    [entry] = result["files"]
    assert entry["accepted"] == ROWS and result["webhooks_received"] == ROWS, result
    assert "webhooks_pending" not in result and "internal_errors" not in result, result
    with open(entry["report"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == ROWS and all(r["status"] == "ACCEPTED" for r in rows)
    # every accepted row has its outcome (none PENDING), its phonon-uuid, duration and attempts
    assert {r["outcome"] for r in rows} == {"ANSWERED"}, {r["outcome"] for r in rows}
    assert all(r["phonon-uuid"] and r["answered"] == "yes" and int(r["duration_s"]) >= 20 and r["attempts"] == "1"
               and r["hangup_cause"] == "NORMAL_CLEARING" and r["ended_at"] for r in rows)
    with open(entry["report"].replace(".results.csv", ".summary.json"), encoding="utf-8") as fh:
        summary = json.load(fh)
    assert summary["outcomes"] == {"arrived": ROWS, "pending": 0, "final": True}
    print(f"\n5,000-row run with outcomes: {elapsed:.1f} s")  # a figure for the report, not asserted
