"""What each Lambda handler's import loads, in a fresh interpreter as on a cold start.

A handler must import only what it uses (docs/benchmarks.md, "Cold start"): the webhook Lambda
none of dispatch, ingest or the contact reader; ingest not the HTTP client; and with tracing
off none of them the X-Ray SDK. With tracing on (as on AWS, where the template sets
`Tracing: Active`), the handler is still wrapped by powertools' Tracer and its subsegment
reaches the X-Ray daemon address.

Structural checks only (which modules are in `sys.modules`), no timings: those are in
`tests/bench/coldstart_bench.py`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What a handler's import must NOT load (modules and their submodules).
# phonon_outbound_dev is the developer kit (simulator, local runner, CLI), not in the layer at all.
NEVER_ANYWHERE = ["aws_xray_sdk", "phonon_outbound_dev", "moto", "yaml"]
NOT_LOADED: dict[str, list[str]] = {
    "webhook": ["phonon_outbound.contacts", "phonon_outbound.dispatch", "phonon_outbound.ingest",
                "phonon_outbound.jobs", "phonon_outbound.limiter", "phonon_outbound.chunking", "phonon_outbound.api",
                "phonon_outbound.flows", "phonenumbers", "ijson", "requests"],
    "ingest": ["requests", "phonon_outbound.api.client", "phonon_outbound.api.classify", "phonon_outbound.dispatch",
               "phonon_outbound.limiter", "phonon_outbound.webhook"],
    "dispatch": ["phonon_outbound.ingest", "phonon_outbound.contacts", "phonenumbers", "ijson",
                 "phonon_outbound.webhook"],
    "report": ["phonon_outbound.dispatch", "phonon_outbound.ingest", "phonon_outbound.contacts",
               "phonon_outbound.webhook", "phonon_outbound.api", "phonon_outbound.limiter", "phonenumbers", "requests",
               "ijson"],
    "watchdog": ["phonon_outbound.dispatch", "phonon_outbound.ingest", "phonon_outbound.contacts",
                 "phonon_outbound.webhook", "phonon_outbound.api", "phonon_outbound.jobs", "phonenumbers", "requests",
                 "ijson"],
    # the reconciler's services are built on its first run (wiring.reconciler): an import loads none
    "reconcile": ["phonon_outbound.dispatch", "phonon_outbound.ingest", "phonon_outbound.contacts", "phonenumbers",
                  "ijson", "phonon_outbound.reconcile", "phonon_outbound.webhook", "requests"],
}
# What it does load, so that the checks above are not vacuous (the import really ran).
LOADED: dict[str, list[str]] = {
    "webhook": ["phonon_outbound.webhook", "phonon_outbound.observability", "phonon_outbound.wiring"],
    "ingest": ["phonon_outbound.ingest", "phonon_outbound.contacts", "phonon_outbound.api.body", "phonenumbers"],
    "dispatch": ["phonon_outbound.dispatch", "phonon_outbound.api.client", "requests"],
    "watchdog": ["phonon_outbound.watchdog", "phonon_outbound.store"],
    "reconcile": ["phonon_outbound.wiring", "phonon_outbound.records", "phonon_outbound.observability"],
    "report": ["phonon_outbound.wiring", "phonon_outbound.observability"],
}

_LIST_MODULES = """
import json, sys
sys.path[:0] = {path!r}
import {handler}_handler
print(json.dumps(sorted(sys.modules)))
"""


def _path(handler: str) -> list[str]:
    return [str(ROOT / "layers" / "outbound"), str(ROOT / "functions" / handler)]


def _clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without anything that would switch tracing on or
    point the SDK somewhere, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POWERTOOLS_", "AWS_XRAY", "_X_AMZN", "LAMBDA_TASK_ROOT", "AWS_SAM_LOCAL"))}
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env.update(extra)
    return env


def _modules_after_import(handler: str, env: dict[str, str]) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _LIST_MODULES.format(path=_path(handler), handler=handler)],
                         capture_output=True, text=True, env=env, timeout=120, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _loaded(modules: set[str], name: str) -> list[str]:
    return sorted(m for m in modules if m == name or m.startswith(name + "."))


@pytest.mark.parametrize("handler", sorted(NOT_LOADED))
@pytest.mark.parametrize("trace_env", [{"POWERTOOLS_TRACE_DISABLED": "true"},  # the local default
                                       {"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"},
                                       {}],  # outside Lambda: powertools would not trace either
                         ids=["disabled", "lambda-disabled", "not-on-lambda"])
def test_a_handler_imports_only_what_it_uses(handler: str, trace_env: dict[str, str]) -> None:
    modules = _modules_after_import(handler, _clean_env(**trace_env))
    unwanted = {name: _loaded(modules, name) for name in [*NOT_LOADED[handler], *NEVER_ANYWHERE]}
    assert {k: v for k, v in unwanted.items() if v} == {}
    assert [m for m in LOADED[handler] if m not in modules] == []


_TRACED_CALL = """
import json, sys
class Context:  # what powertools' logger reads from a Lambda context
    function_name = "phonon-outbound-webhook"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:phonon-outbound-webhook"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

