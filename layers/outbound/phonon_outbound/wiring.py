"""Builds the services from `Settings`, lazily, once per execution environment.

Nothing is created at import time, so tests and the local runner can set the environment (or
pass their own clients) first. `reset()` forgets everything (tests, local runner restarts).

Each builder imports its service module inside itself, so importing `wiring` costs only
boto3 and the settings model, and a Lambda pays for the services its handler asks for: the
webhook function never imports dispatch, ingest or the contact reader (phonenumbers), and the
ingest function never imports the HTTP client (requests). One module with lazy builders was
chosen over one wiring module per handler because the builders share pieces (the store, the
finisher, the secrets, one cache and one `reset()`) and the local runner and the tests wire all
services in one process; a per-handler split would repeat those or need a common module that
is this one. tests/unit/test_handler_imports.py checks, in a fresh interpreter per handler,
which of our modules and which heavy libraries each handler's import leaves out
(docs/benchmarks.md, "Cold start").
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import boto3

from .settings import Settings, current

if TYPE_CHECKING:  # for the annotations only: the builders import these when they are called
    from .dispatch import DispatchService
    from .events_out import EventsOut
    from .flows import FlowSecrets
    from .ingest import IngestService
    from .jobs import JobFinisher
    from .reconcile import Reconciler
    from .reporting import ReportRequests, ReportService
    from .store import Store
    from .webhook import Credentials, WebhookService

_lock = threading.RLock()  # builders call one another
_cache: dict[str, Any] = {}


def reset() -> None:
    with _lock:
        _cache.clear()
    current.cache_clear()


def _once(name: str, build: Any) -> Any:
    with _lock:
        if name not in _cache:
            _cache[name] = build()
        return _cache[name]


def settings() -> Settings:
    return current()


def client(service: str) -> Any:
    return _once(f"client:{service}", lambda: boto3.client(service))


def store() -> Store:
    from .store import Store

    s = settings()
    return _once("store", lambda: Store(s.state_table, s.results_table, boto3.resource("dynamodb"),
                                        retention_s=s.retention_s))


def secrets() -> FlowSecrets:
    from .flows import FlowSecrets

    return _once("secrets", lambda: FlowSecrets(settings().flow_secret_prefix, client("secretsmanager")))


def events_out() -> EventsOut:
    """Our events on the configured bus, and the task-token answers (events_out.py)."""
    from .events_out import EventsOut

    s = settings()
    return _once("events_out", lambda: EventsOut(client("events"), lambda: client("stepfunctions"), s.event_bus_name,
                                                 s.publish_call_events))


def finisher() -> JobFinisher:
    from .jobs import JobFinisher

    s = settings()
    return _once("finisher", lambda: JobFinisher(store(), client("s3"), s.bucket_name, events_out(),
                                                 final_wait_s=s.final_write_after_s))


def reports() -> ReportRequests:
    """Report requests: to the report queue, or in-line without one (reporting.py)."""
    from .reporting import ReportRequests

    s = settings()
    return _once("reports", lambda: ReportRequests(store(), finisher, client("sqs") if s.report_queue_url else None,
                                                   s.report_queue_url, s.report_debounce_s))


def report_service() -> ReportService:
    from .reporting import ReportService

    return _once("report_service", lambda: ReportService(store(), finisher(), reports(), settings().final_write_after_s))


def ingest_service() -> IngestService:
    from .ingest import IngestService

    return _once("ingest", lambda: IngestService(settings(), store(), client("s3"), client("sqs"), secrets(),
                                                 reports(), throttle=_cache.get("throttle")))


def dispatch_service() -> DispatchService:
    from .api.client import PhononClient
    from .dispatch import DispatchService

    s = settings()
    return _once("dispatch", lambda: DispatchService(
        s, store(), lambda: PhononClient(s.api_url, s.api_connect_timeout_s, s.api_read_timeout_s), secrets(),
        reports()))


def webhook_service() -> WebhookService:
    from .webhook import WebhookService

    s = settings()
    return _once("webhook", lambda: WebhookService(store(), s.correlation_key,
                                                   events=events_out() if s.publish_call_events else None,
                                                   reports=reports()))


def reconciler() -> Reconciler:
    """The missed-webhook reconciler (reconcile.py): the pull API through the dispatcher's HTTP
    client and timeouts, security-ids from the flows' secrets, records through the webhook's path."""
    from .api.client import PULL_MAX_ANSWER_BYTES, PhononClient
    from .reconcile import Reconciler

    s = settings()
    return _once("reconciler", lambda: Reconciler(
        s, store(), lambda: PhononClient(s.pull_api_url, s.api_connect_timeout_s, s.api_read_timeout_s,
                                         max_answer_bytes=PULL_MAX_ANSWER_BYTES), secrets(),
        webhook_service()))


def webhook_credentials() -> Credentials:
    """Read through powertools' parameters cache (5 minutes), so a rotated secret is picked up."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    from .webhook import Credentials

    provider = _once("secrets_provider", lambda: SecretsProvider(boto3_client=client("secretsmanager")))
    return Credentials.from_secret(provider.get(settings().webhook_secret_name, max_age=300))


def continue_ingest(event: dict, context: Any) -> None:
    """Run the rest of a paused ingest in a fresh invocation (asynchronous self-invoke).
    The local runner replaces this with its own scheduler via `set_continuation`."""
    hook = _cache.get("continuation")
    if hook is not None:
        hook(event)
        return
    client("lambda").invoke(FunctionName=context.invoked_function_arn, InvocationType="Event",
                            Payload=json.dumps(event).encode())


def set_continuation(fn: Any) -> None:
    with _lock:
        _cache["continuation"] = fn


def set_throttle(fn: Any) -> None:
    """The local runner's back-pressure hook for ingest (see IngestService.throttle)."""
    with _lock:
        _cache["throttle"] = fn
