"""The typed records (phonon_outbound.records): the `<job>.<row>` reference, the job item, the
results item and the chunk message's wire format (docs/design.md, "the chunk message")."""

from __future__ import annotations

import base64
import gzip
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from phonon_outbound.api.body import build_body
from phonon_outbound.chunking import Chunker, serialize_call
from phonon_outbound.ingest import chunk_message
from phonon_outbound.records import (
    ChunkMessage,
    ChunkRef,
    Job,
    JobStatus,
    PoisonMessage,
    ResultItem,
    parse_row_ref,
    row_ref,
)
from phonon_outbound.status import Status

from ..conftest import ROOT

CORRELATION = "$flow.key.OutboundRef"


# ------------------------------------------------------------------------------ row reference
@given(job=st.text(alphabet="abcdef0123456789.-_", min_size=1, max_size=40), row=st.integers(1, 10**12 - 1))
def test_a_row_reference_parses_back_to_its_job_and_row_whatever_dots_the_job_holds(job, row):
    assert parse_row_ref(row_ref(job, row)) == (job, row)


def test_a_job_id_with_dots_keeps_them_and_the_row_is_after_the_last_dot():
    assert row_ref("bucket.key.v2", 17) == "bucket.key.v2.17"
    assert parse_row_ref("bucket.key.v2.17") == ("bucket.key.v2", 17)


@pytest.mark.parametrize("text", [
    None, 17, b"job.1", "", "job", "job.", ".5", "job.0", "job.-1", "job.+1", "job.1a", "job. 1", "job.1 ",
    "job.1.5e3", "job.\u0661\u0662",  # Arabic-Indic digits: isdigit() but not ASCII
    "job.1234567890123",  # 13 digits: no file has that many rows
])
def test_what_is_not_a_row_reference_parses_to_none(text):
    assert parse_row_ref(text) is None


# ------------------------------------------------------------------------------ the job item
def test_a_sparse_job_item_reads_with_defaults():
    job = Job.from_item({"pk": "JOB#abc", "sk": "META", "key": "incoming/a.csv"})
    assert job.id == "abc" and job.key == "incoming/a.csv"
    assert (job.flow, job.status, job.cancelled_reason, job.error, job.failure) == ("", "", "", "", "")
    assert (job.total_rows, job.checkpoint_row, job.next_chunk, job.chunks_settled, job.api_requests) == (0, 0, 0, 0, 0)
    assert job.chunks_total is None and job.created_at is None and job.notes == () and dict(job.counts) == {}
    assert not job.ingest_done and not job.completed and not job.all_chunks_settled and not job.rejected


def test_no_item_is_an_empty_job_and_unknown_attributes_are_ignored():
    assert Job.from_item(None) == Job()
    assert Job.from_item({"something_new": 1, "sk": "META"}) == Job()
    assert Job.from_item({"pk": "JOB#a.b", "settled_set": {Decimal(3), Decimal(5)}}).settled_set == {3, 5}


def test_a_job_is_settled_when_ingest_is_done_and_every_chunk_it_queued_has_settled():
    assert Job.from_item({"ingest_done": True, "chunks_total": 3, "chunks_settled": 3}).all_chunks_settled
    assert not Job.from_item({"ingest_done": True, "chunks_total": 3, "chunks_settled": 2}).all_chunks_settled
    assert not Job.from_item({"ingest_done": False, "chunks_total": 0}).all_chunks_settled
    assert Job.from_item({"ingest_done": True, "chunks_total": 0}).all_chunks_settled  # a file of rejected rows


def test_a_job_is_frozen():
    with pytest.raises(AttributeError):
        Job().flow = "x"  # type: ignore[misc]


def test_job_statuses_are_the_strings_stored_and_distinct_from_row_statuses():
    assert Job.from_item({"status": "REJECTED"}).rejected
    assert JobStatus.COMPLETED == "COMPLETED" and "COMPLETED" not in set(Status)


# ------------------------------------------------------------------------------ results item
def test_a_results_item_has_the_table_s_attribute_names():
    item = ResultItem(phonon_uuid="u-1", cid="C1", request_id="r-1", flow="F1", job="J", file="incoming/a.csv",
                      row=3, numbers=["919800000001"], accepted_at=100, expires_at=200).to_item()
    assert item == {"phonon-uuid": "u-1", "client-identifier": "C1", "request-id": "r-1", "flow-id": "F1", "job": "J",
                    "file": "incoming/a.csv", "row": 3, "numbers": ["919800000001"], "status": "ACCEPTED",
                    "accepted_at": 100, "expires_at": 200}
    assert type(item["status"]) is str


