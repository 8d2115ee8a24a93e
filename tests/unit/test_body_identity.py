"""A chunk's request body is the same bytes in every process.

A resend is safe only because it is byte-identical: Phonon answers a body it has seen with
"201 Checksum Repeated" instead of placing the calls again (docs/phonon-api.md). The resend
runs in another Lambda process, whose string hashing (and so the iteration order of any set
or of a dict built from one) differs, so nothing on a call's way from the file to the body
may depend on that order: the numbers of a call, its keys, their order.

The whole way is taken, as on AWS: a contact file with several numbers per row (in several
columns, and several in one cell), keys and non-ASCII text → the real ingest handler → the SQS
chunk message → the real dispatch handler → the bundled simulator over HTTP, whose log of
accepted request bodies is compared byte for byte. moto in-process stands in for AWS. The run
happens in this process and in fresh interpreters with different `PYTHONHASHSEED` values; the
only thing allowed to differ is the job id inside the correlation key (it is derived from the
S3 object version, which moto draws at random per upload)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[2]

CSV = "\n".join([
    "client-identifier,phone,mobile,alternate phone,other numbers,Name,City,Note",
    *(f"CID-{i:03d},98765{i:05d},+91 91234 {i:05d},0 99887 {i:05d},"
      f"\"90000 {i:05d}; 80000 {i:05d}\",Ünïcødé अभिनंदन {i},Zürich-{i % 3},"
      f"\"quote \"\" comma , emoji 🙂 {i}\""
      for i in range(6)),
]) + "\n"


def chunk_bodies(stack, setenv) -> list[bytes]:
    """Ingest CSV as one file and dispatch its chunk(s): the request bodies Phonon accepted,
    with the job id replaced by "JOB"."""
    from phonon_outbound import wiring
    from phonon_outbound_dev.simulator import DEMO_FLOW_ID, DEMO_SECURITY_ID, PhononSimulator
    from tests.integration.conftest import Harness

    sim = PhononSimulator(flows={DEMO_FLOW_ID: DEMO_SECURITY_ID}, seed=7).start()
    try:
        env = stack.function_environment()
        env.update({"API_URL": sim.url, "DEFAULT_FLOW_ID": DEMO_FLOW_ID, "POWERTOOLS_METRICS_DISABLED": "true",
                    "DISPATCH_PARALLELISM": "1", "EXPRESS_MAX_ROWS": "0"})  # one lane: the harness drains the chunk queue
        for k, v in env.items():
            setenv(k, v)
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name=f"{env['FLOW_SECRET_PREFIX']}{DEMO_FLOW_ID}", SecretString=json.dumps({"security-id": DEMO_SECURITY_ID}))
        wiring.reset()
        h = Harness(stack, sim, boto3.client("s3", region_name="us-east-1"),
                    boto3.client("sqs", region_name="us-east-1"), env)
        obj = h.upload("bodies.csv", CSV.encode())
        h.ingest(obj)
        h.drain(timeout=60)
        return [body.replace(obj.job_id.encode(), b"JOB") for body in sim.accepted_bodies()]
    finally:
        sim.stop()
        wiring.reset()


_IN_A_FRESH_PROCESS = """
import os, sys
from pathlib import Path
import boto3
from moto import mock_aws
from phonon_outbound_dev.local.cfn import LocalStack, load_template
from tests.unit.test_body_identity import chunk_bodies

with mock_aws():
    stack = LocalStack(load_template(Path("template.yaml")), Path("."))
    stack.create_resources(boto3.session.Session(region_name="us-east-1"))
    bodies = chunk_bodies(stack, os.environ.__setitem__)
sys.stdout.buffer.write(b"\\n".join(bodies))
"""


def start_in_a_fresh_process(hash_seed: str) -> subprocess.Popen:
    paths = [str(ROOT), *(str(ROOT / p) for p in ("layers/outbound", "devkit", "functions/ingest",
                                                    "functions/dispatch", "functions/webhook"))]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": os.pathsep.join(paths),
           "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_NAMESPACE": "Test"}
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        env.pop(key, None)
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"})
    return subprocess.Popen([sys.executable, "-c", _IN_A_FRESH_PROCESS], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def bodies_of(process: subprocess.Popen) -> list[bytes]:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode(errors="replace")[-3000:]
    return out.split(b"\n")


def test_a_chunks_body_is_the_same_bytes_in_processes_with_different_hash_seeds(stack, monkeypatch):
    # Given the same file's way, from the upload to Phonon, started in fresh interpreters whose
    # string hashing differs (0 is no randomisation at all)
    started = {seed: start_in_a_fresh_process(seed) for seed in ("0", "1", "2718")}
    try:
        # and in this process: a file whose rows each give five numbers (three columns, two in one
        # cell), keys and non-ASCII text
        here = chunk_bodies(stack, monkeypatch.setenv)
        assert len(here) == 1
        calls = json.loads(here[0])["calls"]
        assert len(calls) == 6
        assert calls[2]["contact-numbers"] == ["919876500002", "919123400002", "919988700002", "919000000002",
                                               "918000000002"]
        assert {k["value"] for k in calls[2]["keys"]} >= {"Ünïcødé अभिनंदन 2", "Zürich-2"}
        assert "Ünïcødé".encode() in here[0]  # sent as UTF-8, not \\u escapes
        # Then every process sent the very same bytes
        for seed, process in started.items():
            assert bodies_of(process) == here, f"PYTHONHASHSEED={seed} built another body"
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
