"""The stale-job watchdog, against moto: active jobs (GSI `active-jobs`: hash `active_shard`,
range `updated_at`) that have not moved for STALE_JOB_MINUTES are counted in the `StaleJobs`
metric and logged by id."""

from __future__ import annotations

import importlib.util
import json
import time
import uuid

import boto3
import pytest

from phonon_outbound import observability, watchdog, wiring
from phonon_outbound.store import MemoryStore, Store

from ..conftest import ROOT


def _state_table_with_index(stack) -> str:
    """The template's state table when it has the `active-jobs` index, else (the template not
    having it yet) a table created here with that index as docs/design.md defines it."""
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    name = stack.function_environment()["STATE_TABLE"]
    indexes = ddb.describe_table(TableName=name)["Table"].get("GlobalSecondaryIndexes", [])
    if any(i["IndexName"] == watchdog.ACTIVE_INDEX for i in indexes):
        return name
    name = "state-with-active-jobs"
    ddb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": t} for a, t in
                              (("pk", "S"), ("sk", "S"), ("active_shard", "S"), ("updated_at", "N"))],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{"IndexName": watchdog.ACTIVE_INDEX, "Projection": {"ProjectionType": "ALL"},
                                 "KeySchema": [{"AttributeName": "active_shard", "KeyType": "HASH"},
                                               {"AttributeName": "updated_at", "KeyType": "RANGE"}]}])
    return name


