"""The suppression list's hashing, its semantics (scopes, expiry, removal, concurrent writers) and
the frequency cap's rolling window, against the list's own DynamoDB table (moto, from template.yaml)."""

from __future__ import annotations

import json

import boto3
import pytest

from phonon_outbound.dtmf import keys_by_attempt
from phonon_outbound.settings import Settings
from phonon_outbound.suppression import (
    ALL_FLOWS,
    CLIENT,
    NUMBER,
    Cap,
    DynamoListTable,
    Hasher,
    MemoryListTable,
    SuppressionList,
    opted_out,
    parse_caps,
)

FLOW_A, FLOW_B = "FlowAAAA", "FlowBBBB"
SAME_NUMBER = ["+91 98123 45670", "+919812345670", "919812345670", "09812345670", "9812345670",
               "(0)98123-45670", "+91-98123-45670", " 098123 45670 "]


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def table(stack):
    name = stack.physical["SuppressionTable"]["Ref"]
    return DynamoListTable(boto3.resource("dynamodb", region_name="us-east-1").Table(name))


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def lst(table, clock):
    return SuppressionList(table, Hasher("salt-one"), "IN", clock=clock)


def row(n: int, cid: str = "", number: str = "919812345670") -> tuple[int, str, list[str]]:
    return (n, cid, [number])


# ------------------------------------------------------------------ hashing
def test_the_same_number_in_any_accepted_writing_has_one_key():
    lst = SuppressionList(MemoryListTable(), Hasher("s"), "IN")
    keys = {lst.subject_key(NUMBER, text) for text in SAME_NUMBER}
    assert len(keys) == 1
    key = keys.pop()
    assert key == Hasher("s").number_key("919812345670")  # what the reader's E.164 digits give
    assert "9812345670" not in key


def test_another_salt_another_hash_and_kinds_never_collide():
    a, b = Hasher("salt-one"), Hasher("salt-two")
    assert a.number_key("919812345670") != b.number_key("919812345670")
    assert a.client_key("919812345670") != a.number_key("919812345670")
    assert a.number_key("919812345670") != a.number_key("919812345671")


def test_a_number_that_is_not_valid_is_refused_without_repeating_it():
    lst = SuppressionList(MemoryListTable(), Hasher("s"), "IN")
    with pytest.raises(ValueError) as err:
        lst.subject_key(NUMBER, "12345")
    assert "12345" not in str(err.value)


# ------------------------------------------------------------------ list semantics
def test_a_global_entry_holds_every_flow_a_flow_entry_only_its_own(lst):
    lst.add(NUMBER, "+919812345670", ALL_FLOWS, "cli")
    lst.add(NUMBER, "09812345671", FLOW_A, "cli")
    rows = [row(1), row(2, number="919812345671"), row(3, number="919812345672")]
    held_a = lst.check(FLOW_A, rows)
    held_b = lst.check(FLOW_B, rows)
    assert set(held_a) == {1, 2} and set(held_b) == {1}
    assert "source: cli" in held_a[1] and "all flows" in held_a[1]
    assert f"flow {FLOW_A}" in held_a[2]
    assert all("9812345670" not in r and "9812345671" not in r for r in (*held_a.values(), *held_b.values()))


def test_client_identifiers_are_entries_too(lst):
    lst.add(CLIENT, "CRM-42", ALL_FLOWS, "event from crm")
    held = lst.check(FLOW_A, [row(1, "CRM-42", "919812345679"), row(2, "CRM-43", "919812345678")])
    assert list(held) == [1] and "client-identifier" in held[1] and "event from crm" in held[1]


def test_a_temporary_hold_ends_at_its_expiry(lst, clock):
    lst.add(NUMBER, "9812345670", ALL_FLOWS, "cli", expires=clock.t + 3600)
    assert 1 in lst.check(FLOW_A, [row(1)])
    clock.t += 3599
    assert 1 in lst.check(FLOW_A, [row(1)])
    clock.t += 2
    assert lst.check(FLOW_A, [row(1)]) == {}
    assert list(lst.entries()) == []


