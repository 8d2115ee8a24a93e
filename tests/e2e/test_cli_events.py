"""`phonon-outbound run` with event files (docs/events-in.md, "Locally"): an EventBridge event
as it reaches a target goes through the intake function, then the usual local pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phonon_outbound.reports import HEADER
from tests.e2e.test_cli import ROOT, read_report, run_cli, write_csv

pytestmark = pytest.mark.e2e


def test_the_sample_event_and_a_contact_file_run_side_by_side(tmp_path):
    event = ROOT / "events" / "eventbridge-calls-requested.json"
    sample = json.loads(event.read_text())
    csv_file = write_csv(tmp_path / "contacts.csv", 3, prefix="CSV")
    proc = run_cli("run", "--json", "--flow-id", "DemoFlw1", "--out", str(tmp_path / "out"), str(event),
                   str(csv_file), state=tmp_path / "state")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev, csv_entry = json.loads(proc.stdout)["files"]
    assert ev["key"] == f"incoming/requests/eventbridge/{sample['id']}.json"
    assert (ev["rows"], ev["accepted"]) == (len(sample["detail"]["calls"]), len(sample["detail"]["calls"]))
    assert [r["client-identifier"] for r in read_report(ev["report"])] == [
        c["client-identifier"] for c in sample["detail"]["calls"]]
    assert Path(ev["report"]).name.startswith("eventbridge-calls-requested.json.")
    assert (csv_entry["rows"], csv_entry["accepted"]) == (3, 3)


def test_an_event_refused_whole_is_reported_with_its_reason_and_exits_1(tmp_path):
    bad = tmp_path / "too-many.json"
    bad.write_text(json.dumps({"id": "e-1", "source": "com.example", "detail-type": "Outbound Calls Requested",
                               "detail": {"calls": [{}] * 10_001}}))
    one = ROOT / "events" / "eventbridge-call-requested-one.json"
    proc = run_cli("run", "--json", "--out", str(tmp_path / "out"), str(bad), str(one), state=tmp_path / "state")
    assert proc.returncode == 1, proc.stderr[-3000:]
    refused, good = json.loads(proc.stdout)["files"]
    assert refused["error"] == "too many calls: 10,001 (at most 10,000 per request)" and refused["rows"] == 0
    assert Path(refused["report"]).read_text() == ",".join(HEADER) + "\n"  # the header line only
    assert (good["rows"], good["accepted"]) == (1, 1)
