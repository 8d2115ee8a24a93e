"""`JobFinisher` (jobs.py) on the in-memory store (store/memory.py) and moto's S3, in-process:
fast unit tests of finishing a job — the report's rows and statuses for a settled job, a
second finalize doing nothing, a cancelled job's unsent rows, a dead writer's lease. The fakes
keep DynamoDB's semantics (tests/integration/test_store_contracts.py holds them to it)."""

from __future__ import annotations

import csv
import io
import json

import boto3
import pytest

from phonon_outbound.jobs import JobFinisher
from phonon_outbound.status import Status
from phonon_outbound.store.memory import MemoryStore

BUCKET = "contacts"
CSV_KEY, SUMMARY_KEY = "reports/in/a.csv.20260101T000000.000Z.results.csv", "reports/in/a.csv.20260101T000000.000Z.summary.json"
T0 = 1_800_000_000.0


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def s3(aws_env):
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(clock):
    return MemoryStore(clock=clock)


def report(s3) -> list[dict]:
    return list(csv.DictReader(io.StringIO(s3.get_object(Bucket=BUCKET, Key=CSV_KEY)["Body"].read().decode())))


def outcome(row: int, status: Status, **extra) -> dict:
    return {"row": row, "status": status.value, "cid": f"C{row}", "request_id": "req-1", "phonon_uuid": "",
            "reason": "", "numbers": [], **extra}


def settled_job(store, total: int = 6, **attrs) -> None:
    """A job of `total` rows: rows 1-4 sent in chunk 0, row 5 rejected by ingest, row 6 never
    recorded; every chunk settled and counted."""
    store.jobs.create_job("J1", {"key": "in/a.csv", "bucket": BUCKET, "flow": "Flow0001", "total_rows": total,
                            "ingest_done": True, "chunks_total": 1, "report_csv_key": CSV_KEY,
                            "report_summary_key": SUMMARY_KEY, "status": "DISPATCHING", **attrs})
    store.ledger.claim_chunk("J1", 0, 120)
    store.rows.put_outcomes("J1", 0, [outcome(1, Status.ACCEPTED), outcome(2, Status.DUPLICATE, reason="sent by J0.7"),
                                 outcome(3, Status.FAILED, reason="503 after 3 tries"), outcome(4, Status.ACCEPTED)],
                       at=int(T0))
    store.rows.put_rows("J1", [{"row": 5, "status": Status.REJECTED.value, "reason": "phone: not a number"}])
    store.rows.set_row_uuid("J1", 4, "uuid-4")  # the flow-end webhook came before the report
    store.ledger.settle_chunk("J1", 0, "DONE", accepted=2, failed=1, duplicate=1)
    store.ledger.count_settled("J1", 0, accepted=2, failed=1, duplicate=1)


def test_a_settled_job_gets_its_report_rows_and_statuses_and_completes(store, s3):
    settled_job(store)
    finisher = JobFinisher(store, s3, BUCKET)
    assert finisher.maybe_finalize("J1", store.jobs.get_job("J1")) is True
    rows = report(s3)
    assert [(r["row"], r["client-identifier"], r["status"]) for r in rows] == [
        ("1", "C1", "ACCEPTED"), ("2", "C2", "DUPLICATE"), ("3", "C3", "FAILED"), ("4", "C4", "ACCEPTED"),
        ("5", "", "REJECTED"), ("6", "", "FAILED")]
    assert rows[3]["phonon-uuid"] == "uuid-4" and rows[2]["reason"] == "503 after 3 tries"
    assert "no outcome was recorded" in rows[5]["reason"]  # never silently missing
    summary = json.loads(s3.get_object(Bucket=BUCKET, Key=SUMMARY_KEY)["Body"].read())
    assert summary["job"] == "J1" and summary["file"] == "in/a.csv"
    meta = store.jobs.get_job("J1")
    assert meta["completed"] is True and meta["status"] == "COMPLETED"
    counts = {k: v for k, v in meta["counts"].items() if v}
    assert counts == {"accepted": 2, "duplicate": 1, "failed": 2, "rejected": 1}
    assert "active_shard" not in meta  # off the stale-jobs index


def test_a_second_finalize_is_a_no_op(store, s3, clock):
    settled_job(store)
    finisher = JobFinisher(store, s3, BUCKET)
    assert finisher.maybe_finalize("J1", store.jobs.get_job("J1")) is True
    s3.put_object(Bucket=BUCKET, Key=CSV_KEY, Body=b"left alone")
    # a redelivered chunk, the watchdog, even long after the writer's lease: the job is
    # completed, nothing is written again
    clock.t += 10_000
    assert finisher.maybe_finalize("J1", store.jobs.get_job("J1")) is False
    assert finisher.finalize("J1") is False
    assert s3.get_object(Bucket=BUCKET, Key=CSV_KEY)["Body"].read() == b"left alone"


def test_a_job_not_settled_yet_is_not_finalized(store, s3):
    settled_job(store)
    store.jobs.update_job("J1", chunks_total=2)
    assert JobFinisher(store, s3, BUCKET).maybe_finalize("J1", store.jobs.get_job("J1")) is False
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="reports/")


def test_a_cancelled_jobs_unsent_rows_are_cancelled_with_the_reason(store, s3):
    settled_job(store)
    assert store.jobs.cancel_job("J1", "the input file was deleted")
    assert JobFinisher(store, s3, BUCKET).maybe_finalize("J1", store.jobs.get_job("J1")) is True
    last = report(s3)[-1]
    assert (last["row"], last["status"], last["reason"]) == ("6", "CANCELLED", "not sent: the input file was deleted")
    assert store.jobs.get_job("J1")["status"] == "CANCELLED"


def test_a_dead_writers_report_is_written_once_its_lease_lapses(store, s3, clock):
    settled_job(store)
    assert store.jobs.claim_finalize("J1")  # a writer that then died (a Lambda time-out)
    finisher = JobFinisher(store, s3, BUCKET)
    assert finisher.maybe_finalize("J1", store.jobs.get_job("J1")) is False  # its lease is live
    clock.t += 961
    assert finisher.maybe_finalize("J1", store.jobs.get_job("J1")) is True
    assert len(report(s3)) == 6
