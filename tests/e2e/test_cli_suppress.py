"""`phonon-outbound suppress …`, `check --suppress` and `run --suppress` as a user runs them
(in-process `main`, the local state directory; `run` with the embedded AWS and the simulator)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from phonon_outbound.status import Status
from phonon_outbound.suppression import Hasher
from phonon_outbound_dev.cli import main

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def contacts(path: Path, n: int) -> Path:
    path.write_text("client-identifier,phone\n" + "".join(f"C{i},98{i:08d}\n" for i in range(n)))
    return path


def report(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_add_list_find_remove_in_the_local_state(tmp_path, capsys):
    state = ["--state-dir", str(tmp_path / "st")]
    assert main(["suppress", "add", "+91 98000 00001", "098000 00002", *state]) == 0
    assert main(["suppress", "add", "C7", "--client-id", "--flow", "AbCd1234", "--hours", "2", *state]) == 0
    capsys.readouterr()
    assert main(["suppress", "list", "--json", *state]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(e["kind"] for e in listed) == ["client-identifier", "number", "number"]
    assert next(e for e in listed if e["kind"] == "client-identifier")["flow"] == "AbCd1234"
    saved = (tmp_path / "st" / "suppression.jsonl").read_text()
    assert "9800000001" not in saved and "C7" not in saved and "98000" not in json.dumps(listed)
    assert main(["suppress", "list", "--find", "9800000001", "--json", *state]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert main(["suppress", "remove", "+919800000001", *state]) == 0
    assert main(["suppress", "list", "--json", *state]) == 0
    assert len(json.loads(capsys.readouterr().out.splitlines()[-1])) == 2
    assert main(["suppress", "list", "--find", "12", *state]) == 2  # not a number: a usage error


def test_check_shows_what_would_be_suppressed(tmp_path, capsys):
    dnc = tmp_path / "dnc.csv"
    dnc.write_text("phone,client-identifier\n+91 98000 00003,X\n,C5\n")
    assert main(["suppress", "import", str(dnc), "--state-dir", str(tmp_path / "st")]) == 0
    assert "2 entries added from 2 rows, 1 rows without a valid number" in capsys.readouterr().out
    f = contacts(tmp_path / "c.csv", 6)
    code = main(["check", str(f), "--flow-id", "AbCd1234", "--out", str(tmp_path / "out"), "--json",
                 "--suppress", str(dnc)])
    assert code == 1  # some row is not ACCEPTED
    result = json.loads(capsys.readouterr().out)
    assert result["totals"]["suppressed"] == 1 and result["totals"]["accepted"] == 5
    rows = report(result["files"][0]["report"])
    assert rows[3]["status"] == Status.SUPPRESSED and "--suppress dnc.csv" in rows[3]["reason"]
    assert "9800000003" not in rows[3]["reason"]


def test_run_with_suppress_and_the_saved_list(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    state = tmp_path / "st"
    assert main(["suppress", "add", "9800000001", "--state-dir", str(state)]) == 0
    capsys.readouterr()
    dnc = tmp_path / "dnc.csv"
    dnc.write_text("phone\n9800000002\n")
    f = contacts(tmp_path / "c.csv", 4)
    # a process of its own, as a user runs it (the run takes over the process's loggers)
    proc = subprocess.run([sys.executable, "-m", "phonon_outbound_dev.cli", "run", str(f), "--flow-id", "AbCd1234",
                           "--out", str(tmp_path / "out"), "--json", "--state-dir", str(state), "--suppress", str(dnc)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("layers/outbound",
                                                                                                "devkit"))})
    assert proc.stdout, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[0])
    assert proc.returncode == 1 and result["totals"]["suppressed"] == 2 and result["totals"]["accepted"] == 2
    rows = report(result["files"][0]["report"])
    assert [r["status"] for r in rows] == [Status.ACCEPTED, Status.SUPPRESSED, Status.SUPPRESSED, Status.ACCEPTED]
    assert "source: cli" in rows[1]["reason"] and "--suppress dnc.csv" in rows[2]["reason"]
    # the option's entries were for that run only; the saved list keeps its own
    assert main(["suppress", "list", "--json", "--state-dir", str(state)]) == 0
    assert [e["source"] for e in json.loads(capsys.readouterr().out)] == ["cli"]


def test_against_a_stack_the_stacks_table_and_salt(stack, capsys):
    """`--stack`: the list named by the stack's outputs (moto, the tables of template.yaml)."""
    table = stack.physical["SuppressionTable"]["Ref"]
    salt_arn = stack.physical["SuppressionSalt"]["Ref"]
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    cfn.create_stack(StackName="phonon", TemplateBody=json.dumps({
        "Resources": {"Q": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "q"}}},
        "Outputs": {"SuppressionTableName": {"Value": table}, "SuppressionSaltSecretArn": {"Value": salt_arn}}}))
    where = ["--stack", "phonon", "--region", "us-east-1"]
    assert main(["suppress", "add", "09812345670", "--hours", "1", *where]) == 0
    assert main(["suppress", "list", "--find", "+91 98123 45670", "--json", *where]) == 0
    capsys.readouterr()
    assert main(["suppress", "list", "--json", *where]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["kind"] == "number" and entry["source"] == "cli" and entry["expires"]
    # hashed with the stack's salt: what the functions compute for the same number
    salt = boto3.client("secretsmanager", region_name="us-east-1").get_secret_value(SecretId=salt_arn)["SecretString"]
    assert entry["hash"] == Hasher(salt).number_key("919812345670")
    assert "9812345670" not in json.dumps(boto3.client("dynamodb", region_name="us-east-1").scan(TableName=table))
    assert main(["suppress", "remove", entry["hash"], *where]) == 0
    assert main(["suppress", "list", "--json", *where]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == []
    assert main(["suppress", "list", "--stack", "nope", "--region", "us-east-1"]) == 2  # one line, exit 2
