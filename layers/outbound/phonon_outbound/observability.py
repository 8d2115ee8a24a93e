"""Logger, Metrics and Tracer in one place (powertools), so every module shares them.

Log lines name jobs, chunks, rows and message ids, never a contact's number or a secret. As a
second line of defence the Logger masks every line before it is written, with powertools'
data masking: a filter on the logger (`PiiMaskingFilter`) masks each record before any
handler sees it, and its JSON formatter (`PiiMaskingFormatter`) masks what powertools adds to
the line. Phone-like digit runs become `•••••`, values under secret-looking keys
(authorization, password, security-id, …) are erased, and secret values registered with
`register_secret` (the webhook's credentials, the flows' security-ids) are erased wherever
they appear: in the message, in extra keys and in tracebacks
(docs/webhook.md, "Personal data in logs").

The Tracer is built only when tracing is on (`LazyTracer`): powertools' `Tracer()` imports the
X-Ray SDK even when it is disabled, which was the largest part of a handler's import time
(docs/benchmarks.md, "Cold start").
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable
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


_PHONE_LIKE = re.compile(PHONE_PATTERN)


def _keep_last_three(match: re.Match[str]) -> str:
    digits = [ch for ch in match.group() if ch.isdigit()]
    return "•" * (len(digits) - 3) + "".join(digits[-3:])


def mask_numbers(text: str) -> str:
    """Every phone-like number (PHONE_PATTERN: 7+ digits, also written with spaces, dashes, dots
    or brackets, as in "+91 98765 43210" or "(987) 654-3210") masked to its last 3 digits: for
    short texts written into a job item or a report (an operator's reason, an API error, a
    source), where a log's full masking (`mask_text`) is not needed and the last digits help a
    person tell two numbers apart. A regex, not a masking library: the text is free text, not a
    structured record."""
    return _PHONE_LIKE.sub(_keep_last_three, text)


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


_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class PiiMaskingFilter(logging.Filter):
    """The same masking on the record itself, before any handler sees it: a handler someone
    adds to the service logger later (a log file, a terminal) with a formatter of its own
    writes masked text too. Message, extra keys and the traceback text are masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if isinstance(record.msg, dict):  # powertools logs a dict message as JSON
                record.msg = mask_value(record.msg)
            else:
                record.msg = mask_text(record.getMessage())
                record.args = ()
            for key in [k for k in record.__dict__ if k not in _RECORD_ATTRS]:
                record.__dict__[key] = mask_value(record.__dict__[key], key)
            if record.exc_info and not record.exc_text:
                record.exc_text = mask_text("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        except Exception as exc:  # noqa: BLE001 - never let a raw record through
            record.msg, record.args = f"log line withheld: it could not be masked ({type(exc).__name__})", ()
            record.exc_info = record.exc_text = None
        return True


# stderr: Lambda sends both streams to CloudWatch, and locally stdout is reserved for `--json`.
logger = Logger(service=SERVICE, logger_handler=logging.StreamHandler(sys.stderr),
                logger_formatter=PiiMaskingFormatter())
logger.addFilter(PiiMaskingFilter())
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

_TRUE = frozenset({"1", "y", "yes", "t", "true", "on"})  # what powertools reads as true in its env vars


def tracing_enabled() -> bool:
    """Whether powertools' Tracer would trace here, decided the way it decides it: not when
    POWERTOOLS_TRACE_DISABLED is true, and only inside Lambda (LAMBDA_TASK_ROOT set) but not
    under `sam local` (AWS_SAM_LOCAL) or chalice's local mode. On AWS the template turns X-Ray
    on (`Tracing: Active`) and sets no POWERTOOLS_TRACE_DISABLED, so the functions trace there.
    Whether X-Ray is Active or PassThrough cannot be read at init (Lambda sets the daemon
    address either way), so, as for powertools, being inside Lambda is the test."""
    if os.getenv("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in _TRUE:
        return False
    return bool(os.getenv("LAMBDA_TASK_ROOT")) and not (os.getenv("AWS_SAM_LOCAL") or os.getenv("AWS_CHALICE_CLI_MODE"))


class LazyTracer:
    """powertools' Tracer, built the first time it is needed while tracing is on, never while
    it is off. Off, the decorators hand back the function itself (not a wrapper: nothing runs
    per call) and annotations and metadata are dropped, so the X-Ray SDK is never imported.
    The decision is taken when a decorator is applied, i.e. when the handler module is
    imported, which is also when powertools' Tracer reads the environment."""

    # What X-Ray patches: AWS calls (botocore) always; `requests` (the Phonon API client) only
    # in a process that has imported it (dispatch). powertools' default, X-Ray's patch_all,
    # imports every library it can patch (requests, sqlite3, …) into every function.
    PATCH_ALWAYS = ("botocore",)
    PATCH_IF_IMPORTED = ("requests",)

    def __init__(self, service: str):
        self.service = service
        self._tracer: Tracer | None = None
        self._lock = threading.Lock()

    def patch_modules(self) -> list[str]:
        return [*self.PATCH_ALWAYS, *(m for m in self.PATCH_IF_IMPORTED if m in sys.modules)]

    @property
    def enabled(self) -> bool:
        return self._tracer is not None or tracing_enabled()

    def real(self) -> Tracer:
        """The powertools Tracer (imports the X-Ray SDK and patches `patch_modules()`)."""
        with self._lock:
            if self._tracer is None:
                self._tracer = Tracer(service=self.service, disabled=None, patch_modules=self.patch_modules())
            return self._tracer

    def capture_lambda_handler(self, lambda_handler: Callable | None = None, **options: Any) -> Any:
        if lambda_handler is None:  # used as @tracer.capture_lambda_handler(capture_response=False)
            return functools.partial(self.capture_lambda_handler, **options)
        if not self.enabled:
            return lambda_handler
        return self.real().capture_lambda_handler(lambda_handler, **options)

    def capture_method(self, method: Callable | None = None, **options: Any) -> Any:
        if method is None:
            return functools.partial(self.capture_method, **options)
        if not self.enabled:
            return method
        return self.real().capture_method(method, **options)

    def put_annotation(self, key: str, value: Any) -> None:
        if self.enabled:
            self.real().put_annotation(key, value)

    def put_metadata(self, key: str, value: Any, namespace: str | None = None) -> None:
        if self.enabled:
            self.real().put_metadata(key, value, namespace)


tracer = LazyTracer(SERVICE)


_metrics_on = True


def count(name: str, value: float = 1, unit: str = "Count") -> None:
    """Add to a CloudWatch metric (EMF). The local runner turns metrics off: powertools' own
    switch (POWERTOOLS_METRICS_DISABLED) stops the flush but not the automatic flush at 100
    values, which would then print metric blobs into `--json` output."""
    if _metrics_on:
        metrics.add_metric(name=name, unit=unit, value=value)


def count_by(name: str, value: float, dimensions: dict[str, str], unit: str = "Count") -> None:
    """A metric with dimensions of its own besides `service` (e.g. `flow`), written at once as
    its own EMF line (powertools' `single_metric`): the shared `metrics` object has one set of
    dimensions for everything it flushes. Each distinct dimension value is a custom metric of
    its own in CloudWatch (billed per metric-month): use only for small, known sets (flows)."""
    if not _metrics_on:
        return
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(name=name, unit=MetricUnit(unit), value=value, namespace=NAMESPACE,
                       default_dimensions={"service": SERVICE}) as metric:
        for key, val in dimensions.items():
            metric.add_dimension(name=key, value=val)


def disable_metrics() -> None:
    global _metrics_on
    _metrics_on = False
    metrics.clear_metrics()
