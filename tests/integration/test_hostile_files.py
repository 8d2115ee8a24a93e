"""Hostile contact files through the real ingest handler (moto) and through `check`: each ends
with a report (every row once, in input order, with a specific reason) or a whole-file rejection
with its reason; no traceback or cell value in any reason; `check` and ingest agree on every
row's status and reason, and on the whole-file reason."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile

import pytest

from phonon_outbound.settings import Settings
from phonon_outbound_dev.check import check_file

from .conftest import Harness


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("x.csv", "client-identifier,phone\nA,9876543210\n")
    return out.getvalue()


SID = "Zx9" * 21 + "Q"  # shaped like a security-id, pasted into a JSON file's flow-id
SECRET_CELLS = ("Jo\x00hn", "SECRETNAME", "9123456780", "s3cr3t@example.com", SID, "Ravi")

FILES: dict[str, bytes] = {
    "nul.csv": b"client-identifier,phone,Name\nA,9876543210,Jo\x00hn\nB,98765\x0043211,SECRETNAME\n",
    "old-mac.csv": b"client-identifier,phone\rA,9876543210\rB,98765\r",
    "blank-lines.csv": b"client-identifier,phone\n" + b"\n" * 100_000 + b"A,9876543210\n",
    "wide-empty-header.csv": b"," * 16_383 + b"\nA,9876543210\n",
    "utf16-no-bom.csv": "client-identifier,phone\nA,9876543210\n".encode("utf-16-le"),
    "workbook.csv": _zip(),
    "not-gzip.json.gz": b'[{"client-identifier":"A","contact-numbers":["9876543210"]}]',
    "empty.csv.gz": b"",
    "deep.json": b"[" * 5_000 + b"]" * 5_000,
    "deep-line.jsonl": (b'{"client-identifier":"A","contact-numbers":["9876543210"]}\n' + b"[" * 50_000
                        + b"]" * 50_000 + b'\n{"client-identifier":"B","contact-numbers":["9123456780"]}\n'),
    "big-key.json": b'[{"' + b"k" * 300_000 + b'":1,"client-identifier":"A","contact-numbers":["9876543210"]}]',
    "two-names.csv": b"client-identifier,Phone,Phone,Name,Name\nA,9876543210,9123456780,Ann,SECRETNAME\n",
    "long-id.csv": b"client-identifier,phone\n" + b"X" * 10_000 + b",9876543210\nB,98765\n",
    "many-numbers.csv": (b'client-identifier,phone\nA,"' + b";".join(b"98%08d" % i for i in range(2_000))
                         + b'"\nB,s3cr3t@example.com\n'),
    "cp1252.csv": "client-identifier,phone,Name\nAé,9876543210,Zoë\n=é,98765,x\n".encode("cp1252"),
    "warnings.csv": (b"Record ID,phone,Mobile,OutboundRef,start-time\nR1,9876543210,12345,x,\n,9123456780,,,\n"
                     b"R3,9876543211,,,2020-01-01 10:00\n=cmd|' /C calc'!A0,9876543212,,,\n"),
    # one good number and 8,000 bad ones: the ACCEPTED row's warnings ride in the chunk message
    "many-bad-numbers.csv": (b'client-identifier,phone\nA,"9876543210;' + b";".join(b"%d" % i for i in range(1, 8001))
                             + b'"\nB,"' + b";".join(b"%d" % i for i in range(1, 8001)) + b'"\n'),
    "long-id.jsonl": (b'{"client-identifier":"' + b"X" * 500_000 + b'","contact-numbers":["9876543210"]}\n'
                      b'{"client-identifier":"' + b"Y" * 500_000 + b'","contact-numbers":["98765"]}\n'),
    "sid-as-flow.json": json.dumps({"flow-id": SID, "calls": [{"client-identifier": "A",
                                                                "contact-numbers": ["9876543210"]}]}).encode(),
    "headerless.csv": b"Ravi Kumar,98765-43210 (home),Pune\nAnita,9123456780,Goa\n",
    'sep-quote.csv': b'sep="\nclient-identifier"phone\nA"9876543210\n',
    "bomb.csv.gz": gzip.compress(b"client-identifier,phone\n" + b"a,1\n" * 5_000_000, compresslevel=9),
}


def _report(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("name", sorted(FILES))
def test_a_hostile_file_ends_with_the_same_report_from_ingest_and_from_check(make_harness, tmp_path, name):
    h: Harness = make_harness()
    obj = h.upload(name, FILES[name])
    h.ingest(obj)
    h.drain()
    raw = h.s3.get_object(Bucket=h.bucket, Key=h.report_keys(obj)[0])["Body"].read()
    text = raw.decode("utf-8")  # valid UTF-8 whatever the input's encoding
    ingest_rows = _report(text)
    summary = h.summary(obj)

    path = tmp_path / name
    path.write_bytes(FILES[name])
    settings = Settings.from_env()
    checked = check_file(path, settings, tmp_path / "out")
    check_rows = _report((tmp_path / "out" / f"{name}.results.csv").read_text(encoding="utf-8"))

    assert summary.get("error") == checked.get("error")
    assert summary["rows"] == checked["rows"] == len(ingest_rows)
    # every row once, in input order; the same status and reason (check cannot send: ACCEPTED
    # there is "would be sent", and the simulator accepts every sent call)
    assert [int(r["row"]) for r in ingest_rows] == list(range(1, len(ingest_rows) + 1))
    assert [(r["row"], r["status"], r["reason"]) for r in ingest_rows] == \
           [(r["row"], r["status"], r["reason"]) for r in check_rows]
    reasons = [r["reason"] for r in ingest_rows if r["status"] != "ACCEPTED"] + [summary.get("error") or ""]
    reasons += summary.get("notes", [])
    for reason in reasons:
        assert "Traceback" not in reason and "Error:" not in reason
        for cell in SECRET_CELLS:
            assert cell not in reason, (name, reason)
    for r in ingest_rows:
        if r["status"] == "REJECTED":
            assert r["reason"], r
    json.dumps(summary).encode("utf-8")