def test_remove_takes_one_scope_or_all(lst):
    lst.add(NUMBER, "9812345670", ALL_FLOWS, "cli")
    lst.add(NUMBER, "9812345670", FLOW_A, "cli")
    assert lst.remove(NUMBER, "+91 98123 45670", ALL_FLOWS)
    assert set(lst.check(FLOW_A, [row(1)])) == {1} and lst.check(FLOW_B, [row(1)]) == {}
    assert lst.remove(NUMBER, "9812345670", None)
    assert lst.check(FLOW_A, [row(1)]) == {}
    assert not lst.remove(NUMBER, "9812345670", None)  # nothing left to take off


def test_item_expiry_follows_its_entries(lst, table, clock):
    key = lst.add(NUMBER, "9812345670", FLOW_A, "cli", expires=clock.t + 100)
    assert table.get(key)["expires_at"] == int(clock.t + 100) + 1
    lst.add(NUMBER, "9812345670", ALL_FLOWS, "cli")  # a permanent entry: TTL must never take the item
    assert "expires_at" not in table.get(key)
    lst.remove(NUMBER, "9812345670", None)
    assert table.get(key)["expires_at"] <= clock.t  # emptied: TTL deletes it, nothing is deleted by us


def test_two_writers_do_not_lose_each_others_entries(lst, table):
    key = lst.add(NUMBER, "9812345670", FLOW_A, "first")
    stale = table.get(key)
    lst.add(NUMBER, "9812345670", FLOW_B, "second")
    assert not table.replace(key, {"scopes": {}}, stale["v"])  # a write based on the old version is refused
    lst.add_keys([key], ALL_FLOWS, "third")
    assert set(table.get(key)["scopes"]) == {FLOW_A, FLOW_B, ALL_FLOWS}


def test_the_table_holds_no_plain_number(lst, stack):
    for text in SAME_NUMBER:
        lst.add(NUMBER, text, ALL_FLOWS, "cli")
    lst.add(CLIENT, "CRM-1", FLOW_A, "cli")
    dump = json.dumps(boto3.client("dynamodb", region_name="us-east-1").scan(
        TableName=stack.physical["SuppressionTable"]["Ref"])["Items"])
    for plain in ("919812345670", "9812345670", "98123", "CRM-1"):
        assert plain not in dump


# ------------------------------------------------------------------ frequency cap
def test_the_cap_counts_contacts_within_its_rolling_window(table, clock):
    lst = SuppressionList(table, Hasher("s"), "IN", {ALL_FLOWS: Cap(2, 3600)}, clock)
    lst.record_contacts(FLOW_A, [("job.1", ["919812345670"])])
    clock.t += 1000
    lst.record_contacts(FLOW_A, [("job.2", ["919812345670"])])
    clock.t += 10
    held = lst.check(FLOW_A, [row(3)])
    assert "frequency cap" in held[3] and "2 times within 1 h" in held[3] and "9812345670" not in held[3]
    clock.t += 2600  # the first contact is out of the window now
    assert lst.check(FLOW_A, [row(3)]) == {}


def test_a_resent_row_does_not_count_itself_and_records_once(table, clock):
    lst = SuppressionList(table, Hasher("s"), "IN", {FLOW_A: Cap(1, 86400)}, clock)
    lst.record_contacts(FLOW_A, [("job.1", ["919812345670"])])
    lst.record_contacts(FLOW_A, [("job.1", ["919812345670"])])  # the same row resent: one contact
    assert lst.check(FLOW_A, [row(1)], own_refs={1: "job.1"}) == {}
    assert 2 in lst.check(FLOW_A, [row(2)], own_refs={2: "job.2"})


