"""Commands that talk to a deployed stack (`redrive`): region, profile and credentials from the
options or the usual AWS chain, and every failure to reach the stack is one line, exit 2, never
a traceback. Against moto (server mode for the child process), never real AWS."""

from __future__ import annotations

import json
import os
import subprocess

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from phonon_outbound_dev.cli import main
from tests.e2e.test_cli import CLI, ROOT

pytestmark = pytest.mark.e2e

STACK_TEMPLATE = {
    "Resources": {"Chunks": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "chunks"}},
                  "ChunksDlq": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "chunks-dlq"}}},
    "Outputs": {"ChunkQueueUrl": {"Value": {"Ref": "Chunks"}},
                "ChunkDeadLetterQueueUrl": {"Value": {"Ref": "ChunksDlq"}}},
}


def clean_env(tmp_path, **extra: str) -> dict[str, str]:
    """No AWS settings from this machine: no region, no credentials, no profile files, no IMDS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "outbound"), str(ROOT / "devkit")]), "AWS_CONFIG_FILE": str(tmp_path / "none"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"})
    env.update(extra)
    return env


def redrive(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "redrive", *args], cwd=ROOT, env=clean_env(tmp_path, **env), capture_output=True,
                          text=True, timeout=120)


def one_line_exit_2(proc: subprocess.CompletedProcess, words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr


CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def test_missing_region_is_one_line_and_exit_2(tmp_path):
    one_line_exit_2(redrive(tmp_path, "--stack", "phonon", **CREDS), "no AWS region")


def test_missing_credentials_is_one_line_and_exit_2(tmp_path):
    one_line_exit_2(redrive(tmp_path, "--stack", "phonon", "--region", "eu-west-1"), "no AWS credentials")


def test_unknown_profile_is_one_line_and_exit_2(tmp_path):
    one_line_exit_2(redrive(tmp_path, "--stack", "phonon", "--profile", "nosuch", "--region", "eu-west-1"),
                    "profile 'nosuch' not found")


@pytest.fixture
def moto_server():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_unknown_stack_and_a_stack_without_our_outputs_are_one_line_and_exit_2(tmp_path, moto_server):
    env = {**CREDS, "AWS_ENDPOINT_URL": moto_server}
    one_line_exit_2(redrive(tmp_path, "--stack", "nosuch", "--region", "eu-west-1", **env),
                    "stack 'nosuch' not found in eu-west-1")
    cfn = boto3.client("cloudformation", region_name="eu-west-1", endpoint_url=moto_server, aws_access_key_id="x",
                       aws_secret_access_key="x")
    cfn.create_stack(StackName="other", TemplateBody=json.dumps({"Resources": STACK_TEMPLATE["Resources"]}))
    one_line_exit_2(redrive(tmp_path, "--stack", "other", "--region", "eu-west-1", **env), "has no output")


def test_redrive_with_region_and_profile_moves_the_dead_letters(tmp_path, moto_server):
    # Given a profile that names the region and the credentials, and a stack with two dead letters
    (tmp_path / "config").write_text("[profile ops]\nregion = eu-west-1\n")
    (tmp_path / "credentials").write_text("[ops]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    kw = {"region_name": "eu-west-1", "endpoint_url": moto_server, "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    boto3.client("cloudformation", **kw).create_stack(StackName="phonon", TemplateBody=json.dumps(STACK_TEMPLATE))
    sqs = boto3.client("sqs", **kw)
    dlq = sqs.get_queue_url(QueueName="chunks-dlq")["QueueUrl"]
    queue = sqs.get_queue_url(QueueName="chunks")["QueueUrl"]
    for body in ("a", "b"):
        sqs.send_message(QueueUrl=dlq, MessageBody=body)
    proc = subprocess.run([*CLI, "redrive", "--stack", "phonon", "--profile", "ops"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120,
                          env={**clean_env(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "config"),
                               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
                               "AWS_ENDPOINT_URL": moto_server})
    assert proc.returncode == 0, proc.stderr
    assert "moved 2 chunk message(s)" in proc.stdout
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in got) == ["a", "b"]


def test_an_aws_refusal_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        code = main(["redrive", "--region", "eu-west-1",
                     "--dlq-url", "https://sqs.eu-west-1.amazonaws.com/123456789012/gone-dlq",
                     "--queue-url", "https://sqs.eu-west-1.amazonaws.com/123456789012/gone"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "AWS refused ReceiveMessage" in err
