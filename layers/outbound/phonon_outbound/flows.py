"""Which flow a file belongs to, and the flow's security-id (from Secrets Manager, never logged)."""

from __future__ import annotations

import json
import re
from typing import Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

FLOW_ID_RE = re.compile(r"^[A-Za-z0-9]{8}$")
SECURITY_ID_RE = re.compile(r"^[A-Za-z0-9]{64}$")


class UnknownFlow(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def flow_from_key(key: str) -> str | None:
    """`incoming/<flow-id>/file.csv` → flow-id. Only a segment shaped like a Phonon flow id
    (8 letters or digits) counts, so ordinary sub-folders (`incoming/2026-11/…`) do not."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == "incoming" and FLOW_ID_RE.match(parts[1]):
        return parts[1]
    return None


def resolve_flow(metadata_flow: str | None, file_flow: str | None, key: str,
                 default_flow: str | None) -> tuple[str | None, str]:
    """SPEC order: S3 metadata, the JSON file's own flow-id, the key prefix, the default."""
    for flow, source in ((metadata_flow, "object metadata"), (file_flow, "the file's flow-id"),
                         (flow_from_key(key), "the key prefix"), (default_flow, "the default flow")):
        if flow and str(flow).strip():
            return str(flow).strip(), source
    return None, ""


class FlowSecrets:
    """Security-ids per flow, stored as `<prefix><flow-id>` secrets (plain string, or JSON with
    a `security-id` field). Cached for `max_age` seconds by powertools' parameters utility."""

    def __init__(self, prefix: str, client: Any = None, max_age: int = 300):
        self.prefix = prefix
        self.provider = SecretsProvider(boto3_client=client) if client is not None else SecretsProvider()
        self.max_age = max_age

    def security_id(self, flow: str) -> str:
        if not FLOW_ID_RE.match(flow):
            raise UnknownFlow(f"flow-id '{flow}' is not a Phonon flow id (8 letters or digits)")
        name = f"{self.prefix}{flow}"
        try:
            raw = self.provider.get(name, max_age=self.max_age)
        except GetParameterError:
            raise UnknownFlow(f"unknown flow '{flow}': no secret named '{name}' holds its security-id") from None
        value = raw.decode() if isinstance(raw, bytes) else str(raw)
        value = value.strip()
        if value.startswith("{"):
            try:
                value = str(json.loads(value).get("security-id", "")).strip()
            except (ValueError, AttributeError):
                value = ""
        if not SECURITY_ID_RE.match(value):
            raise UnknownFlow(f"the secret '{name}' for flow '{flow}' does not hold a 64-character security-id")
        return value
