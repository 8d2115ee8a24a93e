"""Logger, Metrics and Tracer in one place (powertools), so every module shares them.

Log lines name jobs, chunks, rows and message ids, never a contact's number or a secret. As a
second line of defence the Logger's formatter masks every line before it is written
(`PiiMaskingFormatter`, with powertools' data masking): phone-like digit runs become `•••••`,
values under secret-looking keys (authorization, password, security-id, …) are erased, and
secret values registered with `register_secret` (the webhook's credentials, the flows'
security-ids) are erased wherever they appear, in the message, in extra keys and in tracebacks
(docs/webhook.md, "Personal data in logs").
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.utilities.data_masking import DataMasking

SERVICE = "phonon-outbound"
NAMESPACE = "PhononOutbound"

MASK = "•••••"
# A phone number in any usual writing: E.164 (+919812345670), national (09812345670), grouped
# (98123 45670, (0)98123-45670, 981.234.5670) — 7 or more digits joined by at most two of
# space ( ) . - between them, standing alone (not inside a word: the digits of a hex job id
# or request-id are left as they are, so log lines can still be correlated). An ISO date
# (2026-11-30) is not a number; times (10:31:02) and decimals (0.123) have too few digits.
PHONE_PATTERN = r"(?<![A-Za-z0-9])(?!\d{4}-\d{2}-\d{2}(?!\d))\+?\(?\d(?:[ ().\-]{0,2}\d){6,}(?![A-Za-z0-9])"
_SECRET_KEY = re.compile(r"authori[sz]ation|password|passwd|secret|security[-_ ]?id|credential|token|api[-_]?key",
                         re.IGNORECASE)
# A Basic credential in a header or a dumped request; a security-id in a dumped Create API body.
_INLINE_SECRETS = (
    (re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9+/=._~-]{4,}"), r"\1 " + MASK),
    (re.compile(r"(?i)([\"']?security[-_ ]?id[\"']?\s*[:=]\s*[\"']?)[^\"',\s}]+"), r"\1" + MASK),
)
# Keys powertools itself writes: never a contact's data, and masking would garble them (the
# timestamp is digits).
_OWN_KEYS = frozenset({"timestamp", "level", "location", "service", "sampling_rate", "cold_start", "function_name",
                       "function_memory_size", "function_arn", "function_request_id", "xray_trace_id"})

_masker = DataMasking()
# Longest first, so a secret that contains another is erased whole. Replaced, never mutated:
# a formatter in another thread reads it without a lock.
_secrets: tuple[str, ...] = ()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """A value that must never be written to a log line (e.g. a security-id, a password)."""
    global _secrets
    if value and len(value) >= 4 and value not in _secrets:
        with _secrets_lock:
            _secrets = tuple(sorted({*_secrets, value}, key=len, reverse=True))


def mask_text(text: str) -> str:
    """`text` with registered secrets, inline credentials and phone-like numbers masked."""
    if not text:
        return text
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, repl in _INLINE_SECRETS:
        text = pattern.sub(repl, text)
    return _masker.erase(text, regex_pattern=PHONE_PATTERN, mask_format=MASK)


def mask_value(value: Any, key: str = "") -> Any:
    """A log line's value, masked: secret-looking keys erased whole, strings masked, containers walked."""
    if key and _SECRET_KEY.search(key) and value not in (None, "", [], {}):
        return _masker.erase(value)
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: mask_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [mask_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return mask_text(str(value))  # anything else is written with str() (e.g. an exception object)


class PiiMaskingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter that masks every line before it is serialised."""

    def serialize(self, log: dict) -> str:  # type: ignore[override]
        try:
            masked = {k: (v if k in _OWN_KEYS else mask_value(v, k)) for k, v in log.items()}
        except Exception as exc:  # noqa: BLE001 - never let logging's error path print the raw record
            masked = {k: log[k] for k in ("level", "location", "timestamp", "service") if k in log}
            masked["message"] = f"log line withheld: it could not be masked ({type(exc).__name__})"
        return super().serialize(masked)


# stderr: Lambda sends both streams to CloudWatch, and locally stdout is reserved for `--json`.
logger = Logger(service=SERVICE, logger_handler=logging.StreamHandler(sys.stderr),
                logger_formatter=PiiMaskingFormatter())
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE, disabled=None)


_metrics_on = True


def count(name: str, value: float = 1, unit: str = "Count") -> None:
    """Add to a CloudWatch metric (EMF). The local runner turns metrics off: powertools' own
    switch (POWERTOOLS_METRICS_DISABLED) stops the flush but not the automatic flush at 100
    values, which would then print metric blobs into `--json` output."""
    if _metrics_on:
        metrics.add_metric(name=name, unit=unit, value=value)


def disable_metrics() -> None:
    global _metrics_on
    _metrics_on = False
    metrics.clear_metrics()
