"""Issue 12 probes (QA): `phonon-outbound pause|resume|cancel` and `status` against a stack
(moto in server mode) for keys S3 spells oddly, a finished job, a cancelled job; and
`status --uuid / --client-id / --request-id` answers. Each command is its own process."""

from __future__ import annotations

import json
import subprocess

import boto3
import pytest

from tests.e2e.test_cli import CLI, ROOT
from tests.e2e.test_cli_stack import CREDS, clean_env, moto_server, one_line_exit_2  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e

KEYS = {"j-space": "incoming/my contacts.csv", "j-plus": "incoming/a+b.csv",
        "j-uni": "incoming/deep/er/ünï 名 +x%20y.csv"}


@pytest.fixture
def odd_stack(tmp_path, moto_server):  # noqa: F811
    import uuid

    n = uuid.uuid4().hex[:8]  # moto's servers in one process share one backend: names of our own
    state, bucket, stack = f"odd-state-{n}", f"odd-contacts-{n}", f"phonon-odd-{n}"
    kw = {"region_name": "eu-west-1", "endpoint_url": moto_server, "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    table = boto3.resource("dynamodb", **kw).create_table(
        TableName=state, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}])
    for job, key in KEYS.items():
        table.put_item(Item={"pk": f"JOB#{job}", "sk": "META", "key": key, "version": "v1", "bucket": bucket,
                             "completed": False, "ingest_done": False, "updated_at": 1, "flow": "Flow1234"})
        table.put_item(Item={"pk": f"KEY#{bucket}/{key}", "sk": f"JOB#{job}", "job": job, "version": "v1",
                             "uploaded_at": "2026-11-30T10:00:00Z"})
    table.put_item(Item={"pk": "JOB#j-done", "sk": "META", "key": "incoming/done.csv", "version": "v1",
                         "bucket": bucket, "completed": True, "ingest_done": True, "updated_at": 1,
                         "status": "COMPLETED"})
    template = {"Resources": {"Chunks": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": f"odd-chunks-{n}"}}},
                "Outputs": {"ContactsBucketName": {"Value": bucket}, "StateTableName": {"Value": state},
                            "ResultsTableName": {"Value": "odd-results"}, "ChunkQueueUrl": {"Value": {"Ref": "Chunks"}}}}
    boto3.client("cloudformation", **kw).create_stack(StackName=stack, TemplateBody=json.dumps(template))
    env = clean_env(tmp_path, **CREDS, AWS_ENDPOINT_URL=moto_server)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, *args, "--stack", stack, "--region", "eu-west-1"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    def item(job: str) -> dict:
        return table.get_item(Key={"pk": f"JOB#{job}", "sk": "META"}, ConsistentRead=True).get("Item") or {}

    return run, item


def test_odd_keys_are_paused_resumed_and_cancelled_by_key_from_the_command_line(odd_stack):
    run, item = odd_stack
    for job, key in KEYS.items():
        short = key[len("incoming/"):]
        proc = run("pause", "--key", short, "--reason", "hold", "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == {"action": "pause", "job": job, "key": key, "version": "v1",
                                           "state": "paused", "already": False}
        assert item(job)["paused_reason"] == "hold"
        proc = run("resume", "--key", key, "--version", "v1")
        assert proc.returncode == 0 and key in proc.stdout, proc.stderr
        proc = run("cancel", "--key", short, "--json")
        assert proc.returncode == 0 and json.loads(proc.stdout)["state"] == "cancelled", proc.stderr
        # a cancelled job: pause, resume and cancel again change nothing (exit 0, already)
        for action in ("pause", "resume", "cancel"):
            proc = run(action, "--key", key, "--json")
            assert proc.returncode == 0, proc.stderr
            assert json.loads(proc.stdout)["state"] == "cancelled" and json.loads(proc.stdout)["already"] is True


def test_a_finished_job_is_said_finished_by_every_action(odd_stack):
    run, item = odd_stack
    for action in ("pause", "resume", "cancel"):
        proc = run(action, "--job", "j-done", "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == {"action": action, "job": "j-done", "state": "completed", "already": True}
    assert "cancelled_reason" not in item("j-done") and "paused_reason" not in item("j-done")


def test_unknown_odd_targets_are_one_line_and_exit_2(odd_stack):
    run, _ = odd_stack
    one_line_exit_2(run("pause", "--key", "my+contacts.csv"), "no job for key")
    one_line_exit_2(run("pause", "--key", "deep/er/unknown 名.csv"), "no job for key")
    one_line_exit_2(run("cancel", "--flow", "Flow1234"), "--job")
    one_line_exit_2(run("pause", "--key", "x" * 1100), "1024")
    one_line_exit_2(run("pause", "--job", ""), "exactly one")


# ------------------------------------------------------------------ the live local run, a file with an odd name
def test_a_live_local_run_of_an_oddly_named_file_is_seen_and_cancelled_by_its_name(tmp_path):

    from phonon_outbound_dev.simulator import PhononSimulator
    from tests.e2e.test_cli import read_report
    from tests.e2e.test_cli_control import FLOW, SID, cli, live_run, wait_for

    name = "my leads+1 é.csv"
    with PhononSimulator(flows={FLOW: SID}, rate_per_minute=600) as sim:
        with live_run(tmp_path, sim, 200, name) as (child, state):
            wait_for(lambda: sim.stats()["calls_accepted"] >= 20, 120, child)
            seen = cli("status", "--key", name, "--state-dir", str(state), "--json")
            assert seen.returncode == 0, seen.stderr
            pic = json.loads(seen.stdout)
            assert pic["file"] == f"incoming/{name}" and pic["state"] == "sending"
            cancelled = cli("cancel", "--key", name, "--reason", "wrong list", "--state-dir", str(state), "--json")
            assert cancelled.returncode == 0, cancelled.stderr
            answer = json.loads(cancelled.stdout)
            assert answer["key"] == f"incoming/{name}" and answer["job"] == pic["job"]
            stdout, stderr = child.communicate(timeout=180)
        stats = sim.stats()
    assert child.returncode == 1, stderr[-3000:]
    report = read_report(json.loads(stdout)["files"][0]["report"])
    assert len(report) == 200 and {r["status"] for r in report} == {"ACCEPTED", "CANCELLED"}
    assert stats["called_twice"] == []
