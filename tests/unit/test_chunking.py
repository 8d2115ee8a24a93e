"""Chunking: each chunk is one API request's worth of calls (count and 256 KB body), sizes exact."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phonon_outbound.api.body import build_body as api_build_body
from phonon_outbound.chunking import MAX_BODY_BYTES, CallTooLarge, Chunk, Chunker, build_body, serialize_call

SID = "a0095e7ac42205cb1388d7ac0d2db4afad1b5b2304907a27a6154bf93253088c"
FLOW = "wruHzoCK"


def formula(sid: str, flow: str, calls: list[dict]) -> bytes:
    """The body formula of the issue, verbatim."""
    return json.dumps({"api-version": "1.0", "security-id": sid, "flow-id": flow, "calls": calls},
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def call(i: int, pad: int = 0, text: str = "") -> dict:
    return {"client-identifier": f"C{i}", "start-time": "2031-06-29T09:42:00+05:30",
            "contact-numbers": ["916262772728"],
            "keys": [{"name": "$flow.key.Name", "value": text + "x" * pad},
                     {"name": "$flow.key.OutboundRef", "value": f"job.{i}"}]}


def feed(chunker: Chunker, calls: list[dict]) -> list[Chunk]:
    out: list[Chunk] = []
    for i, c in enumerate(calls, 1):
        out.extend(chunker.add(i, c))
    return out + chunker.flush()


def test_serialize_call_is_the_calls_own_bytes_inside_the_body():
    c = call(1, text='é "quoted" \u2028 \n')
    body = formula(SID, FLOW, [c])
    assert serialize_call(c) in body
    assert serialize_call(c) == json.dumps(c, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def test_chunks_hold_at_most_batch_size_calls_in_order_with_their_rows():
    chunks = feed(Chunker(3, flow_id=FLOW), [call(i) for i in range(1, 8)])
    assert [len(c.calls) for c in chunks] == [3, 3, 1]
    assert [c.rows for c in chunks] == [[1, 2, 3], [4, 5, 6], [7]]
    assert [x["client-identifier"] for c in chunks for x in c.calls] == [f"C{i}" for i in range(1, 8)]


def test_a_full_chunk_is_returned_by_the_add_that_filled_it():
    chunker = Chunker(2, flow_id=FLOW)
    assert chunker.add(1, call(1)) == []
    done = chunker.add(2, call(2))
    assert [c.rows for c in done] == [[1, 2]] and chunker.pending == 0 and chunker.flush() == []


def test_body_bytes_equal_the_formula_exactly_for_every_chunk():
    # Given calls of random sizes and non-ASCII text, cut by size as well as by count
    rng = random.Random(5)
    calls = [call(i, pad=rng.randrange(0, 3000), text=rng.choice(["", "Zoë", "ज़ोया", "😀"])) for i in range(400)]
    chunks = feed(Chunker(50, len(SID), flow_id=FLOW, max_body_bytes=64 * 1024), calls)
    for ch in chunks:
        body = formula(SID, FLOW, ch.calls)
        # Then each chunk knows its exact body size, the same as the API module builds
        assert ch.body_bytes == len(body) == len(api_build_body(SID, FLOW, ch.calls)) == len(build_body(SID, FLOW, ch.calls))
        assert ch.body_bytes <= 64 * 1024
        assert ch.calls_json == json.dumps(ch.calls, ensure_ascii=False, separators=(",", ":")).encode()
    assert sum(len(c.calls) for c in chunks) == 400
    assert any(len(c.calls) < 50 for c in chunks[:-1])  # some were cut by size


def test_a_chunk_is_cut_before_the_call_that_would_overflow_the_body():
    two = len(formula(SID, FLOW, [call(1, pad=1000), call(2, pad=1000)]))
    # one byte short of two calls: every chunk holds one
    chunks = feed(Chunker(500, flow_id=FLOW, max_body_bytes=two - 1), [call(i, pad=1000) for i in range(1, 4)])
    assert [c.rows for c in chunks] == [[1], [2], [3]]
    # and exactly at the limit, two fit
    chunks = feed(Chunker(500, flow_id=FLOW, max_body_bytes=two), [call(i, pad=1000) for i in (1, 2)])
    assert [c.rows for c in chunks] == [[1, 2]] and chunks[0].body_bytes == two


def test_a_call_too_large_to_fit_alone_raises_with_a_reason_and_changes_nothing():
    chunker = Chunker(500, flow_id=FLOW)
    chunker.add(1, call(1))
    with pytest.raises(CallTooLarge) as exc:
        chunker.add(2, call(2, pad=MAX_BODY_BYTES))
    err = exc.value
    assert err.row == 2 and err.limit == MAX_BODY_BYTES and err.size > MAX_BODY_BYTES
    assert err.reason.startswith("the call is too large to send: ") and "262,144 bytes" in err.reason
    assert str(err) == err.reason
    chunks = chunker.flush()
    assert [c.rows for c in chunks] == [[1]]


def test_the_largest_call_that_fits_alone_is_accepted():
    base = len(formula(SID, FLOW, [call(1)]))
    c = call(1, pad=MAX_BODY_BYTES - base)
    assert len(formula(SID, FLOW, [c])) == MAX_BODY_BYTES
    chunks = feed(Chunker(500, flow_id=FLOW), [c])
    assert chunks[0].body_bytes == MAX_BODY_BYTES


def test_pending_rows_and_validation():
    chunker = Chunker(10, flow_id=FLOW)
    chunker.add(4, call(4))
    assert chunker.pending_rows == [4]
    with pytest.raises(ValueError):
        Chunker(0, flow_id=FLOW)
    with pytest.raises(ValueError):
        Chunker(1, flow_id=FLOW, max_body_bytes=50)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=60),
       batch=st.integers(min_value=1, max_value=20),
       limit=st.integers(min_value=6000, max_value=40000))
def test_property_every_chunk_respects_both_limits_and_sizes_are_exact(sizes, batch, limit):
    calls = [call(i, pad=s) for i, s in enumerate(sizes, 1)]
    chunker = Chunker(batch, len(SID), flow_id=FLOW, max_body_bytes=limit)
    chunks, rejected = [], []
    for i, c in enumerate(calls, 1):
        try:
            chunks.extend(chunker.add(i, c))
        except CallTooLarge:
            rejected.append(i)
    chunks.extend(chunker.flush())
    assert sorted([r for ch in chunks for r in ch.rows] + rejected) == list(range(1, len(calls) + 1))
    for ch in chunks:
        assert 1 <= len(ch.calls) <= batch
        assert ch.body_bytes == len(formula(SID, FLOW, ch.calls)) <= limit
