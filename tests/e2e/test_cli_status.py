"""The picture of a local run (docs/operating.md, "Watching a campaign"): `run` ends with a
short summary (on stderr with --json, so stdout stays one JSON object) and `run --html`
writes a one-page report; a file named like markup stays text in it."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from .test_cli import read_report, run_cli, write_csv

pytestmark = pytest.mark.e2e


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text += data


def test_run_ends_with_a_summary_and_writes_the_html_report(tmp_path):
    hostile = write_csv(tmp_path / "<script>alert(1)<\\script>.csv", 300, prefix="H")
    plain = write_csv(tmp_path / "leads.csv", 200, prefix="P")
    page = tmp_path / "report.html"
    # 500 calls at 1,800 a minute: ~17 s of sending, over job_status.MIN_SPAN_S, so the run's
    # calls per minute is measured (a shorter run says None)
    proc = run_cli("run", "--json", "--rate", "1800", "--out", str(tmp_path / "out"), "--flow-id", "DemoFlw1",
                   "--html", str(page), str(hostile), str(plain))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # stdout is the one JSON object; the summary went to stderr
    pic = result["picture"]
    assert pic["calls_sent"] == 500 and pic["limit"] == 1800 and pic["dead_letters"] == 0
    # measured (not None) and never over the limit (the limiter's promise); how close it comes
    # depends on the machine's load, which is a benchmark's business, not this test's
    assert pic["calls_per_minute"] is not None and 0 < pic["calls_per_minute"] <= 1800 * 1.05
    assert sorted(j["accepted"] for j in pic["jobs"]) == [200, 300]
    # the outcome mix covers every accepted row: each either has its outcome or is waiting for it
    assert sum(pic["outcomes"].values()) == 500
    rows = [r for f in result["files"] for r in read_report(f["report"])]
    answered = sum(1 for r in rows if r.get("outcome") == "ANSWERED")  # COMPLETED is "other"
    assert pic["outcomes"]["answered"] == answered
    assert "calls: 500 sent" in proc.stderr and "limit 1,800/min" in proc.stderr
    assert f"webhooks received: {result['webhooks_received']:,}" in proc.stderr
    # the page: the two jobs, the chart's bars adding up to the calls sent, the name as text
    text = page.read_text(encoding="utf-8")
    parsed = Tags()
    parsed.feed(text)
    assert "script" not in {t for t, _ in parsed.tags}
    assert hostile.name in parsed.text
    assert len([a for t, a in parsed.tags if t == "section"]) == 2
    calls = 0
    for start in [i for i in range(len(text)) if text.startswith("<svg", i)]:
        svg = ET.fromstring(text[start:text.index("</svg>", start) + len("</svg>")])
        calls += sum(int(r.get("data-calls")) for r in svg.iter("{http://www.w3.org/2000/svg}rect"))
    assert calls == 500


def test_status_of_a_live_local_run_from_another_terminal(tmp_path):
    import phonon_outbound_dev.stack  # noqa: F401 - connect(): the live run's live.json
    from phonon_outbound_dev.simulator import PhononSimulator

    from .test_cli_control import FLOW, SID, cli, live_run, wait_for

    # Given a local run of 300 rows at 600 calls a minute (30 s of sending) in another process
    with PhononSimulator(flows={FLOW: SID}, rate_per_minute=600) as sim, live_run(tmp_path, sim, 300) as (child, state):
        wait_for(lambda: sim.stats()["calls_accepted"] >= 60, 120, child)
        # When the operator asks for the active jobs, then for the file's job
        active = cli("status", "--state-dir", str(state), "--json")
        assert active.returncode == 0, active.stderr
        doc = json.loads(active.stdout)
        assert doc["active_total"] == 1 and doc["limit"] == 600 and "ChunkQueue" in doc["queues"]
        one = cli("status", "--key", "slow.csv", "--state-dir", str(state), "--json")
        assert one.returncode == 0, one.stderr
        job = json.loads(one.stdout)
        # Then it shows the job sending, with calls settled and a rate near the limit's
        assert job["state"] in ("ingesting", "sending") and job["rows"] == 300
        assert 0 < job["sent"] < 300 and job["counts"]["accepted"] == job["sent"]
        assert 0 < job["calls_per_minute"] <= 600 * 1.1 and job["eta_s"] is not None
        # and one call can be found by its client-identifier in the job's rows
        found = cli("status", "--key", "slow.csv", "--client-id", "E-00000", "--state-dir", str(state), "--json")
        assert found.returncode == 0, found.stderr
        [call] = json.loads(found.stdout)["calls"]
        assert call["row"] == 1 and call["status"] == "ACCEPTED" and call["request_id"]
        # a paused job says so, with its reason
        assert cli("pause", "--key", "slow.csv", "--reason", "check the script", "--state-dir", str(state)
                   ).returncode == 0
        text = cli("status", "--key", "slow.csv", "--state-dir", str(state))
        assert "paused: check the script" in text.stdout
        assert cli("resume", "--key", "slow.csv", "--state-dir", str(state)).returncode == 0
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err[-3000:]
    # Once the run has ended, status shows what the run kept: the job as it ended
    ended = cli("status", "--key", "slow.csv", "--state-dir", str(state), "--json")
    assert ended.returncode == 0, ended.stderr
    assert json.loads(ended.stdout)["state"] == "completed" and json.loads(ended.stdout)["last_run"]["ended_at"]


def test_status_after_a_local_run_reads_what_the_run_kept(tmp_path):
    # Given a local run of a small file that has ended
    data = write_csv(tmp_path / "leads.csv", 12, prefix="K")
    phones = [line.split(",")[1] for line in data.read_text().splitlines()[1:]]
    state = tmp_path / "state"
    proc = run_cli("run", "--json", "--out", str(tmp_path / "out"), "--flow-id", "DemoFlw1", "--state-dir", str(state),
                   str(data))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    [job] = [j["job"] for j in result["picture"]["jobs"]]
    report = {r["client-identifier"]: r for r in read_report(result["files"][0]["report"])}
    row = report["K-00003"]

    def status(*args: str):
        done = run_cli("status", "--state-dir", str(state), *args)
        assert not any(p in done.stdout + done.stderr for p in phones)  # never a phone number
        return done

    # When a call is looked up by its client-identifier (no run is live)
    found = status("--client-id", "K-00003", "--json")
    assert found.returncode == 0, found.stderr
    doc = json.loads(found.stdout)
    [call] = doc["calls"]
    # Then it is that row of the run's report, in the shape a live lookup has
    assert (call["job"], call["row"], call["client_identifier"]) == (job, int(row["row"]), "K-00003")
    assert (call["status"], call["phonon_uuid"], call["request_id"]) == (row["status"], row["phonon-uuid"],
                                                                         row["request-id"])
    assert call["outcome"] == row["outcome"] and call["outcome"] not in ("", "PENDING")
    assert call["duration"] == int(row["duration_s"]) and call["dtmf"] == row["dtmf"]
    assert call["ended_at"] == row["ended_at"] and doc["last_run"]["ended_at"]
    text = status("--client-id", "K-00003")
    assert text.returncode == 0 and "last local run, which ended at" in text.stdout
    assert row["phonon-uuid"] in text.stdout and ["outcome:", row["outcome"]] in [line.split() for line in text.stdout.splitlines()]
    assert status("--client-id", "K-99999").returncode == 2
    # and the plain status shows the job as it ended, with its report
    plain = status("--json")
    assert plain.returncode == 0, plain.stderr
    [pic] = json.loads(plain.stdout)["jobs"]
    assert pic["job"] == job and pic["state"] == "completed" and pic["counts"]["accepted"] == result["files"][0]["accepted"]
    assert pic["report"] == str(Path(result["files"][0]["report"]).resolve())
    text = status()
    assert text.returncode == 0 and "last local run, which ended at" in text.stdout and job in text.stdout
    assert not any(p in (state / "last-run.json").read_text() for p in phones)
    # A run with --no-state keeps nothing: the earlier run's snapshot no longer passes for the last run
    again = run_cli("run", "--out", str(tmp_path / "out2"), "--flow-id", "DemoFlw1", "--state-dir", str(state),
                    "--no-state", str(data))
    assert again.returncode == 0, again.stderr[-3000:]
    gone = status()
    assert gone.returncode == 2 and "no local run is running" in gone.stderr and "--no-state" in gone.stderr
