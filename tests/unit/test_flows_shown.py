"""A flow-id that is not one is described, never echoed: a JSON file's own `flow-id` (or the
S3 metadata) may hold a phone number, or a security-id pasted into the wrong field."""

from __future__ import annotations

import json

import pytest

from phonon_outbound.flows import FlowSecrets, UnknownFlow
from phonon_outbound.settings import Settings
from phonon_outbound_dev.check import check_file

SID = "Zx9" * 21 + "Q"  # 64 letters and digits: shaped like a security-id


@pytest.mark.parametrize("flow", [SID, "919876543210", "name@example.com"])
def test_a_malformed_flow_id_is_described_not_echoed(flow):
    with pytest.raises(UnknownFlow) as exc:
        FlowSecrets("phonon-outbound/flows/", client=object()).check(flow)
    assert flow not in exc.value.reason
    assert exc.value.reason == f"flow-id (a value of {len(flow)} characters) is not a Phonon flow id (8 letters or digits)"


def test_check_does_not_echo_a_security_id_given_as_the_json_files_flow_id(tmp_path):
    path = tmp_path / "calls.json"
    path.write_text(json.dumps({"flow-id": SID, "calls": [{"client-identifier": "A",
                                                          "contact-numbers": ["9876543210"]}]}))
    summary = check_file(path, Settings(), tmp_path / "out")
    assert "flow-id" in summary["error"] and SID not in summary["error"]
    assert SID not in (tmp_path / "out" / "calls.json.results.csv").read_text()
    assert SID not in (tmp_path / "out" / "calls.json.summary.json").read_text()
