"""Issue 12 probes (QA): `phonon-outbound status` lookups with odd values, on the in-memory store
and on DynamoDB (moto) alike (the `status_cli` fixture of test_status.py)."""

from __future__ import annotations

import json

import pytest

from phonon_outbound_dev import cli

from .test_status import NOW, _job, _settle, status_cli  # noqa: F401


@pytest.mark.parametrize("args", [
    ["--uuid", "x" * 3000], ["--uuid", ""], ["--uuid", " "], ["--client-id", "x" * 3000],
    ["--request-id", ""],
    ["--client-id", "\x00"], ["--uuid", "\ud800"], ["--key", "k" * 2000], ["--job", "J" * 3000],
    ["--key", "nosuch.csv"], ["--job", ""],
])
def test_a_lookup_of_something_that_cannot_exist_is_a_one_line_answer_exit_2(status_cli, capsys, args):  # noqa: F811
    job = _job(status_cli)
    _settle(status_cli, job, 0, range(1, 3), NOW)
    assert cli.main(["status", *args]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "internal error" not in captured.err.lower()
    said = (captured.err + captured.out).strip().splitlines()
    assert len(said) == 1, captured


def test_a_lookup_by_client_id_of_a_failed_row_is_found_with_the_job(status_cli, capsys):  # noqa: F811
    job = _job(status_cli)
    _settle(status_cli, job, 0, range(1, 3), NOW, status="FAILED")
    assert cli.main(["status", "--client-id", "C-2"]) == 2  # not accepted: the results table has nothing
    capsys.readouterr()
    assert cli.main(["status", "--client-id", "C-2", "--job", job, "--json"]) == 0
    calls = json.loads(capsys.readouterr().out)["calls"]
    assert [(c["status"], str(c["row"])) for c in calls] == [("FAILED", "2")]


def test_a_job_with_zero_rows_has_a_picture(status_cli, capsys):  # noqa: F811
    status_cli.jobs.create_job("empty", {"bucket": "b", "key": "incoming/empty.csv", "flow": "DemoFlw1",
                                         "row_count": 0, "total_rows": 0, "ingest_done": True, "chunks_total": 0,
                                         "completed": True, "status": "COMPLETED", "report_final": True})
    assert cli.main(["status", "--job", "empty", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["state"] == "completed" and doc["eta_s"] == 0 and doc["sent"] == 0
    assert cli.main(["status", "--job", "empty"]) == 0
    assert "completed" in capsys.readouterr().out