# ------------------------------------------------------------------------------ chunk messages
def _chunk(job: str, rows: int = 3, flow: str = "Flow1"):
    chunker = Chunker(batch_size=rows, flow_id=flow)
    for row in range(1, rows + 1):
        call = {"client-identifier": f"C{row}", "contact-numbers": [f"91980000000{row}"],
                "keys": [{"name": CORRELATION, "value": row_ref(job, row)}]}
        done = chunker.add(row, call)
    return done[0]


def test_the_v2_message_ingest_writes_is_exactly_the_documented_format():
    chunk = _chunk("job.1")
    body = chunk_message("job.1", "Flow1", 4, chunk, {2: "contact number … dropped", 9: "another chunk's"})
    gz = base64.b64encode(gzip.compress(chunk.calls_json, compresslevel=1, mtime=0)).decode()
    assert body == json.dumps({"v": 2, "job": "job.1", "flow": "Flow1", "chunk": 4, "rows": [1, 2, 3],
                               "calls_gz": gz, "warn": {"2": "contact number … dropped"}},
                              ensure_ascii=False, separators=(",", ":"))


def test_a_v2_message_reads_back_to_the_very_bytes_the_chunker_measured():
    chunk = _chunk("J")
    msg = ChunkMessage.model_validate_json(chunk_message("J", "Flow1", 0, chunk))
    calls = msg.complete_calls(CORRELATION)
    assert b"[" + b",".join(serialize_call(c) for c in calls) + b"]" == chunk.calls_json
    assert len(build_body("x" * 64, "Flow1", calls)) == chunk.body_bytes
    assert ChunkMessage.model_validate_json(msg.to_json()) == msg and msg.to_json() == chunk_message(
        "J", "Flow1", 0, chunk)


def test_a_hand_written_v1_message_gets_the_correlation_key_of_each_row():
    event = json.loads((ROOT / "events" / "sqs-chunk-batch.json").read_text())
    msg = ChunkMessage.model_validate_json(event["Records"][0]["body"])
    assert msg.v == 1 and msg.calls_gz is None
    calls = msg.complete_calls(CORRELATION)
    assert [c["keys"][-1] for c in calls] == [{"name": CORRELATION, "value": row_ref(msg.job, r)} for r in msg.rows]
    assert ChunkMessage.model_validate_json(msg.to_json()) == msg  # v1 written back reads the same


@pytest.mark.parametrize(("doc", "problem"), [
    ({"calls_gz": "not base64!"}, "cannot be decoded"),
    ({"calls_gz": base64.b64encode(gzip.compress(b'{"a":1}')).decode()}, "list of call objects"),
    ({"calls": [{}]}, "different number of rows and calls"),
    ({"calls": [{"keys": "x"}, {}]}, "keys are not a list"),
])
def test_a_message_whose_calls_cannot_be_read_is_poison(doc, problem):
    msg = ChunkMessage(job="J", flow="F", chunk=0, rows=[1, 2], **doc)
    with pytest.raises(PoisonMessage, match=problem):
        msg.complete_calls(CORRELATION)


@pytest.mark.parametrize("doc", [
    {"job": "", "flow": "F", "chunk": 0, "rows": [1]},
    {"job": "J" * 129, "flow": "F", "chunk": 0, "rows": [1]},
    {"job": "J", "flow": "F", "chunk": -1, "rows": [1]},
    {"job": "J", "chunk": 0, "rows": [1]},
])
def test_a_message_that_is_not_a_chunk_is_refused_by_the_model(doc):
    with pytest.raises(ValidationError):
        ChunkMessage.model_validate_json(json.dumps(doc))


def test_a_chunk_ref_reads_what_it_can_of_a_message_the_model_refuses():
    ref = ChunkRef.parse(json.dumps({"job": "J", "chunk": 2, "rows": [4, 5], "calls_gz": "broken"}))
    assert ref == ChunkRef("J", 2, "", [4, 5], [])
    assert ChunkRef.parse(json.dumps({"job": "J", "chunk": True, "rows": [4]})) is None
    assert ChunkRef.parse("not json") is None
