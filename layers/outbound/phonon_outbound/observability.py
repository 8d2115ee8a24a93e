"""Logger, Metrics and Tracer in one place (powertools), so every module shares them.

Phone numbers and secrets are never passed to the logger: log lines name jobs, chunks,
rows and message ids instead.
"""

from __future__ import annotations

import logging
import sys

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "phonon-outbound"
NAMESPACE = "PhononOutbound"

# stderr: Lambda sends both streams to CloudWatch, and locally stdout is reserved for `--json`.
logger = Logger(service=SERVICE, logger_handler=logging.StreamHandler(sys.stderr))
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
