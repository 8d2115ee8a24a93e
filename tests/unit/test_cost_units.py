"""The cost bench's pure arithmetic: DynamoDB item sizes and request units, SQS 64 KB request
chunks, Lambda GB-seconds and the price table (tests/bench/cost_bench.py; docs/benchmarks.md,
"Cost per million calls"). Nothing here is timed or touches AWS."""

from __future__ import annotations

import base64

import pytest

from tests.bench.cost_bench import (
    PRICES,
    Shadow,
    chunked_requests,
    dollars,
    gb_seconds,
    item_size,
    number_size,
    read_units,
    write_units,
)


def test_write_units_per_started_kilobyte():
    assert write_units(1536) == 2  # a 1.5 KB put
    assert write_units(1024) == 1
    assert write_units(1025) == 2
    assert write_units(0) == 1  # a failed condition on an absent item still costs 1
    assert write_units(1536, transactional=True) == 4


def test_read_units_per_started_4_kb():
    assert read_units(5 * 1024) == 2  # a 5 KB strongly consistent get
    assert read_units(5 * 1024, consistent=False) == 1
    assert read_units(100, consistent=False) == 0.5
    assert read_units(0) == 1  # an absent item costs the minimum
    assert read_units(4096, transactional=True) == 2


def test_item_size_by_dynamodb_rules():
    # names + values: "pk"(2) + "JOB#1"(5), "n"(1) + 12345 (3 significant-digit pairs -> 3 + 1)
    assert item_size({"pk": {"S": "JOB#1"}, "n": {"N": "12345"}}) == 2 + 5 + 1 + 4
    assert number_size("100") == 2  # trailing zeros are not significant
    assert number_size("-0.0012") == 2
    assert item_size({"b": {"B": base64.b64encode(b"\0" * 10).decode()}}) == 1 + 10
    assert item_size({"f": {"BOOL": True}, "z": {"NULL": True}}) == 2 + 2
    # list/map: 3 bytes + 1 per element (+ the element's key in a map)
    assert item_size({"l": {"L": [{"S": "ab"}, {"N": "1"}]}}) == 1 + 3 + (1 + 2) + (1 + 2)
    assert item_size({"m": {"M": {"k": {"S": "v"}}}}) == 1 + 3 + (1 + 1 + 1)
    assert item_size({"s": {"SS": ["a", "bc"]}}) == 1 + 3
    assert item_size({"é": {"S": "€"}}) == 2 + 3  # UTF-8 bytes
    with pytest.raises(ValueError):
        item_size({"x": {"Q": "?"}})


def test_sqs_requests_per_started_64_kb():
    assert chunked_requests(0) == 1
    assert chunked_requests(64 * 1024) == 1
    assert chunked_requests(64 * 1024 + 1) == 2
    assert chunked_requests(150 * 1024) == 3


def test_gb_seconds_rounds_up_to_the_millisecond():
    assert gb_seconds(0.0101, 1024) == pytest.approx(0.011)
    assert gb_seconds(1.0, 512) == pytest.approx(0.5)
    assert gb_seconds(0.002, 1769) == pytest.approx(0.002 * 1769 / 1024)


def test_dollars_by_service():
    per_call = {"ddb_wru": 2.0, "ddb_rru": 1.0, "sqs_requests": 0.01, "s3_put_class": 0.001, "s3_get_class": 0.002,
                "events": 0.001, "secrets_calls": 0.001, "lambda_invocations": 1.0, "lambda_gb_s": 0.05}
    d = dollars(per_call)
    assert d["dynamodb"] * 1e6 == pytest.approx(2 * 0.625 + 0.125)
    assert d["lambda"] * 1e6 == pytest.approx(0.20 + 0.05 * 1e6 * PRICES["lambda_gb_s_arm64"])
    assert d["sqs"] * 1e6 == pytest.approx(0.004)
    assert d["s3"] * 1e6 == pytest.approx(0.001 * 5 + 0.002 * 0.4)
    assert d["eventbridge"] * 1e6 == pytest.approx(0.001)
    assert d["secretsmanager"] * 1e6 == pytest.approx(0.005)


def test_index_entries_written_when_the_item_has_the_index_key():
    table = {"KeySchema": [{"AttributeName": "id"}],
             "GlobalSecondaryIndexes": [{"KeySchema": [{"AttributeName": "cid"}]},
                                        {"KeySchema": [{"AttributeName": "req"}]}]}
    sh = Shadow(lambda _name: table)
    small = {"id": {"S": "u1"}}
    full = {"id": {"S": "u1"}, "cid": {"S": "C-1"}, "req": {"S": "r"}}
    assert sh.index_writes("t", None, small) == 0  # no index key: no index entry
    assert sh.index_writes("t", None, full) == 2  # one entry in each index
    moved = {**full, "cid": {"S": "C-2"}}
    assert sh.index_writes("t", full, moved) == 2 + 1  # cid changed: delete + put; req: rewrite
    assert sh.index_writes("t", full, None) == 2  # deleting the item deletes both entries
