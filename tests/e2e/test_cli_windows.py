"""`phonon-outbound run --window` on the real clock: a window a few seconds wide that opens,
closes mid-run and opens again; nothing reaches Phonon (the simulator, over HTTP) while it is
closed, and every row is ACCEPTED in the end (docs/calling-windows.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from phonon_outbound.status import Status
from phonon_outbound.windows import parse_window, zone
from phonon_outbound_dev.simulator import PhononSimulator
from tests.e2e.test_cli import read_report, run_cli, write_csv

FLOW, SID = "Flow1234", "S" * 64
IST = zone("Asia/Kolkata")

pytestmark = pytest.mark.e2e


def hms(t: datetime) -> str:
    return t.astimezone(IST).strftime("%H:%M:%S")


def test_run_sends_only_while_a_few_seconds_wide_window_is_open_and_finishes_after_it_reopens(tmp_path):
    # Given 600 rows at 6,000 calls/min (chunks of 100, one a second) and a window that opens
    # in 8 s for 8 s, closes for 6 s, then opens again ('daily': it may run over midnight)
    contacts = write_csv(tmp_path / "window.csv", 600, prefix="W")
    now = datetime.now(UTC).replace(microsecond=0)
    a, b = now + timedelta(seconds=8), now + timedelta(seconds=16)
    c, d = now + timedelta(seconds=22), now + timedelta(seconds=90)
    spec = f"daily {hms(a)}-{hms(b)}, {hms(c)}-{hms(d)}"
    with PhononSimulator(flows={FLOW: SID}) as sim:
        proc = run_cli("run", "--json", "--api-url", sim.url, "--flow-id", FLOW, "--rate", "6000",
                       "--window", spec, "--window-tz", "Asia/Kolkata", "--out", str(tmp_path / "out"),
                       str(contacts), env={"PHONON_SECURITY_ID": SID}, timeout=120)
        stats = sim.stats()
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    # Then no request reached Phonon while the window was closed
    window = parse_window(spec)
    sent_at = [datetime.fromtimestamp(t, UTC) for t, _ in stats["accepted"]]
    assert stats["requests"] == stats["accepted_requests"] == 6
    assert all(window.allowed(t, IST) for t in sent_at), [hms(t) for t in sent_at]
    assert min(sent_at) >= a
    # and every row is ACCEPTED, nothing in the DLQ
    f = result["files"][0]
    assert (f["rows"], f["accepted"]) == (600, 600)
    assert result["dead_letter_messages"] == 0
    assert all(r["status"] == Status.ACCEPTED for r in read_report(f["report"]))
    # and the run said it waited for the window, while it waited and in its summary
    assert "waiting for the calling window" in proc.stderr
    assert "waited for the calling window" in proc.stderr
    assert f["calling_window"]["reason"].startswith("waiting for the calling window 'daily")


def test_window_options_are_checked_before_anything_runs(tmp_path):
    contacts = write_csv(tmp_path / "c.csv", 1)
    bad = run_cli("run", "--flow-id", FLOW, "--window", "Mon-Sat 9-21", str(contacts), timeout=60)
    assert bad.returncode == 2
    assert "--window: '9' in 'Mon-Sat 9-21' is not a time of day" in bad.stderr
    alone = run_cli("check", "--flow-id", FLOW, "--window-policy", "defer", str(contacts), timeout=60)
    assert alone.returncode == 2 and "--window-policy needs --window" in alone.stderr
