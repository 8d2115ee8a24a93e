"""The webhook Function URL's HTTP side: method, credentials, answers (docs/webhook.md).

405 for anything but POST, 401 for any bad credential, 4xx for a push that is malformed or
contradicts what is stored (`webhook.WebhookError`), 5xx only for our own faults (raised).
The event is read as a raw dict so that an odd event (no headers, a non-dict requestContext)
cannot make the plumbing raise; it is never logged: it carries the caller's Authorization
header and call details. The credentials and the service are asked for only when needed: a GET
costs no Secrets Manager read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .observability import count, logger
from .webhook import Credentials, WebhookError, WebhookService


def answer(status: int, body: dict, headers: dict | None = None) -> dict:
    return {"statusCode": status, "headers": {"Content-Type": "application/json", **(headers or {})},
            "body": json.dumps(body)}


def header(event: dict, name: str) -> object:
    """A request header by name, whatever its case (Function URLs send lower case; a test or a
    proxy may not)."""
    headers = event.get("headers")
    if not isinstance(headers, dict):
        return None
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name:
            return value
    return None


def method(event: dict) -> str:
    context = event.get("requestContext")
    http = (context.get("http") if isinstance(context, dict) else None) or {}
    verb = http.get("method") if isinstance(http, dict) else None
    return verb.upper() if isinstance(verb, str) else ""


def respond(event: dict[str, Any], credentials: Callable[[], Credentials],
            service: Callable[[], WebhookService]) -> dict:
    """The Function URL's answer to one request event."""
    if method(event) != "POST":
        return answer(405, {"error": "POST only"}, {"Allow": "POST"})
    if not credentials().check(header(event, "authorization")):
        count("WebhooksUnauthorized", 1)
        return answer(401, {"error": "unauthorized"}, {"WWW-Authenticate": 'Basic realm="phonon-outbound"'})
    try:
        result = service().handle_request(event.get("body"), event.get("isBase64Encoded") is True)
    except WebhookError as err:
        count("WebhooksRefused", 1)
        logger.info("flow-end push refused", extra={"status": err.status, "reason": err.message})
        return answer(err.status, {"error": err.message})
    return answer(200, {"ok": True, **result})


__all__ = ["answer", "header", "method", "respond"]
