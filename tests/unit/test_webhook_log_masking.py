"""The log formatter's masking (observability.PiiMaskingFormatter): numbers and secrets never
reach a log line, whoever logs them and however they are written."""

from __future__ import annotations

import io
import json
import logging

import pytest

from phonon_outbound.observability import MASK, PiiMaskingFormatter, logger, mask_text, register_secret
from phonon_outbound.webhook import Credentials
from tests.conftest import service_log


@pytest.mark.parametrize("number", [
    "+919812345670", "919812345670", "09812345670", "9812345670", "98123 45670", "+91 98123 45670",
    "(0)98123-45670", "981.234.5670", "+1 (415) 555-0134", "0091-98123-45670", "+44 20 7946 0958",
])
def test_a_phone_number_in_any_usual_writing_is_masked(number):
    text = mask_text(f"calling {number} now; callee={number},again:{number}")
    digits = "".join(ch for ch in number if ch.isdigit())
    assert digits[-7:] not in "".join(ch for ch in text if ch.isdigit())
    assert text.count(MASK) == 3


@pytest.mark.parametrize("text", [
    "2026-11-30T16:20:01.123+05:30", "2026-11-26 15:30:01", "job 3f2a9c1e7b5d4a6f8e01 chunk 12 rows 1-500",
    "took 0.123 s (body 12345 bytes)", "HTTP 202 code 202", "OUT#0000", "row 123456",
    "job ba5ae1234567ca7f67", "request-id 9f3c2a10-4b5e-4c1d-8e2f-1234567abcde",
])
def test_what_is_not_a_phone_number_is_left_alone(text):
    assert mask_text(text) == text


def _format(record_msg: object, **extra) -> dict:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(PiiMaskingFormatter())
    log = logging.getLogger("test-masking")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.info(record_msg, extra=extra)
    return json.loads(stream.getvalue())


def test_extra_keys_nested_values_and_secret_looking_keys_are_masked():
    out = _format("push from 919812345670", numbers=["+919812345671", "9812345672"],
                  call={"calleeNumber": "919812345673", "duration": 53},
                  headers={"authorization": "Basic cGhvbm9uOnMzY3JldA==", "x": "ok"},
                  security_id="abcdef0123456789", password="hunter2hunter2")
    text = json.dumps(out, ensure_ascii=False)
    for leaked in ("919812345670", "9812345671", "9812345672", "919812345673", "cGhvbm9uOnMzY3JldA==",
                   "abcdef0123456789", "hunter2hunter2"):
        assert leaked not in text
    assert out["call"]["duration"] == 53 and out["headers"]["x"] == "ok"
    assert out["timestamp"] and out["level"] == "INFO"  # powertools' own keys are intact


def test_a_registered_secret_is_erased_wherever_it_appears_even_in_a_traceback():
    register_secret("Zq8sV3cretSecurityIdValue")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(PiiMaskingFormatter())
    log = logging.getLogger("test-masking-exc")
    log.handlers[:] = [handler]
    log.propagate = False
    try:
        raise ValueError('bad body {"security-id": "Zq8sV3cretSecurityIdValue", "x": "+919812345670"}')
    except ValueError:
        log.exception("sending failed for Zq8sV3cretSecurityIdValue")
    text = stream.getvalue()
    assert "Zq8sV3cretSecurityIdValue" not in text and "919812345670" not in text
    assert "ValueError" in text


def test_an_inline_security_id_or_basic_credential_is_erased_without_registration():
    text = mask_text('body={"security-id": "NotRegistered0123456789", "flow-id": "F"} auth: Basic dTpw')
    assert "NotRegistered0123456789" not in text and "dTpw" not in text and '"flow-id": "F"' in text


def test_the_webhook_credentials_are_registered_when_read(capsys):
    creds = Credentials.from_secret(json.dumps({"username": "phonon", "password": "Pw4TheWebhookOnly"}))
    assert "Pw4TheWebhookOnly" not in mask_text(f"x {creds.password} y")


def test_the_service_logger_masks_what_it_writes():
    with service_log() as stream:
        logger.warning("number 919812345670 in a message", extra={"numbers": ["+919812345671"]})
    assert "9812345670" not in stream.getvalue() and "9812345671" not in stream.getvalue()
    assert isinstance(logger.registered_formatter, PiiMaskingFormatter)


def test_a_line_that_cannot_be_masked_is_withheld_not_written_raw(monkeypatch):
    import phonon_outbound.observability as obs

    def broken(value, key=""):
        raise RecursionError("too deep")

    monkeypatch.setattr(obs, "mask_value", broken)
    out = _format("number 919812345670")
    assert out["message"] == "log line withheld: it could not be masked (RecursionError)"
    assert "919812345670" not in json.dumps(out)


def test_a_handler_added_later_with_its_own_formatter_writes_masked_text_too():
    stream = io.StringIO()
    plain = logging.StreamHandler(stream)
    plain.setFormatter(logging.Formatter("%(levelname)s %(message)s %(numbers)s"))
    logger.addHandler(plain)
    try:
        logger.warning("calling %s", "+91 98123 45670", extra={"numbers": ["919812345671"]})
        try:
            raise RuntimeError("answer for 919812345672")
        except RuntimeError:
            logger.exception("failed", extra={"numbers": []})
    finally:
        logging.getLogger(logger.name).removeHandler(plain)
    text = stream.getvalue()
    assert "calling •••••" in text and "RuntimeError: answer for •••••" in text
    assert not any(n in text for n in ("98123 45670", "919812345671", "919812345672"))
