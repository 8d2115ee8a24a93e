"""A flow's security-id, once read from Secrets Manager, is erased from every log line."""

from __future__ import annotations

import boto3
from moto import mock_aws

from phonon_outbound.flows import FlowSecrets
from phonon_outbound.observability import MASK, mask_text

SID = "Zq7" + "x4" * 28 + "Lm9ab"  # 64 alphanumerics, not a shape the text patterns know


@mock_aws
def test_a_security_id_read_for_a_flow_is_never_written_to_a_log_line():
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    sm.create_secret(Name="phonon-outbound/flows/Flow0001", SecretString=SID)
    assert SID in mask_text(f"body was {SID}")  # unknown to the masker until it is read
    assert FlowSecrets("phonon-outbound/flows/", sm).security_id("Flow0001") == SID
    masked = mask_text(f"body was {SID}!")
    assert SID not in masked and MASK in masked
