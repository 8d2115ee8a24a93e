"""Watchdog Lambda (scheduled): jobs that have not moved for `STALE_JOB_MINUTES` → the
`StaleJobs` metric (its alarm pages someone) and their ids in the log; a stale job that only
lacks its report gets it requested from the report function (report queue). See watchdog.py."""

from __future__ import annotations

from aws_lambda_powertools.utilities.typing import LambdaContext

from phonon_outbound import watchdog, wiring
from phonon_outbound.observability import logger, metrics


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict:
    return watchdog.check(wiring.store(), wiring.settings().stale_job_minutes, reports=wiring.reports())
