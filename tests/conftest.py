"""Shared fixtures: AWS resources are created from template.yaml's own definitions (moto's
in-process `mock_aws`), so tests and the template cannot drift apart."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "PhononOutboundTest")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")


@pytest.fixture
def aws_env(monkeypatch):
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


@pytest.fixture
def stack(aws_env):
    """Every storage resource of template.yaml, in moto."""
    from moto import mock_aws

    from phonon_outbound_dev.local.cfn import LocalStack, load_template

    with mock_aws():
        s = LocalStack(load_template(ROOT / "template.yaml"), ROOT)
        s.create_resources(boto3.session.Session(region_name="us-east-1"))
        yield s


@pytest.fixture
def store(stack):
    from phonon_outbound.store import Store

    env = stack.function_environment()
    return Store(env["STATE_TABLE"], env["RESULTS_TABLE"], boto3.resource("dynamodb", region_name="us-east-1"))


@pytest.fixture(params=["memory", "moto"])
def any_store(request):
    """The same `Store` facade over the in-memory fakes and over DynamoDB (moto): tests that
    take it hold both to one behaviour (tests/integration/test_store_contracts.py)."""
    if request.param == "memory":
        from phonon_outbound.store.memory import MemoryStore

        return MemoryStore()
    return request.getfixturevalue("store")


@pytest.fixture
def peer_store(any_store):
    """A second store over `any_store`'s data: another process sharing the same tables."""
    from phonon_outbound.store import Store
    from phonon_outbound.store.memory import MemoryStore

    if isinstance(any_store, MemoryStore):
        return MemoryStore(tables=any_store.tables)
    return Store(any_store.state.name, any_store.results.table.name, boto3.resource("dynamodb", region_name="us-east-1"))


@contextmanager
def service_log() -> Iterator[io.StringIO]:
    """What the service's logger (observability.logger) writes meanwhile, through its own
    registered (masking) formatter: for tests that check what a log line holds or never holds."""
    from phonon_outbound.observability import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    std = logging.getLogger(logger.name)
    std.addHandler(handler)
    try:
        yield stream
    finally:
        std.removeHandler(handler)