def _handler():
    path = ROOT / "functions" / "watchdog" / "watchdog_handler.py"
    spec = importlib.util.spec_from_file_location("watchdog_handler_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def _value(v):
    return sum(v) if isinstance(v, list) else v  # EMF may carry a metric's values as a list


class Ctx:
    function_name = "watchdog"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:watchdog"
    memory_limit_in_mb = 256
    aws_request_id = str(uuid.uuid4())
    log_group_name = "/aws/lambda/watchdog"
    log_stream_name = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def jobs(stack, monkeypatch):
    table = _state_table_with_index(stack)
    own = stack.template["Resources"]["WatchdogFunction"]["Properties"]["Environment"]["Variables"]
    env = {**stack.function_environment(), **{k: str(stack.resolve(v)) for k, v in own.items()},
           "STATE_TABLE": table, "STALE_JOB_MINUTES": "60"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.setattr(observability, "_metrics_on", True)  # a local run earlier in this process turns them off
    wiring.reset()
    now = int(time.time())
    store = Store(table, env["RESULTS_TABLE"], boto3.resource("dynamodb", region_name="us-east-1"))
    # Given jobs as ingest writes them: active ones with `active_shard`, completed ones without
    for job, age_min, active in (("stuck-2h", 120, True), ("stuck-61m", 61, True), ("busy-5m", 5, True),
                                 ("done-3h", 180, False)):
        item = {"key": f"incoming/{job}.csv", "updated_at": now - age_min * 60}
        if active:
            item["active_shard"] = "A"
        store.jobs.put_job(job, item)
    yield store
    wiring.reset()


def test_jobs_not_updated_for_the_threshold_are_the_stale_ones_oldest_first(jobs):
    found = watchdog.stale_jobs(jobs, 60 * 60)
    assert [j["job"] for j in found] == ["stuck-2h", "stuck-61m"]
    assert found[0]["idle_s"] >= 120 * 60
    # a longer threshold leaves only the oldest
    assert [j["job"] for j in watchdog.stale_jobs(jobs, 90 * 60)] == ["stuck-2h"]


def test_the_handler_emits_the_stalejobs_metric_and_logs_job_ids_not_file_names(jobs, capsys):
    result = _handler()({}, Ctx())
    assert result == {"stale_jobs": 2, "jobs": ["stuck-2h", "stuck-61m"], "reports_requested": []}
    captured = capsys.readouterr()
    blobs = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{") and "_aws" in line]
    metric = [b for b in blobs if "StaleJobs" in b]
    assert metric and _value(metric[0]["StaleJobs"]) == 2
    directive = metric[0]["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "PhononOutbound"
    assert "incoming/" not in captured.out + captured.err  # ids only, no file names


def test_a_paused_job_or_a_job_of_a_paused_flow_is_not_stale(jobs):
    """An operator's pause is stillness by choice: no StaleJobs alarm for it; resumed and
    idle again past the threshold, it counts again."""
    jobs.jobs.update_job("stuck-61m", flow="FlowB123")
    jobs.jobs.pause_job("stuck-2h", "waiting for the legal team")
    jobs.jobs.pause_flow("FlowB123", "carrier outage")
    later = time.time() + 61 * 60  # every job above was written just now (a pause is a write)
    try:
        assert watchdog.check(jobs, 60, later)["jobs"] == ["busy-5m"]  # the only one not paused
        jobs.jobs.resume_job("stuck-2h")
        jobs.jobs.resume_flow("FlowB123")
        assert sorted(watchdog.check(jobs, 60, later)["jobs"]) == ["busy-5m", "stuck-2h", "stuck-61m"]
    finally:
        observability.metrics.clear_metrics()  # check() was called without the handler's flush


def test_a_capped_job_is_stale_only_once_a_chunk_at_its_cap_is_overdue(jobs):
    """A job capped at 5 calls a minute in 500-row chunks sends one chunk every 100 minutes:
    still by choice for that long past the threshold; its flow's cap counts the same."""
    jobs.jobs.update_job("stuck-2h", rows_queued=1000, next_chunk=2, flow="FlowC123")
    jobs.jobs.set_job_cap("stuck-2h", 5)
    now = time.time()
    try:
        # (the cap is a write: the job is idle from now) idle 61 minutes, past the threshold but
        # within the cap's 100 minutes a chunk: not stale; the uncapped jobs are
        assert sorted(watchdog.check(jobs, 60, now + 61 * 60)["jobs"]) == ["busy-5m", "stuck-61m"]
        assert watchdog.cap_allowance_s(watchdog.Job.from_item(jobs.jobs.get_job("stuck-2h")),
                                        jobs.jobs.flow_control("FlowC123").cap) == 6000.0
        # at 161 minutes it is stale
        assert "stuck-2h" in watchdog.check(jobs, 60, now + 161 * 60)["jobs"]
        # the cap moved to the flow (60/min: 500 rows take ~8 minutes): stale after 68 minutes
        jobs.jobs.set_job_cap("stuck-2h", None)
        jobs.jobs.set_flow_cap("FlowC123", 60)
        assert "stuck-2h" not in watchdog.check(jobs, 60, now + 67 * 60)["jobs"]
        assert "stuck-2h" in watchdog.check(jobs, 60, now + 69 * 60)["jobs"]
    finally:
        jobs.jobs.set_flow_cap("FlowC123", None)
        observability.metrics.clear_metrics()  # check() was called without the handler's flush


def test_with_nothing_stale_the_metric_is_zero(jobs, capsys, monkeypatch):
    monkeypatch.setenv("STALE_JOB_MINUTES", "600")
    wiring.reset()
    assert _handler()({}, Ctx()) == {"stale_jobs": 0, "jobs": [], "reports_requested": []}
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "StaleJobs" in line]
    assert blobs and _value(blobs[0]["StaleJobs"]) == 0


def _settled_but_unreported(store, job: str, finalizing_until: int | None) -> None:
    """A job whose every chunk settled but whose report writer died (its claim left behind)."""
    item = {"key": f"incoming/{job}.csv", "flow": "DemoFlw1", "active_shard": "A", "ingest_done": True,
            "total_rows": 1, "chunks_total": 1, "chunks_settled": 1, "status": "DISPATCHING",
            "report_csv_key": f"reports/incoming/{job}.csv.20261130T000000.000Z.results.csv",
            "report_summary_key": f"reports/incoming/{job}.csv.20261130T000000.000Z.summary.json",
            "updated_at": int(time.time()) - 3 * 3600}
    if finalizing_until is not None:
        item["finalizing"] = finalizing_until
    store.jobs.put_job(job, item)
    store.rows.put_rows(job, [{"row": 1, "status": "ACCEPTED", "cid": "C-1", "request_id": "r-1"}])


def _report_requests(stack) -> list[dict]:
    """The messages on the report queue (received, so each is seen once)."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = stack.physical["ReportQueue"]["Ref"]
    return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])


def test_a_stale_job_that_only_lacks_its_report_is_asked_of_the_report_function_not_written(jobs, stack):
    """A report can take minutes (a million rows); the watchdog may run 60 s and, killed, would
    leave the lease taken. It only sends the report function a request (the report queue)."""
    from phonon_outbound_dev.local.runner import FakeContext, sqs_event

    # Given a job whose report writer died 2 h ago, and one whose writer still holds its lease
    _settled_but_unreported(jobs, "orphan", finalizing_until=int(time.time()) - 3600)
    _settled_but_unreported(jobs, "writing", finalizing_until=int(time.time()) + 600)
    # When the watchdog runs
    result = _handler()({}, Ctx())
    # Then the orphan's report is requested, once, and nothing is written by the watchdog itself
    assert result["reports_requested"] == ["orphan"]
    assert "orphan" not in result["jobs"] and "writing" in result["jobs"]
    requests = _report_requests(stack)
    assert [json.loads(m["Body"]) for m in requests] == [{"job": "orphan", "kind": "settled"}]
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = stack.function_environment()["BUCKET_NAME"]
    key = "reports/incoming/orphan.csv.20261130T000000.000Z.results.csv"
    assert s3.list_objects_v2(Bucket=bucket, Prefix="reports/").get("KeyCount", 0) == 0
    assert not jobs.jobs.get_job("orphan").get("completed") and jobs.jobs.get_job("orphan").get("finalizing", 0) < time.time()
    # And the report function, given the request, writes it
    report = importlib.util.spec_from_file_location("report_handler_for_watchdog",
                                                    ROOT / "functions" / "report" / "report_handler.py")
    module = importlib.util.module_from_spec(report)
    report.loader.exec_module(module)
    arn = f"arn:aws:sqs:us-east-1:123456789012:{stack.physical['ReportQueue']['QueueName']}"
    answer = module.handler(sqs_event(requests, arn), FakeContext("report", 900))
    assert answer == {"batchItemFailures": []}
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    assert "C-1" in body and "ACCEPTED" in body
    assert jobs.jobs.get_job("orphan").get("completed") is True
    # And a second watchdog run asks nothing again (a completed job is not stale)
    assert _handler()({}, Ctx())["reports_requested"] == []
    assert _report_requests(stack) == []


def test_the_report_claim_is_a_lease_and_a_completed_job_is_never_claimed_again(jobs):
    jobs.jobs.put_job("leased", {"key": "incoming/leased.csv"})
    t = time.time()
    assert jobs.jobs.claim_finalize("leased", lease_s=60, now=t)
    assert not jobs.jobs.claim_finalize("leased", lease_s=60, now=t + 30)  # the writer is still within its lease
    assert jobs.jobs.claim_finalize("leased", lease_s=60, now=t + 61)  # its lease ran out: taken over
    jobs.jobs.update_job("leased", completed=True)
    assert not jobs.jobs.claim_finalize("leased", lease_s=60, now=t + 10_000)
    assert not jobs.jobs.claim_finalize("no-such-job")


def test_the_watchdog_runs_on_the_in_memory_store():
    """It asks the jobs repository (`store.jobs.stale_jobs`), not the table: the same answer
    on the fakes, so services' unit tests can use it without moto."""
    store = MemoryStore()
    now = 1_800_000_000
    for job, age_min, active in (("stuck-2h", 120, True), ("stuck-61m", 61, True), ("busy-5m", 5, True),
                                 ("done-3h", 180, False)):
        store.jobs.put_job(job, {"key": f"incoming/{job}.csv", "updated_at": now - age_min * 60,
                                 **({"active_shard": "A"} if active else {})})
    found = watchdog.stale_jobs(store, 60 * 60, now)
    assert [(j["job"], j["idle_s"]) for j in found] == [("stuck-2h", 7200), ("stuck-61m", 3660)]
    assert watchdog.check(store, 90, now) == {"stale_jobs": 1, "jobs": ["stuck-2h"], "reports_requested": []}
