"""`phonon-outbound limit` (devkit steer.py): what it parses, what it refuses, and how it says
what happened. Usage errors are exit 2 with one line and no traceback; nothing runs here (no
stack, no local run): the command's run against both is tests/e2e/test_cli_control.py."""

from __future__ import annotations

import pytest

from phonon_outbound_dev import cli
from phonon_outbound_dev.steer import describe


def parse(*argv: str):
    return cli.build_parser().parse_args(list(argv))


@pytest.mark.parametrize(("argv", "target", "per_minute", "none"), [
    (["limit", "--job", "j1", "--per-minute", "100"], ("j1", None, None), "100", False),
    (["limit", "--key", "a.csv", "--version", "v1", "--per-minute", "0"], (None, "a.csv", None), "0", False),
    (["limit", "--flow", "Flow1234", "--none"], (None, None, "Flow1234"), None, True),
])
def test_limit_takes_one_target_and_a_cap_or_none(argv, target, per_minute, none):
    args = parse(*argv, "--stack", "s1")
    assert (args.job, args.key, args.flow) == target
    assert (args.per_minute, args.none, args.stack) == (per_minute, none, "s1")


@pytest.mark.parametrize("argv", [
    ["limit", "--job", "j1"],  # no value
    ["limit", "--job", "j1", "--per-minute", "10", "--none"],  # both
    ["limit", "--per-minute", "10"],  # no target
    ["limit", "--job", "j1", "--flow", "Flow1234", "--per-minute", "10"],  # two targets
    ["limit", "--job", "j1", "--per-minute", "10", "--reason", "why"],  # a cap keeps no reason
])
def test_a_limit_without_exactly_one_target_and_one_value_is_a_usage_error(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") <= 2


@pytest.mark.parametrize(("value", "why"), [("fast", "a whole number from 1 to the global limit"),
                                           ("-5", "a whole number from 1 to the global limit"),
                                           ("4155550123x", "a whole number from 1 to the global limit")])
def test_a_bad_cap_is_one_line_exit_2_naming_the_rule_not_the_value(value, why, capsys, tmp_path):
    # (checked before any stack or local run is asked: here there is none)
    assert cli.main(["limit", "--job", "j1", "--per-minute", value, "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert why in err
    assert "4155550123" not in err


def test_the_answer_says_the_cap_and_the_state():
    assert describe({"action": "limit", "job": "j1", "state": "running", "already": False, "rate_cap": 1200}) == \
        "job j1: capped at 1,200 calls/min (running)"
    assert describe({"action": "limit", "flow": "Flow1234", "state": "paused", "already": True, "rate_cap": 60}) == \
        "flow Flow1234: capped at 60 calls/min already (paused); nothing changed"
    assert describe({"action": "limit", "job": "j1", "key": "incoming/a.csv", "version": "", "state": "running",
                     "already": False, "rate_cap": None}) == "job j1 (incoming/a.csv): no cap (running)"
