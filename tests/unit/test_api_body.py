import json

import pytest

from phonon_outbound.api.body import (
    API_VERSION,
    MAX_BODY_BYTES,
    body_sha256,
    body_size,
    build_body,
    call_size,
    envelope_size,
    redact,
)

SEC = "a0095e7ac42205cb1388d7ac0d2db4afad1b5b2304907a27a6154bf93253088c"
FLOW = "wruHzoCK"


def _call(i: int, **extra) -> dict:
    call = {
        "client-identifier": f"AcmeBankCampaign_{i:03d}",
        "start-time": "2031-06-29T09:42:00+05:30",
        "contact-numbers": ["916262772728"],
        "keys": [{"name": "$flow.key.LeadID", "value": "130586000000165414"}],
    }
    call.update(extra)
    return call


def test_exact_bytes_match_the_interface():
    calls = [_call(1)]
    expected = json.dumps(
        {"api-version": "1.0", "security-id": SEC, "flow-id": FLOW, "calls": calls},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    assert build_body(SEC, FLOW, calls) == expected
    assert build_body(SEC, FLOW, calls).startswith(b'{"api-version":"1.0","security-id":')
    assert API_VERSION == "1.0"
    assert MAX_BODY_BYTES == 262144


def test_deterministic_across_calls_and_json_roundtrip():
    calls = [_call(i) for i in range(5)]
    first = build_body(SEC, FLOW, calls)
    # Same inputs → same bytes, also after the calls went through JSON (an SQS message).
    again = build_body(SEC, FLOW, json.loads(json.dumps(calls)))
    assert first == again
    assert body_sha256(first) == body_sha256(again)
    # One byte of difference in any call changes the body.
    changed = [*calls[:4], _call(4, **{"client-identifier": "AcmeBankCampaign_005"})]
    assert build_body(SEC, FLOW, changed) != first


def test_non_ascii_is_utf8_not_escaped():
    body = build_body(SEC, FLOW, [_call(1, keys=[{"name": "$flow.key.Name", "value": "अभिनंदन Ünïcødé"}])])
    assert "अभिनंदन Ünïcødé".encode() in body
    assert b"\\u" not in body


def test_compact_no_whitespace():
    body = build_body(SEC, FLOW, [_call(1)])
    assert b", " not in body and b": " not in body and b"\n" not in body


@pytest.mark.parametrize("n", [0, 1, 2, 7, 50])
def test_size_helpers_are_exact(n):
    calls = [_call(i, keys=[{"name": "$flow.key.X", "value": "é" * i}]) for i in range(n)]
    assert body_size(SEC, FLOW, calls) == len(build_body(SEC, FLOW, calls))
    assert envelope_size(SEC, FLOW) == len(build_body(SEC, FLOW, []))
    if calls:
        assert call_size(calls[0]) == len(json.dumps(calls[0], ensure_ascii=False, separators=(",", ":")).encode())


def test_nan_is_refused_rather_than_sent_as_invalid_json():
    with pytest.raises(ValueError):
        build_body(SEC, FLOW, [_call(1, keys=[{"name": "$flow.key.X", "value": float("nan")}])])


def test_type_errors():
    with pytest.raises(TypeError):
        build_body(SEC, FLOW, ({"a": 1},))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        build_body(None, FLOW, [])  # type: ignore[arg-type]


def test_redact_scrubs_security_id_shapes_only():
    assert SEC not in redact(f"bad request for {SEC}!")
    assert "[redacted]" in redact(f"x {SEC} y")
    # shorter or longer alphanumeric runs are left alone (request-ids, uuids, numbers)
    assert redact("916262772728 c46e46f4-dc58-4839-9483-f7dd9aac28a0") == "916262772728 c46e46f4-dc58-4839-9483-f7dd9aac28a0"
    assert redact("a" * 65) == "a" * 65


_BODY_IN_A_FRESH_PROCESS = """
import sys
from phonon_outbound.api.body import build_body
calls = [
    {"client-identifier": "AcmeBankCampaign_%03d" % i, "start-time": "2031-06-29T09:42:00+05:30",
     "contact-numbers": ["91626277%04d" % i, "91987654%04d" % i, "4930901820%02d" % i],
     "keys": [{"name": "$flow.key.LeadID", "value": str(130586000000165414 + i)},
              {"name": "$flow.key.Name", "value": "Ünïcødé अभिनंदन %d" % i},
              {"name": "$flow.key.Zone", "value": "z%d" % (i % 3)},
              {"name": "$flow.key.OutboundRef", "value": "job-1.%d" % (i + 1)}]}
    for i in range(7)
]
sys.stdout.buffer.write(build_body(sys.argv[1], sys.argv[2], calls))
"""


def test_the_same_calls_give_the_same_bytes_in_processes_with_different_hash_seeds():
    # Given a call with several numbers and keys, its body built in fresh interpreters whose
    # string hashing (and so set/dict iteration of str keys) differs
    import os
    import subprocess
    import sys

    bodies = []
    for seed in ("0", "1", "4242", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        bodies.append(subprocess.run([sys.executable, "-c", _BODY_IN_A_FRESH_PROCESS, SEC, FLOW], env=env, check=True,
                                     capture_output=True, timeout=60).stdout)
    # Then every process built the very same bytes (a resend is byte-identical: 201, not a second call)
    assert len(set(bodies)) == 1
    assert json.loads(bodies[0])["calls"][6]["contact-numbers"] == ["916262770006", "919876540006", "493090182006"]
