"""The request body of Phonon's Outbound Create API, as deterministic bytes.

The same (security-id, flow-id, calls) always give the same bytes. That matters: Phonon
refuses a byte-identical body with ``201 Checksum Repeated``, so a resend of the same bytes
can never place a call twice (docs/phonon-api.md). Never re-serialise a body differently between
attempts (no ``sort_keys``, no pretty printing): build it with :func:`build_body` every time.

The body contains the flow's security-id, a secret: never log it, never put it in a message.

Size helpers: with the compact separators used here the serialised size is exactly additive::

    len(build_body(s, f, calls))
        == envelope_size(s, f) + sum(call_size(c) for c in calls) + max(0, len(calls) - 1)

so a chunker can pack calls against :data:`MAX_BODY_BYTES` without serialising the body
again for every call it adds (see :func:`body_size`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "API_VERSION",
    "MAX_BODY_BYTES",
    "body_sha256",
    "body_size",
    "build_body",
    "call_size",
    "envelope_size",
    "redact",
]

#: The only api-version Phonon accepts.
API_VERSION = "1.0"

#: Phonon does not process a request body larger than 256 KB. Hard ceiling on the
#: serialised body, security-id included.
MAX_BODY_BYTES = 256 * 1024

_SEPARATORS = (",", ":")


def _dumps(obj: Any) -> bytes:
    # allow_nan=False: a NaN/Infinity would be serialised as invalid JSON; fail loudly instead.
    return json.dumps(obj, ensure_ascii=False, separators=_SEPARATORS, allow_nan=False).encode("utf-8")


def build_body(security_id: str, flow_id: str, calls: list[dict]) -> bytes:
    """Serialise one Create request.

    Exactly ``json.dumps({"api-version": "1.0", "security-id": …, "flow-id": …, "calls": …},
    ensure_ascii=False, separators=(",", ":")).encode("utf-8")``. Calls are serialised as given
    (their key order is kept), so the same inputs give the same bytes.
    """
    if not isinstance(security_id, str) or not isinstance(flow_id, str):
        raise TypeError("security_id and flow_id must be str")
    if not isinstance(calls, list):
        raise TypeError("calls must be a list of call objects")
    return _dumps(
        {"api-version": API_VERSION, "security-id": security_id, "flow-id": flow_id, "calls": calls}
    )


def envelope_size(security_id: str, flow_id: str) -> int:
    """Size in bytes of a body with an empty ``calls`` list."""
    return len(build_body(security_id, flow_id, []))


def call_size(call: dict) -> int:
    """Size in bytes of one call object as it appears inside a body."""
    return len(_dumps(call))


def body_size(security_id: str, flow_id: str, calls: Iterable[dict]) -> int:
    """Exact ``len(build_body(security_id, flow_id, list(calls)))`` computed additively."""
    total = envelope_size(security_id, flow_id)
    n = 0
    for call in calls:
        total += call_size(call)
        n += 1
    return total + max(0, n - 1)


def body_sha256(body: bytes) -> str:
    """Hex sha256 of a body: a safe handle for a body in logs (it reveals nothing)."""
    return hashlib.sha256(body).hexdigest()


_SECRETISH = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{64}(?![A-Za-z0-9])")


def redact(text: str) -> str:
    """Replace anything shaped like a security-id (64 alphanumerics) with ``[redacted]``.

    A belt-and-braces scrub for text that came from outside (response bodies, exception
    messages) before it goes into a reason or a log line.
    """
    return _SECRETISH.sub("[redacted]", text)
