"""Phonon Outbound Create API: request bodies, the HTTP client, answer classification.

The names below are loaded on first use (PEP 562), not when the package is imported: ingest
builds request bodies (`api.body`) but never sends them, and importing this package must not
import the HTTP client and `requests` into the ingest Lambda (docs/benchmarks.md, "Cold
start"). The Phonon simulator used by tests and local runs is not part of this package: it
is in the developer kit, :mod:`phonon_outbound_dev.simulator` (devkit/, never in the layer).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .body import (
        API_VERSION,
        MAX_BODY_BYTES,
        body_sha256,
        body_size,
        build_body,
        call_size,
        envelope_size,
    )
    from .classify import CODES, RETRY_SAME_BYTES, SUCCESS, Kind, Verdict, classify
    from .client import ApiAnswer, PhononClient

_WHERE = {
    **dict.fromkeys(("API_VERSION", "MAX_BODY_BYTES", "body_sha256", "body_size", "build_body", "call_size",
                     "envelope_size"), "body"),
    **dict.fromkeys(("CODES", "RETRY_SAME_BYTES", "SUCCESS", "Kind", "Verdict", "classify"), "classify"),
    **dict.fromkeys(("ApiAnswer", "PhononClient"), "client"),
}

__all__ = [
    "API_VERSION",
    "CODES",
    "MAX_BODY_BYTES",
    "RETRY_SAME_BYTES",
    "SUCCESS",
    "ApiAnswer",
    "Kind",
    "PhononClient",
    "Verdict",
    "body_sha256",
    "body_size",
    "build_body",
    "call_size",
    "classify",
    "envelope_size",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once found, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
