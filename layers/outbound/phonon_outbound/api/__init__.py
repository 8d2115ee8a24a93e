"""Phonon Outbound Create API: request bodies, the HTTP client, answer classification.

The bundled simulator lives in :mod:`phonon_outbound.api.simulator` (imported on demand).
"""

from .body import API_VERSION, MAX_BODY_BYTES, body_sha256, body_size, build_body, call_size, envelope_size
from .classify import CODES, RETRY_SAME_BYTES, SUCCESS, Kind, Verdict, classify
from .client import ApiAnswer, PhononClient

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
