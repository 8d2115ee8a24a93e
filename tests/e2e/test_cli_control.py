"""`phonon-outbound pause | resume | cancel | limit` as an operator meets them: against the local run that is
running in another terminal (through its live.json), and against a deployed stack (moto in server
mode, never real AWS). Each command runs as a separate process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest

from phonon_outbound_dev.simulator import PhononSimulator
from tests.e2e.test_cli import CLI, ROOT, read_report, write_csv
from tests.e2e.test_cli_stack import CREDS, clean_env, moto_server, one_line_exit_2  # noqa: F401 (a fixture)

FLOW, SID = "Flow1234", "S" * 64

pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "outbound"), str(ROOT / "devkit")]),
            **(env or {})}
    full.pop("AWS_ENDPOINT_URL", None)
    return subprocess.run([*CLI, *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)


def wait_for(check, timeout: float, child: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline or (child is not None and child.poll() is not None):
            raise AssertionError("timed out" if child is None or child.poll() is None else "the run ended early")
        time.sleep(0.1)


@contextmanager
def live_run(tmp_path: Path, sim: PhononSimulator, rows: int, name: str = "slow.csv") -> Iterator[tuple[subprocess.Popen, Path]]:
    """`phonon-outbound run` of a `rows`-row file at 600 calls a minute, in its own process
    (its own session, so a Ctrl-C reaches it as a group), with its state dir; killed on the way
    out if it is still running (a failed assertion must not leave it behind)."""
    data = write_csv(tmp_path / name, rows)
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "outbound"), str(ROOT / "devkit")]),
           "PHONON_SECURITY_ID": SID}
    env.pop("AWS_ENDPOINT_URL", None)
    child = subprocess.Popen([*CLI, "run", "--json", "--rate", "600", "--api-url", sim.url, "--flow-id", FLOW,
                              "--out", str(tmp_path / "out"), "--state-dir", str(state), str(data)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        yield child, state
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()


def quiet_requests(sim: PhononSimulator, quiet_s: float = 2.0, cap_s: float = 30.0) -> int:
    """The simulator's request count once it has not changed for `quiet_s` (the requests in
    flight when a pause was written are answered), waiting `cap_s` at most."""
    deadline = time.monotonic() + cap_s
    last, since = sim.stats()["requests"], time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = sim.stats()["requests"]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise AssertionError(f"requests still arriving after {cap_s:g} s ({last})")


def test_pause_resume_a_live_local_run_from_another_terminal(tmp_path):
    # Given a local run of 300 rows at 600 calls a minute (30 s of sending), in its own process
    with PhononSimulator(flows={FLOW: SID}, rate_per_minute=600) as sim:
        with live_run(tmp_path, sim, 300) as (child, state):
            wait_for(lambda: sim.stats()["calls_accepted"] >= 30, 120, child)
            assert (state / "live.json").exists()
            # When the operator pauses the file from another terminal
            paused = cli("pause", "--key", "slow.csv", "--reason", "wrong script", "--state-dir", str(state), "--json")
            assert paused.returncode == 0, paused.stderr
            answer = json.loads(paused.stdout)
            assert answer["state"] == "paused" and answer["already"] is False and answer["key"] == "incoming/slow.csv"
            # Then, once the requests in flight are answered, the simulator hears nothing more
            held = quiet_requests(sim)
            time.sleep(5)
            assert sim.stats()["requests"] == held and child.poll() is None
            assert sim.stats()["calls_accepted"] < 300
            # When it is resumed
            resumed = cli("resume", "--job", answer["job"], "--state-dir", str(state))
            assert resumed.returncode == 0, resumed.stderr
            assert f"job {answer['job']}: running" in resumed.stdout
            stdout, stderr = child.communicate(timeout=180)
        stats = sim.stats()
    # Then the run completes, everybody called once, nobody twice, and it said it was paused
    assert child.returncode == 0, stderr[-3000:]
    assert stats["called_twice"] == [] and len(stats["calls_by_client_identifier"]) == 300
    report = read_report(json.loads(stdout)["files"][0]["report"])
    assert {r["status"] for r in report} == {"ACCEPTED"} and len(report) == 300
    assert "paused: incoming/slow.csv (wrong script)" in stderr and "resumed" in stderr
    # and once it has ended there is no local run to control
    assert not (state / "live.json").exists()
    gone = cli("pause", "--job", answer["job"], "--state-dir", str(state))
    one_line_exit_2(gone, "no local run is running")


def test_a_cap_set_on_a_live_local_run_holds_there_until_removed(tmp_path):
    # Given a local run of 200 rows at 600 calls a minute (10-call chunks, one a second)
    with PhononSimulator(flows={FLOW: SID}, rate_per_minute=600) as sim:
        with live_run(tmp_path, sim, 200) as (child, state):
            wait_for(lambda: sim.stats()["calls_accepted"] >= 20, 120, child)
            # When the operator caps the file at 60 calls a minute (one chunk every 10 s)
            capped = cli("limit", "--key", "slow.csv", "--per-minute", "60", "--state-dir", str(state), "--json")
            assert capped.returncode == 0, capped.stderr
            answer = json.loads(capped.stdout)
            assert answer["rate_cap"] == 60 and answer["already"] is False and answer["state"] == "running"
            # Then, once the requests already granted have gone, the simulator hears one a 10 s at most
            time.sleep(4)
            before = sim.stats()["requests"]
            time.sleep(12)
            assert sim.stats()["requests"] - before <= 2 and child.poll() is None
            # When the cap is removed, the run completes at the global rate
            freed = cli("limit", "--job", answer["job"], "--none", "--state-dir", str(state))
            assert freed.returncode == 0 and f"job {answer['job']}: no cap (running)" in freed.stdout, freed.stderr
            stdout, stderr = child.communicate(timeout=180)
        stats = sim.stats()
    assert child.returncode == 0, stderr[-3000:]
    assert stats["called_twice"] == [] and len(stats["calls_by_client_identifier"]) == 200
    report = read_report(json.loads(stdout)["files"][0]["report"])
    assert {r["status"] for r in report} == {"ACCEPTED"} and len(report) == 200
    # and the run said so on stderr
    assert "capped: incoming/slow.csv at 60 calls/min" in stderr and "no cap: sending at the global rate" in stderr


def test_cancel_of_a_live_local_run_ends_its_job_through_the_runs_report_worker(tmp_path):
    # Given a local run of 300 rows at 600 calls a minute, part-sent
    with PhononSimulator(flows={FLOW: SID}, rate_per_minute=600) as sim:
        with live_run(tmp_path, sim, 300) as (child, state):
            wait_for(lambda: sim.stats()["calls_accepted"] >= 30, 120, child)
            # When the operator cancels the file from another terminal
            cancelled = cli("cancel", "--key", "slow.csv", "--reason", "wrong list", "--state-dir", str(state))
            assert cancelled.returncode == 0, cancelled.stderr
            assert "cancelled" in cancelled.stdout
            stdout, stderr = child.communicate(timeout=180)
        stats = sim.stats()
    # Then the run ends by itself (its report worker wrote the cancelled job's report, as it
    # writes every report of the run), with every row: what was sent ACCEPTED, the rest
    # CANCELLED with the reason; nobody called twice
    assert child.returncode == 1, stderr[-3000:]  # rows cancelled: exit 1, as for any row not sent
    report = read_report(json.loads(stdout)["files"][0]["report"])
    accepted = {r["client-identifier"] for r in report if r["status"] == "ACCEPTED"}
    assert len(report) == 300 and accepted == set(stats["calls_by_client_identifier"]) and len(accepted) < 300
    assert {r["reason"] for r in report if r["status"] == "CANCELLED"} == {"wrong list"}
    assert stats["called_twice"] == []


def test_ctrl_c_still_stops_a_paused_local_run(tmp_path):
    # Given a local run paused from another terminal
    with PhononSimulator(flows={FLOW: SID}, rate_per_minute=600) as sim:
        with live_run(tmp_path, sim, 200) as (child, state):
            wait_for(lambda: sim.stats()["calls_accepted"] >= 20, 120, child)
            assert cli("pause", "--key", "slow.csv", "--state-dir", str(state)).returncode == 0
            quiet_requests(sim)  # it is paused: nothing more goes out
            # When the person presses Ctrl-C while it waits
            os.killpg(child.pid, signal.SIGINT)
            stdout, stderr = child.communicate(timeout=120)
        stats = sim.stats()
    # Then it stops as any run does: exit 130, every row in the report, the unsent ones CANCELLED
    assert child.returncode == 130, stderr[-3000:]
    assert "paused: incoming/slow.csv" in stderr  # it was paused when Ctrl-C came
    report = read_report(json.loads(stdout)["files"][0]["report"])
    accepted = {r["client-identifier"] for r in report if r["status"] == "ACCEPTED"}
    assert len(report) == 200 and accepted == set(stats["calls_by_client_identifier"])
    assert {r["status"] for r in report} == {"ACCEPTED", "CANCELLED"} and stats["called_twice"] == []
    assert not (state / "live.json").exists()


def test_a_live_file_left_by_a_killed_run_is_no_local_run(tmp_path):
    (tmp_path / "live.json").write_text(json.dumps({"pid": 2 ** 22 + 12345, "endpoint": "http://127.0.0.1:9"}))
    one_line_exit_2(cli("cancel", "--job", "j1", "--state-dir", str(tmp_path)), "no local run is running")
    one_line_exit_2(cli("pause", "--job", "j1", "--state-dir", str(tmp_path / "none")), "no local run is running")


def test_usage_errors_are_exit_2():
    for args in (["pause"], ["pause", "--job", "j", "--flow", "Flow1234"], ["cancel", "--flow", "Flow1234"],
                 ["resume", "--job", "j", "--version", "v1"]):
        proc = cli(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr)


def test_a_flow_id_no_flow_can_have_is_a_usage_error_not_a_pause():
    # (before any stack or local run is asked: the answer is the rule, whatever is running)
    for args in (["pause", "--flow", "Flow123"], ["resume", "--flow", "x" * 128], ["pause", "--flow", "Flow 1234"]):
        one_line_exit_2(cli(*args), "is not a Phonon flow id (8 letters or digits)")


# ------------------------------------------------------------------ a deployed stack
class FakeStack:
    """A stack as the CLI finds it (CloudFormation outputs, on moto in server mode) whose state
    table holds one unfinished job, j1, of incoming/a.csv (version v1)."""

    def __init__(self, tmp_path: Path, endpoint: str, name: str, **job: object):
        kw = {"region_name": "eu-west-1", "endpoint_url": endpoint, "aws_access_key_id": "testing",
              "aws_secret_access_key": "testing"}
        self.table = boto3.resource("dynamodb", **kw).create_table(
            TableName=f"{name}-state", BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}])
        self.table.put_item(Item={"pk": "JOB#j1", "sk": "META", "key": "incoming/a.csv", "version": "v1",
                                  "bucket": "contacts", "completed": False, "ingest_done": False, "updated_at": 1,
                                  **job})
        self.table.put_item(Item={"pk": "KEY#contacts/incoming/a.csv", "sk": "JOB#j1", "job": "j1", "version": "v1",
                                  "uploaded_at": "2026-11-30T10:00:00Z"})
        template = {"Resources": {"Chunks": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": f"{name}-chunks"}}},
                    "Outputs": {"ContactsBucketName": {"Value": "contacts"},
                                "StateTableName": {"Value": f"{name}-state"}, "ResultsTableName": {"Value": "results"},
                                "ChunkQueueUrl": {"Value": {"Ref": "Chunks"}}}}
        self.stack = f"phonon-{name}"
        boto3.client("cloudformation", **kw).create_stack(StackName=self.stack, TemplateBody=json.dumps(template))
        self.env = clean_env(tmp_path, **CREDS, AWS_ENDPOINT_URL=endpoint)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, *args, "--stack", self.stack, "--region", "eu-west-1"], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=120)

    def item(self, pk: str, sk: str = "META") -> dict:
        return self.table.get_item(Key={"pk": pk, "sk": sk}, ConsistentRead=True).get("Item") or {}


def test_pause_resume_cancel_against_a_stack(tmp_path, moto_server):  # noqa: F811 (the fixture)
    # Given a stack (its outputs), its state table with one job of incoming/a.csv, not finished
    stack = FakeStack(tmp_path, moto_server, "control")
    run, item = stack.run, stack.item

    # When the operator pauses it by its file's name
    proc = run("pause", "--key", "a.csv", "--reason", "hold", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"action": "pause", "job": "j1", "key": "incoming/a.csv", "version": "v1",
                                       "state": "paused", "already": False}
    assert item("JOB#j1")["paused_reason"] == "hold"
    again = run("pause", "--job", "j1")
    assert again.returncode == 0 and "job j1: paused already; nothing changed" in again.stdout
    assert json.loads(run("resume", "--job", "j1", "--json").stdout)["state"] == "running"
    assert "paused_reason" not in item("JOB#j1")
    # a flow's pause is its own item
    assert json.loads(run("pause", "--flow", "Flow1234", "--json").stdout)["state"] == "paused"
    assert item("FLOWCTL#Flow1234", "-")["paused_reason"] == "paused by an operator"
    # cancel: the job is marked, its unsent rows will end CANCELLED with the reason
    proc = run("cancel", "--key", "incoming/a.csv", "--version", "v1", "--reason", "wrong list")
    assert proc.returncode == 0, proc.stderr
    assert "job j1 (incoming/a.csv, version v1): cancelled" in proc.stdout
    assert item("JOB#j1")["cancelled_reason"] == "wrong list"
    # unknown targets are one line, exit 2
    one_line_exit_2(run("cancel", "--job", "nosuch"), "no such job: nosuch")
    one_line_exit_2(run("pause", "--key", "b.csv"), "no job for key b.csv")
    one_line_exit_2(run("pause", "--key", "a.csv", "--version", "v9"), "no job for key a.csv version v9")


def test_limit_against_a_stack(tmp_path, moto_server):  # noqa: F811 (the fixture)
    # Given a stack (its outputs) and its state table with one unfinished job of incoming/a.csv
    stack = FakeStack(tmp_path, moto_server, "limit", flow=FLOW)
    run, item = stack.run, stack.item

    # When the operator caps the job by its file's name
    proc = run("limit", "--key", "a.csv", "--per-minute", "100", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"action": "limit", "job": "j1", "key": "incoming/a.csv", "version": "v1",
                                       "state": "running", "already": False, "rate_cap": 100}
    assert item("JOB#j1")["rate_cap"] == 100
    again = run("limit", "--job", "j1", "--per-minute", "100")
    assert again.returncode == 0 and "job j1: capped at 100 calls/min already (running); nothing changed" in again.stdout
    # a flow's cap is on its control item
    assert run("limit", "--flow", FLOW, "--per-minute", "50").stdout.strip() == f"flow {FLOW}: capped at 50 calls/min (running)"
    assert item(f"FLOWCTL#{FLOW}", "-")["rate_cap"] == 50
    # and status shows them both, the flow's binding
    status = run("status", "--job", "j1")
    assert status.returncode == 0, status.stderr
    assert f"50 calls/min (flow {FLOW}'s; the job's own is 100)" in status.stdout
    # --none removes a cap; a cap over Phonon's 30,000/min is a usage error
    assert "job j1: no cap (running)" in run("limit", "--job", "j1", "--none").stdout
    assert "rate_cap" not in item("JOB#j1")
    one_line_exit_2(run("limit", "--job", "j1", "--per-minute", "30001"), "out of range")
    one_line_exit_2(run("limit", "--job", "nosuch", "--per-minute", "10"), "no such job: nosuch")


def test_cancel_against_a_stack_asks_its_report_function_and_writes_no_report_itself(tmp_path, moto_server):  # noqa: F811
    # Given a stack with a report queue (its ReportQueueUrl output) and a job whose chunks have
    # all settled, so that a cancel owes its report at once
    kw = {"region_name": "eu-west-1", "endpoint_url": moto_server, "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    s3 = boto3.client("s3", **kw)
    s3.create_bucket(Bucket="cancel-contacts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    table = boto3.resource("dynamodb", **kw).create_table(
        TableName="cancel-state", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}])
    table.put_item(Item={"pk": "JOB#j2", "sk": "META", "key": "incoming/b.csv", "version": "v1",
                         "bucket": "cancel-contacts", "completed": False, "ingest_done": True, "chunks_total": 2,
                         "chunks_settled": 2, "updated_at": 1,
                         "report_csv_key": "reports/incoming/b.csv.20261130T100000.000Z.results.csv",
                         "report_summary_key": "reports/incoming/b.csv.20261130T100000.000Z.summary.json"})
    template = {"Resources": {"Reports": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "cancel-reports"}}},
                "Outputs": {"ContactsBucketName": {"Value": "cancel-contacts"},
                            "StateTableName": {"Value": "cancel-state"}, "ResultsTableName": {"Value": "cancel-results"},
                            "ReportQueueUrl": {"Value": {"Ref": "Reports"}}}}
    boto3.client("cloudformation", **kw).create_stack(StackName="phonon-cancel", TemplateBody=json.dumps(template))
    sqs = boto3.client("sqs", **kw)
    queue = sqs.get_queue_url(QueueName="cancel-reports")["QueueUrl"]

    # When the operator cancels it (the job id as pasted, with spaces around it)
    proc = subprocess.run([*CLI, "cancel", "--job", " j2 ", "--reason", "wrong list", "--json", "--stack",
                           "phonon-cancel", "--region", "eu-west-1"], cwd=ROOT,
                          env=clean_env(tmp_path, **CREDS, AWS_ENDPOINT_URL=moto_server), capture_output=True,
                          text=True, timeout=120)

    # Then the job is cancelled, and its report is asked of the stack's report function (one
    # request on its queue); the CLI wrote no report and did not finish the job itself
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"action": "cancel", "job": "j2", "state": "cancelled", "already": False}
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"]) for m in messages] == [{"job": "j2", "kind": "settled"}]
    assert s3.list_objects_v2(Bucket="cancel-contacts").get("KeyCount", 0) == 0
    item = table.get_item(Key={"pk": "JOB#j2", "sk": "META"}, ConsistentRead=True)["Item"]
    assert item["cancelled_reason"] == "wrong list" and item["completed"] is False
