"""Which flow a file belongs to, whether it exists, and its security-id (from Secrets Manager,
never logged).

Ingest only asks whether a flow exists (`FlowSecrets.exists`: `secretsmanager:DescribeSecret`,
which returns the secret's metadata and never its value), so the ingest function needs no
permission to read any security-id; dispatch reads the value (`FlowSecrets.security_id`)."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import boto3
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import ClientError

from .observability import register_secret

FLOW_ID_RE = re.compile(r"^[A-Za-z0-9]{8}$")
SECURITY_ID_RE = re.compile(r"^[A-Za-z0-9]{64}$")


def shown_flow(flow: str) -> str:
    """A flow id fit for a reason: quoted when shaped like one; else only its length (the value
    may be a phone number, or a security-id pasted into the wrong field)."""
    return f"'{flow}'" if FLOW_ID_RE.match(flow) else f"(a value of {len(flow)} characters)"


def not_a_flow_id(flow: str) -> str:
    return f"flow-id {shown_flow(flow)} is not a Phonon flow id (8 letters or digits)"


class UnknownFlow(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def flow_from_key(key: str) -> str | None:
    """`incoming/<flow-id>/file.csv` → flow-id. Only a segment shaped like a Phonon flow id
    (8 letters or digits) counts, so ordinary sub-folders (`incoming/2026-11/…`) do not, nor
    `incoming/requests/` (the files written for requests that arrive as events, docs/events-in.md)."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == "incoming" and parts[1] != "requests" and FLOW_ID_RE.match(parts[1]):
        return parts[1]
    return None


def resolve_flow(metadata_flow: str | None, file_flow: str | None, key: str,
                 default_flow: str | None) -> tuple[str | None, str]:
    """The order of docs/contract.md ("Which flow a file belongs to"): S3 metadata, the JSON
    file's own flow-id, the key prefix, the default."""
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
        self.client = client
        self.provider = SecretsProvider(boto3_client=client) if client is not None else SecretsProvider()
        self.max_age = max_age
        self._known: dict[str, float] = {}  # flow -> when DescribeSecret last found its secret
        self._lock = threading.Lock()

    def secret_name(self, flow: str) -> str:
        return f"{self.prefix}{flow}"

    def check(self, flow: str) -> None:
        """Raise UnknownFlow unless `flow` is shaped like a flow id and its secret exists (and is
        not scheduled for deletion). Other errors (throttling, access) propagate: a retry."""
        if not FLOW_ID_RE.match(flow):
            raise UnknownFlow(not_a_flow_id(flow))
        if not self.exists(flow):
            raise UnknownFlow(f"unknown flow '{flow}': no secret named '{self.secret_name(flow)}' holds its "
                              f"security-id")

    def exists(self, flow: str) -> bool:
        """Does the flow's secret exist? `DescribeSecret` (metadata only), cached for `max_age` s
        when found (powertools' parameters cache stores values, which ingest must not read)."""
        if not FLOW_ID_RE.match(flow):
            return False
        now = time.monotonic()
        with self._lock:
            seen = self._known.get(flow)
        if seen is not None and now - seen < self.max_age:
            return True
        if self.client is None:
            self.client = boto3.client("secretsmanager")
        try:
            meta = self.client.describe_secret(SecretId=self.secret_name(flow))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return False
            raise
        if meta.get("DeletedDate"):
            return False
        with self._lock:
            self._known[flow] = now
        return True

    def security_id(self, flow: str) -> str:
        if not FLOW_ID_RE.match(flow):
            raise UnknownFlow(not_a_flow_id(flow))
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
        register_secret(value)  # from now on the log formatter erases it wherever it appears
        return value
