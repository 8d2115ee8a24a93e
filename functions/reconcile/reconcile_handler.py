"""Reconcile Lambda (scheduled, on only when PullApiUrl is set): accepted calls whose flow-end
webhook never came → Phonon's pull API → their outcomes, through the webhook's path. See
reconcile.py. An invocation may name jobs (`{"jobs": ["<job id>", …]}`, at most 100) to
reconcile those now instead of every job awaiting outcomes; anything else in the event is ignored."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from phonon_outbound import wiring
from phonon_outbound.observability import logger, metrics, tracer
from phonon_outbound.records import MAX_JOB_ID_CHARS

MAX_NAMED_JOBS = 100


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: Any, context: LambdaContext) -> dict:
    named = event.get("jobs") if isinstance(event, dict) else None
    jobs = None
    if isinstance(named, list) and 0 < len(named) <= MAX_NAMED_JOBS and all(
            isinstance(j, str) and 0 < len(j) <= MAX_JOB_ID_CHARS for j in named):
        jobs = named
    elif named is not None:
        logger.warning("the event's jobs are not a list of job ids: reconciling every job awaiting outcomes")
    remaining = context.get_remaining_time_in_millis
    return wiring.reconciler().run(remaining_s=lambda: remaining() / 1000.0, jobs=jobs)