sys.path[:0] = {path!r}
import webhook_handler
from phonon_outbound.observability import tracer
event = {{"requestContext": {{"http": {{"method": "GET"}}}}, "headers": {{}}, "body": None}}
answer = webhook_handler.handler(event, Context())
from aws_xray_sdk.core import patcher
print(json.dumps({{"status": answer["statusCode"], "xray": "aws_xray_sdk.core" in sys.modules,
                  "tracer": type(tracer.real()).__module__, "patched": sorted(patcher._PATCHED_MODULES),
                  "unused": sorted(m for m in ("requests", "sqlite3") if m in sys.modules)}}))
"""


def test_with_tracing_on_the_handler_is_traced_by_powertools() -> None:
    """POWERTOOLS_TRACE_DISABLED=false inside Lambda: the X-Ray SDK is imported, botocore is
    patched (and nothing the webhook does not use), the handler runs inside powertools'
    `## handler` subsegment, and the SDK sends that subsegment (with powertools' ColdStart and
    Service annotations) to the daemon address: here a UDP socket of this test, standing in
    for the X-Ray daemon."""
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(30)
    port = daemon.getsockname()[1]
    env = _clean_env(
        LAMBDA_TASK_ROOT=str(ROOT / "functions" / "webhook"), POWERTOOLS_TRACE_DISABLED="false",
        POWERTOOLS_SERVICE_NAME="phonon-outbound", POWERTOOLS_METRICS_NAMESPACE="PhononOutbound",
        _X_AMZN_TRACE_ID="Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        AWS_XRAY_DAEMON_ADDRESS=f"127.0.0.1:{port}", AWS_XRAY_CONTEXT_MISSING="LOG_ERROR")
    code = _TRACED_CALL.format(path=_path("webhook"))
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        # AWS calls are traced; libraries the webhook does not use are neither patched nor imported
        assert result == {"status": 405, "xray": True, "tracer": "aws_lambda_powertools.tracing.tracer",
                          "patched": ["botocore"], "unused": []}
        datagram = daemon.recv(65536).decode()
    finally:
        daemon.close()
    header, _, body = datagram.partition("\n")
    assert json.loads(header) == {"format": "json", "version": 1}
    segment = json.loads(body)
    assert segment["name"] == "## handler"
    assert segment["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    assert segment["annotations"] == {"ColdStart": True, "Service": "phonon-outbound"}


_PATCHED = """
import json, sys
sys.path[:0] = {path!r}
import {handler}_handler
from aws_xray_sdk.core import patcher
print(json.dumps(sorted(patcher._PATCHED_MODULES)))
"""


@pytest.mark.parametrize(("handler", "patched"), [("dispatch", ["botocore", "requests"]), ("ingest", ["botocore"])])
def test_with_tracing_on_xray_patches_what_the_function_calls(handler: str, patched: list[str]) -> None:
    """Dispatch's calls to the Phonon API (requests) are traced as well as its AWS calls."""
    env = _clean_env(LAMBDA_TASK_ROOT=str(ROOT / "functions" / handler), POWERTOOLS_TRACE_DISABLED="false",
                     AWS_XRAY_CONTEXT_MISSING="LOG_ERROR")
    out = subprocess.run([sys.executable, "-c", _PATCHED.format(path=_path(handler), handler=handler)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == patched
