"""The command line's own pieces: terminal-safe text, security-id sources, S3-encoded keys and
the local state file (dedupe claims kept between local runs)."""

from __future__ import annotations

import argparse
import json
from urllib.parse import unquote_plus

import pytest

from phonon_outbound_dev.cli import UsageError, safe, security_ids
from phonon_outbound_dev.local.runner import metadata_value, s3_event_key, upload_stamp
from phonon_outbound_dev.local.state import LocalState

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


@pytest.mark.parametrize("columns", [("Mobile Nº", "मोबाइल नंबर"), ("Primary", "Alt Mobile"), ("📞 Phone",)])
def test_metadata_the_way_s3_returns_it_maps_the_columns_as_given(columns):
    # S3 returns a non-ASCII metadata value RFC 2047-encoded (B or Q encoding): ingest must read
    # the column names the user gave, not the encoded form.
    from email.header import Header

    from phonon_outbound.contacts.mapping import mapping_from_metadata

    joined = ",".join(columns)
    for returned in (metadata_value(joined), Header(joined, "utf-8").encode(),
                     "=?utf-8?q?" + "".join(f"={b:02X}" for b in joined.encode()) + "?="):
        got = mapping_from_metadata({"phone-columns": returned, "id-column": metadata_value("Réf №")})
        assert got == {"phone_columns": columns, "id_column": "Réf №"}, returned
    # plain ASCII values, and text that merely looks like an encoded word, are kept as they are
    assert mapping_from_metadata({"id-column": "=?not encoded"}) == {"id_column": "=?not encoded"}


def test_report_names_fit_the_file_systems_name_limit_and_stay_distinct():
    # A file name near the 255-byte limit (ext4, APFS, NTFS) cannot take `.<stamp>.summary.json`
    # on top: the report name is shortened, keeps its start and stays unique per input name.
    from phonon_outbound_dev.local.runner import MAX_NAME_BYTES, report_base_name

    stamp = "20261130T171452.743Z"
    assert report_base_name("contacts.csv", stamp) == f"contacts.csv.{stamp}"
    assert report_base_name("contacts.csv", stamp, 2) == f"contacts.csv.{stamp}-2"
    long_a, long_b = "L" * 240 + "a.csv", "L" * 240 + "b.csv"
    deva = "संपर्क" * 20 + ".csv"  # 3 bytes a letter in UTF-8
    names = [report_base_name(n, stamp, k) for n in (long_a, long_b, deva) for k in (1, 2)]
    assert len(set(names)) == len(names)
    for name in names:
        assert len(f"{name}.summary.json".encode()) <= MAX_NAME_BYTES
        assert name.startswith(("LLLLLLLLLL", "संपर्क")) and stamp in name
        name.encode("utf-8")  # never a split character


def test_a_state_file_with_bytes_that_are_not_text_or_items_of_the_wrong_shape_loses_only_those(tmp_path):
    # Given a saved state damaged in every way a disk, an editor or a merge tool can damage it
    state = LocalState(tmp_path)
    state.write([_claim("h1", "j1.1", 2000), {"pk": {"S": "JOB#j1"}, "sk": {"S": "META"}, "key": {"S": "k"}}],
                now=1000)
    with state.path.open("ab") as fh:
        fh.write(b"\xed\xa0\x80\xff garbage \x00\n")  # not UTF-8
        for bad in ({"pk": {"S": "DEDUPE#nosk"}}, {"pk": {"S": "DEDUPE#h4"}, "sk": {"S": "-"}, "expires": "soon"},
                    [1, 2], {"pk": "DEDUPE#x"}, {"pk": {"S": "DEDUPE#h5"}, "sk": {"S": "-"}, "owner": {"S": 5}},
                    {"pk": {"S": "DEDUPE#h6"}, "sk": {"S": "-"}, "expires": {"N": "never"}}):
            fh.write(json.dumps(bad).encode() + b"\n")
    # Then the good items load, the damaged lines are counted, and nothing raises
    items = state.read(now=1000)
    assert sorted(i["pk"]["S"] for i in items) == ["DEDUPE#h1", "JOB#j1"]
    assert state.damaged == 7
    # and the next save keeps the good ones only
    assert state.write([], now=1000) == 1


def test_a_state_dir_that_cannot_be_written_is_found_before_the_run(tmp_path):
    afile = tmp_path / "plain.txt"
    afile.write_text("x")
    assert LocalState(afile / "state").problem()  # a path under a file
    assert LocalState(afile).problem()  # a file, not a folder
    assert LocalState(tmp_path / "new" / "state").problem() is None  # created
    assert (tmp_path / "new" / "state").is_dir()


@pytest.mark.parametrize("url", ["http://[bad", "http:///nohost", "http://127.0.0.1:99999/x", "ftp://host/x",
                                 "host/create", "http://host:port/x", "https://a b/x"])
def test_an_api_url_that_cannot_be_called_is_refused_before_the_run(url):
    # (each of these made the run retry for minutes, or hang, instead of a usage error)
    from phonon_outbound_dev.cli import api_url

    with pytest.raises(argparse.ArgumentTypeError):
        api_url(url)


def test_an_api_url_scheme_in_any_case_is_an_url():
    from phonon_outbound_dev.cli import api_url

    assert api_url("HTTPS://api.example.com/kairos-apis/outbound/create") == \
        "https://api.example.com/kairos-apis/outbound/create"
    assert api_url("http://127.0.0.1:8765/create") == "http://127.0.0.1:8765/create"
