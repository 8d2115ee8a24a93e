"""`phonon-outbound status` (devkit job_status.py): a job's picture, the active jobs, the lookup of
one call and the CLI around them, on the in-memory store and on DynamoDB (moto) alike
(`any_store`). The jobs are written through the store's own repositories, as ingest and
dispatch write them; nothing of job_status.py is replaced."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from phonon_outbound.control import job_of_key
from phonon_outbound.settings import Settings
from phonon_outbound_dev import cli
from phonon_outbound_dev import job_status as st

NOW = 1_800_000_000


def _settle(store, job: str, chunk: int, rows: range, at: int, status: str = "ACCEPTED", **extra) -> None:
    """A settled chunk as dispatch records it: outcomes (with `at`), then counted on the job."""
    outcomes = [{"row": r, "status": status, "cid": f"C-{r}", "request_id": f"req-{chunk}",
                 "phonon_uuid": f"uuid-{r}" if status == "ACCEPTED" else "", "reason": "", "numbers": []} for r in rows]
    store.rows.put_outcomes(job, chunk, outcomes, at)
    store.ledger.count_settled(job, chunk, **{status.lower(): len(rows)})


def _job(store, job: str = "job-1", key: str = "incoming/leads.csv", **attrs) -> str:
    store.jobs.create_job(job, {"bucket": "b", "key": key, "flow": "DemoFlw1", "row_count": 1000,
                                "status": "DISPATCHING", "checkpoint_row": 600, "rows_queued": 580, "next_chunk": 6,
                                **attrs})
    store.jobs.index_job("b", key, job, {"version": "v1", "uploaded_at": "2026-11-30T10:00:00Z"})
    return job


def test_picture_counts_rate_and_eta(any_store):
    job = _job(any_store)
    # 5 chunks of 100 rows: two settled three minutes ago, three within the last minute (one failed).
    _settle(any_store, job, 0, range(1, 101), NOW - 180)
    _settle(any_store, job, 1, range(101, 201), NOW - 170)
    _settle(any_store, job, 2, range(201, 301), NOW - 50)
    _settle(any_store, job, 3, range(301, 401), NOW - 30, status="FAILED")
    _settle(any_store, job, 4, range(401, 501), NOW - 5, status="DUPLICATE")
    p = st.picture(any_store, job, limit=30_000, now=NOW)
    assert p is not None
    assert p.counts["accepted"] == 300 and p.counts["failed"] == 100 and p.counts["duplicate"] == 100
    assert p.sent == 400 and p.chunks_settled == 5 and p.rows_read == 600 and p.rows == 1000
    assert p.rows_queued == 580 and "580 queued" in "\n".join(st.picture_lines(p))
    # calls per minute now: accepted + failed of the chunks settled in the last 60 s (not the duplicates)
    assert p.calls_per_minute == 200
    # ETA: 500 rows left at the rows settled in the last minute (300/min) = 100 s
    assert p.eta_s == 100
    assert p.state == "ingesting"  # ingest_done not set yet
    # the timeline: one entry per minute from the first settled chunk to the last, empty minutes too
    assert sum(n for _, n in p.timeline) == 400
    assert p.bin_s == 10  # everything within 10 minutes: 10 s steps
    assert [m for m, _ in p.timeline] == list(range(p.timeline[0][0], p.timeline[-1][0] + 10, 10))
    assert st.per_minute(st.settled_chunks(any_store, job)) == [(NOW - 180, 200), (NOW - 120, 0), (NOW - 60, 200)]
    # achieved while sending: 400 calls over 5 chunks spanning 175 s · 5/4
    assert p.achieved_per_minute == int(400 / (175 * 5 / 4) * 60)
    # too short to measure at whole seconds: not said
    assert st.achieved_rate([{"at": 0, "accepted": 100}, {"at": 4, "accepted": 100}]) is None
    # the mix: every accepted row is still waiting (no outcome fields yet)
    assert p.mix is not None and p.mix["groups"]["waiting"] == 300


def test_outcome_mix_groups_outcome_fields():
    rows = [{"row": 1, "status": "ACCEPTED", "outcome": "ANSWERED", "outcome_at": 1},
            {"row": 2, "status": "ACCEPTED", "outcome": "NO_ANSWER", "outcome_at": 1},
            {"row": 3, "status": "ACCEPTED", "outcome": "BUSY", "outcome_at": 1},
            {"row": 4, "status": "ACCEPTED", "outcome": "FAILED", "outcome_at": 1},
            {"row": 5, "status": "ACCEPTED", "outcome": "PENDING"},
            {"row": 6, "status": "ACCEPTED"},
            {"row": 7, "status": "FAILED", "reason": "refused"},  # never accepted: not in the mix
            {"row": 8, "status": "ACCEPTED", "outcome": "DELIVERED", "outcome_at": 1}]
    mix = st.outcome_mix(rows)
    assert mix["groups"] == {"answered": 1, "no answer": 2, "failed": 1, "delivered": 1, "other": 0, "waiting": 2}
    assert mix["values"] == {"ANSWERED": 1, "NO_ANSWER": 1, "BUSY": 1, "FAILED": 1, "DELIVERED": 1}


@pytest.mark.parametrize(("attrs", "state"), [
    ({"ingest_done": False}, "ingesting"),
    ({"ingest_done": True}, "sending"),
    ({"ingest_done": True, "paused_reason": "operator"}, "paused"),
    ({"ingest_done": True, "cancelled_reason": "dropped by mistake"}, "cancelled"),
    ({"completed": True, "status": "COMPLETED", "accepted": 10, "outcomes": 4}, "waiting for outcomes"),
    ({"completed": True, "status": "COMPLETED", "accepted": 10, "outcomes": 10}, "completed"),
    ({"completed": True, "status": "COMPLETED", "accepted": 10, "outcomes": 4, "report_final": True}, "completed"),
    ({"completed": True, "status": "REJECTED", "error": "no phone column"}, "rejected"),
])
def test_state(any_store, attrs, state):
    job = _job(any_store, **attrs)
    p = st.picture(any_store, job, limit=100, now=NOW)
    assert p is not None and p.state == state
    if state in ("paused", "cancelled", "rejected"):
        assert p.reason


def test_a_jobs_and_its_flows_caps_are_shown_while_it_runs(any_store):
    # Given a job with no cap: nothing about caps is shown
    job = _job(any_store, ingest_done=True)
    p = st.picture(any_store, job, limit=30_000, now=NOW)
    assert p is not None and p.cap is None and not any(line.startswith("cap:") for line in st.picture_lines(p))
    # When the operator caps the job at 200/min: its line says so, and so does the active list
    any_store.jobs.set_job_cap(job, 200)
    p = st.picture(any_store, job, limit=30_000, now=NOW)
    assert p is not None and (p.job_cap, p.flow_cap, p.cap) == (200, None, 200)
    assert "cap:         200 calls/min (the job's)" in st.picture_lines(p)
    assert "(cap 200)" in st.active_lines([p])[1]
    # When its flow is capped lower: the flow's cap binds, and both are said
    any_store.jobs.set_flow_cap("DemoFlw1", 100)
    p = st.picture(any_store, job, limit=30_000, now=NOW)
    assert p is not None and p.cap == 100 and p.to_dict()["flow_cap"] == 100 and p.to_dict()["job_cap"] == 200
    assert "cap:         100 calls/min (flow DemoFlw1's; the job's own is 200)" in st.picture_lines(p)
    # A job cancelled meanwhile no longer reads its flow's cap
    any_store.jobs.cancel_job(job, "stop")
    p = st.picture(any_store, job, limit=30_000, now=NOW)
    assert p is not None and p.flow_cap is None and p.cap == 200


def test_active_jobs_and_key_resolution(any_store):
    a = _job(any_store, "job-a", "incoming/a.csv")
    _job(any_store, "job-b", "incoming/b.csv")
    any_store.jobs.update_job("job-b", completed=True, status="COMPLETED")
    assert st.active_jobs(any_store) == [a]
    assert job_of_key(any_store, "b", "a.csv") == a
    assert job_of_key(any_store, "b", "incoming/a.csv", "v1") == a
    assert job_of_key(any_store, "b", "incoming/a.csv", "v2") is None
    assert job_of_key(any_store, "b", "nothing.csv") is None


def test_lookup_by_uuid_client_id_and_request_id(any_store):
    job = _job(any_store)
    _settle(any_store, job, 0, range(1, 4), NOW - 10)
    _settle(any_store, job, 1, range(4, 6), NOW - 5, status="FAILED")
    any_store.results.put_results([{"phonon-uuid": "uuid-2", "client-identifier": "C-2", "request-id": "req-0",
                                    "job": job, "row": 2, "file": "incoming/leads.csv", "status": "ACCEPTED"}])
    [by_uuid] = st.lookup(any_store, "uuid", "uuid-2")
    assert by_uuid["row"] == 2 and by_uuid["client_identifier"] == "C-2" and by_uuid["source"] == "results"
    [by_cid] = st.lookup(any_store, "cid", "C-2")
    assert by_cid["phonon_uuid"] == "uuid-2"
    assert [c["row"] for c in st.lookup(any_store, "request_id", "req-0")] == [2]
    # a row never accepted is not in the results table: found through the job's rows
    assert st.lookup(any_store, "cid", "C-4") == []
    [failed] = st.lookup(any_store, "cid", "C-4", job)
    assert failed["status"] == "FAILED" and failed["source"] == "rows"
    # with the job, a call the results table has is not listed twice
    assert len(st.lookup(any_store, "cid", "C-2", job)) == 1
    assert st.lookup(any_store, "uuid", "no-such") == []


def _push(job: str, row: int, uuid: str) -> str:
    """A flow-end push as Phonon sends it (the shape of tests/unit/test_reporting.py's): one
    attempt answered at 10:00:05 and ended at 10:00:50 (45 s of talk; `duration` in ms), DTMF 1, 2."""
    return json.dumps({"phonon-uuid": uuid, "keys": [{"name": "$flow.key.OutboundRef", "value": f"{job}.{row}"}],
                       "callDetails": [{"startTime": "2026-11-30T10:00:00+05:30",
                                        "connectTime": "2026-11-30T10:00:05+05:30",
                                        "endTime": "2026-11-30T10:00:50+05:30", "duration": "45000",
                                        "hangupCause": "NORMAL_CLEARING", "dtmfPressesd": ["1", "2"]}]})


def test_lookup_shows_the_outcome_the_webhook_recorded_on_the_row(any_store):
    from phonon_outbound.webhook import WebhookService

    # Given a settled chunk whose row 2 was accepted, and that call's flow-end push taken by
    # the real webhook handler (it writes the results item and the row's outcome)
    job = _job(any_store)
    _settle(any_store, job, 0, range(1, 4), NOW - 10)
    assert WebhookService(any_store).handle(_push(job, 2, "uuid-2"))["matched"] is True
    # When the call is looked up by each of its ids, with and without its job
    found = [st.lookup(any_store, "uuid", "uuid-2"), st.lookup(any_store, "cid", "C-2"),
             st.lookup(any_store, "request_id", "req-0"), st.lookup(any_store, "uuid", "uuid-2", job),
             st.lookup(any_store, "cid", "C-2", job)]
    # (the request of chunk 0 carried rows 1-3: with the job, its other rows are found in the job's rows)
    by_request = st.lookup(any_store, "request_id", "req-0", job)
    assert sorted(c["row"] for c in by_request) == [1, 2, 3]
    found.append([c for c in by_request if c["row"] == 2])
    # Then each finds that one call, once, with the outcome the report has: answered, 45 s (not
    # the push's 45000 ms), the digits pressed, when it ended; the row's status, not the push's
    for calls in found:
        [call] = calls
        assert (call["job"], call["row"], call["client_identifier"], call["phonon_uuid"], call["request_id"]) == (
            job, 2, "C-2", "uuid-2", "req-0")
        assert call["status"] == "ACCEPTED" and call["outcome"] == "ANSWERED"
        assert call["duration"] == 45 and call["dtmf"] == "12" and call["attempts"] == 1
        assert call["ended_at"] == "2026-11-30T10:00:50+05:30" and call["hangup_cause"] == "NORMAL_CLEARING"
        assert "numbers" not in call
    # a row without an outcome yet is shown as accepted with none
    [waiting] = st.lookup(any_store, "cid", "C-3", job)
    assert waiting["status"] == "ACCEPTED" and waiting["outcome"] == "" and waiting["duration"] == ""


def test_lookup_of_an_unmatched_push_shows_what_the_results_table_has(any_store):
    from phonon_outbound.webhook import WebhookService

    # a push whose ref names no job: only the results item knows of it (its duration is the
    # push's own, of unknown unit: not shown as seconds)
    assert WebhookService(any_store).handle(_push("nojob", 1, "uuid-x"))["matched"] is False
    [call] = st.lookup(any_store, "uuid", "uuid-x")
    assert call["source"] == "results" and call["status"] == "COMPLETED" and call["row"] == ""
    assert call["hangup_cause"] == "NORMAL_CLEARING" and call["attempts"] == 1 and call["duration"] == ""
    assert call["ended_at"] == "2026-11-30T10:00:50+05:30"


# ---------------------------------------------------------------------- the command
def _target(store):
    """A stand-in for devkit stack.py's `connect(...)` result: the store, the
    bucket and the settings; no queues."""
    return SimpleNamespace(store=store, bucket="b", settings=Settings(records_per_minute=600), sqs=None, queues={},
                           s3=None)


@pytest.fixture
def status_cli(any_store, monkeypatch):
    monkeypatch.setattr(st, "connect_target", lambda args: _target(any_store))
    return any_store


def test_cli_job_text_json_and_exit_codes(status_cli, capsys):
    job = _job(status_cli, key="incoming/<b>evil</b>\x1b[31m.csv")
    _settle(status_cli, job, 0, range(1, 11), NOW)
    assert cli.main(["status", "--job", job]) == 0
    out = capsys.readouterr().out
    assert "state:" in out and "calls/min:" in out and "limit 600" in out
    assert "\x1b" not in out  # a file name's control characters are shown escaped
    # aligned: every value starts in the same column
    assert len({len(re.match(r"^[^:]+:\s+", line).group(0)) for line in out.splitlines()}) == 1
    assert cli.main(["status", "--job", job, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["accepted"] == 10 and doc["job"] == job
    assert cli.main(["status", "--job", "nope"]) == 2
    assert cli.main(["status", "--key", "leads.csv", "--version", "v9"]) == 2
    assert cli.main(["status", "--version", "v1"]) == 2  # --version needs --key
    assert cli.main(["status", "--job", job, "--key", "x"]) == 2  # one or the other


def test_cli_active_jobs_and_lookup(status_cli, capsys):
    job = _job(status_cli)
    _settle(status_cli, job, 0, range(1, 6), NOW)
    status_cli.results.put_results([{"phonon-uuid": "u-1", "client-identifier": "C-1", "request-id": "r-1",
                                     "job": job, "row": 1, "status": "ACCEPTED"}])
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["JOB", "STATE"] and job in out
    assert cli.main(["status", "--json"]) == 0
    assert [j["job"] for j in json.loads(capsys.readouterr().out)["active_jobs"]] == [job]
    assert cli.main(["status", "--client-id", "C-1"]) == 0
    assert "u-1" in capsys.readouterr().out
    assert cli.main(["status", "--request-id", "r-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calls"][0]["phonon_uuid"] == "u-1"
    assert cli.main(["status", "--uuid", "missing"]) == 2


def test_cli_without_a_run_is_a_usage_error(monkeypatch, capsys, tmp_path):
    def no_run(args):
        raise RuntimeError("no local run is running")

    monkeypatch.setattr(st, "connect_target", no_run)
    assert cli.main(["status", "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no local run is running" in err and len(err.strip().splitlines()) == 1


def test_cli_html_of_one_job(status_cli, capsys, tmp_path):
    job = _job(status_cli, key="incoming/<script>alert(1)</script>.csv")
    _settle(status_cli, job, 0, range(1, 11), NOW)
    page = tmp_path / "job.html"
    assert cli.main(["status", "--job", job, "--html", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;.csv" in text
    assert 'data-calls="10"' in text
    assert cli.main(["status", "--html", str(page)]) == 2  # one job's report: --job or --key


def test_cli_html_that_cannot_be_written_or_a_lookup_with_html_is_a_usage_error(status_cli, capsys, tmp_path):
    job = _job(status_cli)
    _settle(status_cli, job, 0, range(1, 4), NOW)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # a folder, and a place under a file, are said up front: one line, exit 2, no "internal error"
    for page, said in ((tmp_path, "is a folder"), (blocker / "page.html", "cannot be written")):
        assert cli.main(["status", "--job", job, "--html", str(page)]) == 2
        err = capsys.readouterr().err
        assert said in err and "--html" in err and "internal error" not in err and len(err.strip().splitlines()) == 1
    # a call's lookup has no page to write: refused, not silently ignored
    page = tmp_path / "job.html"
    assert cli.main(["status", "--job", job, "--uuid", "uuid-1", "--html", str(page)]) == 2
    assert "--html" in capsys.readouterr().err and not page.exists()
    # a page the check created but nothing was written to (no such job) is not left behind empty
    assert cli.main(["status", "--job", "nope", "--html", str(page)]) == 2
    assert not page.exists()
    assert cli.main(["status", "--job", job, "--html", str(page)]) == 0 and page.stat().st_size > 0


def test_the_last_runs_reports_are_searched_as_the_report_wrote_them(tmp_path):
    from phonon_outbound.reports import ReportWriter, outcome_cells

    # a results CSV written by the report's own writer: a client-identifier that starts like a
    # formula is written with an apostrophe before it, and read back without
    path = tmp_path / "a.results.csv"
    answered = {"outcome": "ANSWERED", "duration": 31, "attempts": 2, "dtmf": "9", "ended_at": "2026-11-30T10:00:50Z",
                "outcome_at": 1}
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = ReportWriter(fh)
        w.write(1, "=cmd|' /C calc'!A0", "ACCEPTED", "u-1", "r-1", "", outcome_cells("ACCEPTED", answered))
        w.write(2, "x;+1", "ACCEPTED", "u-2", "r-1", "", outcome_cells("ACCEPTED", {}))
        w.write(3, "C-3", "FAILED", "", "r-1", "503 from Phonon")
    entries = [{"job": "J1", "file": "a.csv", "results_csv": str(path)},
               {"job": "J2", "file": "gone.csv", "results_csv": str(tmp_path / "gone.csv")}]
    [one], unreadable = st.report_lookup(entries, "cid", "=cmd|' /C calc'!A0")
    assert unreadable and "gone.csv" in unreadable[0]
    assert (one["job"], one["row"], one["client_identifier"], one["source"]) == ("J1", 1, "=cmd|' /C calc'!A0", "report")
    assert (one["outcome"], one["duration"], one["attempts"], one["dtmf"]) == ("ANSWERED", 31, 2, "9")
    [two], _ = st.report_lookup(entries, "uuid", "u-2")
    assert two["client_identifier"] == "x;+1" and two["outcome"] == "" and two["status"] == "ACCEPTED"  # PENDING
    assert [c["row"] for c in st.report_lookup(entries, "request_id", "r-1")[0]] == [1, 2, 3]
    assert st.report_lookup(entries, "cid", "C-4")[0] == []


def test_a_stacks_limit_is_its_recordsperminute_parameter(stack):
    import boto3

    cfn = boto3.client("cloudformation", region_name="us-east-1")
    cfn.create_stack(StackName="camp", TemplateBody=json.dumps({
        "Parameters": {"RecordsPerMinute": {"Type": "Number", "Default": 30000}},
        "Resources": {"Q": {"Type": "AWS::SQS::Queue"}}}),
        Parameters=[{"ParameterKey": "RecordsPerMinute", "ParameterValue": "4200"}])
    target = SimpleNamespace(settings=Settings(), session=boto3.session.Session(region_name="us-east-1"))
    assert st.rate_limit(target, "camp") == 4200
    assert st.rate_limit(target, None) == 30_000  # the local run: its own settings
    assert st.rate_limit(target, "no-such-stack") == 30_000