def test_caps_are_per_flow(table, clock):
    lst = SuppressionList(table, Hasher("s"), "IN", {FLOW_A: Cap(1, 86400)}, clock)
    lst.record_contacts(FLOW_A, [("a.1", ["919812345670"])])
    assert 1 in lst.check(FLOW_A, [row(1)])
    assert lst.check(FLOW_B, [row(1)]) == {}  # no cap for flow B
    lst.record_contacts(FLOW_B, [("b.1", ["919812345671"])])  # not counted: B has no cap
    assert lst.check(FLOW_A, [row(2, number="919812345671")]) == {}


def test_rows_of_one_file_count_against_the_cap_together(table, clock):
    from phonon_outbound.suppression import _FileCounts

    lst = SuppressionList(table, Hasher("s"), "IN", {ALL_FLOWS: Cap(2, 86400)}, clock)
    counts = _FileCounts()
    held = lst.check(FLOW_A, [row(1), row(2), row(3), row(4, number="919812345671")], file_counts=counts)
    assert list(held) == [3]


def test_cap_settings_are_checked():
    caps = parse_caps("*=3/24h, AbCd1234 = 1/7d")
    assert caps == {"*": Cap(3, 86400), "AbCd1234": Cap(1, 7 * 86400)}
    for bad in ("3/24h", "*=0/24h", "*=3/24", "toolongflow=1/1h", "*=3/24h;x"):
        with pytest.raises(ValueError):
            parse_caps(bad)
    with pytest.raises(ValueError):
        Settings(frequency_caps="*=three/24h")


# ------------------------------------------------------------------ opt-out signals
@pytest.mark.parametrize("push", [
    {"phonon-uuid": "u", "callDetails": [{"dtmfPressesd": ["9"]}]},
    {"phonon-uuid": "u", "callDetails": [{"dtmfPressesd": []}, {"dtmf_presses": [{"digit": "9"}]}]},
    {"body": {"phonon-uuid": "u", "CallDetails": [{"DtmfPressesd": "1#9"}]}},
    {"body": json.dumps({"phonon-uuid": "u", "callDetails": [{"dtmfPressesd": [9]}]})},
])
def test_the_opt_out_digit_is_found_however_the_push_writes_it(push):
    assert any("9" in keys for keys in keys_by_attempt(push))
    assert opted_out(Settings(opt_out_dtmf="9"), json.dumps(push), []) == "pressed 9"


def test_no_opt_out_without_the_digit_or_when_off():
    push = json.dumps({"phonon-uuid": "u", "callDetails": [{"dtmfPressesd": ["1", "2"]}]})
    assert opted_out(Settings(opt_out_dtmf="9"), push, []) is None
    assert opted_out(Settings(), json.dumps({"callDetails": [{"dtmfPressesd": ["9"]}]}), []) is None
    assert keys_by_attempt("{not json dtmf") == [] and keys_by_attempt(None) == []


def test_a_flow_variable_can_say_opted_out():
    from phonon_outbound.webhook import FlowVariable

    keys = [FlowVariable(name="$flow.key.OptOut", value="Yes")]
    assert opted_out(Settings(opt_out_key="OptOut"), "{}", keys) == "flow variable OptOut"
    assert opted_out(Settings(opt_out_key="OptOut"), "{}", [FlowVariable(name="$flow.key.OptOut", value="no")]) is None


def test_a_salt_read_through_a_function_is_read_once_for_many_keys_and_again_after_a_minute():
    reads: list[int] = []
    now = [0.0]

    def read_salt() -> str:
        reads.append(1)
        return "s"

    h = Hasher(read_salt, clock=lambda: now[0])
    keys = {h.number_key(f"9198{i:08d}") for i in range(100)}
    assert len(keys) == 100 and len(reads) == 1
    assert h.number_key("919800000001") == Hasher("s").number_key("919800000001")
    now[0] = Hasher.SALT_KEPT_S + 1  # a rotated salt is picked up
    h.number_key("919800000001")
    assert len(reads) == 2
