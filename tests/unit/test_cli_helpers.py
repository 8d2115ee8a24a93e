"""The command line's own pieces: terminal-safe text, security-id sources, S3-encoded keys and
the local state file (dedupe claims kept between local runs)."""

from __future__ import annotations

import argparse
import json
from urllib.parse import unquote_plus

import pytest

from phonon_outbound.cli import UsageError, safe, security_ids
from phonon_outbound.local.runner import metadata_value, s3_event_key, upload_stamp
from phonon_outbound.local.state import LocalState

SID, SID2 = "A" * 64, "B" * 64


def test_safe_escapes_control_and_bidi_characters_and_keeps_letters():
    assert safe("a\x1b[2Jb\x07c\u202ed\u0085é") == "a\\x1b[2Jb\\x07c\\u202ed\\x85é"
    assert safe("Mob. No. (नंबर)") == "Mob. No. (नंबर)"


@pytest.mark.parametrize("key", ["incoming/a+b.csv", "incoming/Leads Q3 (final).csv", "incoming/é ü/ß+1.csv",
                                 "incoming/100%.csv"])
def test_event_keys_are_encoded_as_s3_does_and_decode_back(key):
    encoded = s3_event_key(key)
    assert " " not in encoded and unquote_plus(encoded) == key
    assert s3_event_key("incoming/a b+c.csv") == "incoming/a+b%2Bc.csv"


def test_non_ascii_metadata_is_rfc2047_encoded():
    assert metadata_value("Mobile,Phone") == "Mobile,Phone"
    assert metadata_value("Mobile Nº").startswith("=?utf-8?")


def test_upload_stamp_sorts_by_time_with_milliseconds():
    from datetime import UTC, datetime
    assert upload_stamp(datetime(2026, 11, 30, 16, 10, 57, 123456, tzinfo=UTC)) == "20261130T161057.123Z"


def _args(flow=None, given=()):
    return argparse.Namespace(flow_id=flow, security_id=list(given))


def test_security_ids_from_options_and_environment():
    mine, flows = security_ids(_args("Flow1234", [f"Other987={SID2}"]), {"PHONON_SECURITY_ID": SID})
    assert mine == SID and flows == {"Flow1234": SID, "Other987": SID2}
    mine, flows = security_ids(_args(None), {"PHONON_SECURITY_ID_Other987": SID2})
    assert mine is None and flows == {"Other987": SID2}
    # an option wins over the environment
    assert security_ids(_args("Flow1234", [SID2]), {"PHONON_SECURITY_ID": SID})[0] == SID2


@pytest.mark.parametrize("given, env", [([f"bad={SID}"], {}), (["short"], {}), ([], {"PHONON_SECURITY_ID_x": SID}),
                                        (["Other987=short"], {})])
def test_bad_security_ids_are_usage_errors_that_do_not_echo_the_value(given, env):
    with pytest.raises(UsageError) as err:
        security_ids(_args("Flow1234", given), env)
    assert "short" not in str(err.value) and SID not in str(err.value)


def _claim(h: str, owner: str, expires: float) -> dict:
    return {"pk": {"S": f"DEDUPE#{h}"}, "sk": {"S": "-"}, "owner": {"S": owner}, "expires": {"N": str(expires)}}


def test_state_file_keeps_live_claims_and_their_jobs_merges_and_drops_expired(tmp_path):
    state = LocalState(tmp_path / "st")
    stub = {"pk": {"S": "JOB#j1"}, "sk": {"S": "META"}, "key": {"S": "incoming/a.csv"}}
    orphan = {"pk": {"S": "JOB#j9"}, "sk": {"S": "META"}, "key": {"S": "incoming/z.csv"}}
    assert state.write([_claim("h1", "j1.1", 2000), _claim("h2", "j1.2", 500), stub, orphan], now=1000) == 1
    # another run saves its own claim: both are kept
    assert state.write([_claim("h3", "j2.1", 3000)], now=1000) == 2
    items = state.read(now=1000)
    assert {i["pk"]["S"] for i in items} == {"DEDUPE#h1", "DEDUPE#h3", "JOB#j1"}
    assert state.read(now=2500) == [_claim("h3", "j2.1", 3000)]  # h1 expired, its job stub goes too
    assert (tmp_path / "st" / "README.txt").is_file()
    saved = (tmp_path / "st" / "dedupe-claims.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in saved)


def test_a_damaged_state_line_costs_one_claim_not_the_run(tmp_path):
    state = LocalState(tmp_path)
    state.write([_claim("h1", "j1.1", 2000)], now=1000)
    with state.path.open("a") as fh:
        fh.write("{not json\n")
    assert [i["pk"]["S"] for i in state.read(now=1000)] == ["DEDUPE#h1"]
