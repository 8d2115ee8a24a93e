"""`phonon-outbound run` as a new user meets it: the same file name every day, odd file names,
Ctrl-C, a second run of the same file, other flows' security-ids, usage errors and output that
is safe for a terminal. Each test runs the command as a separate process."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phonon_outbound_dev.cli import build_parser
from phonon_outbound_dev.simulator import PhononSimulator
from tests.e2e.test_cli import CLI, ROOT, read_report, run_cli, write_csv

FLOW, SID = "Flow1234", "S" * 64
OTHER, OTHER_SID = "Other987", "T" * 64

pytestmark = pytest.mark.e2e


def test_same_file_name_and_same_file_twice_get_their_own_reports_with_their_own_counts(tmp_path):
    # Given two monthly exports with the same name, and January's given twice
    jan = write_csv((tmp_path / "jan").mkdir() or tmp_path / "jan" / "contacts.csv", 3, prefix="JAN")
    feb = write_csv((tmp_path / "feb").mkdir() or tmp_path / "feb" / "contacts.csv", 4, prefix="FEB")
    out = tmp_path / "out"
    with PhononSimulator(flows={FLOW: SID}) as sim:
        proc = run_cli("run", "--json", "--api-url", sim.url, "--flow-id", FLOW, "--out", str(out),
                       str(jan), str(feb), str(jan), env={"PHONON_SECURITY_ID": SID}, state=tmp_path / "state")
        stats = sim.stats()
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = json.loads(proc.stdout)["files"]
    # Then each input has its own report file, none overwritten, each with its own counts
    reports = [f["report"] for f in files]
    assert len(set(reports)) == 3 and all(Path(r).is_file() for r in reports)
    assert all(Path(r).name.startswith("contacts.csv.") for r in reports)
    assert [(f["rows"], f["accepted"], f["duplicate"]) for f in files] == [(3, 3, 0), (4, 4, 0), (3, 0, 3)]
    assert [r["status"] for r in read_report(reports[0])] == ["ACCEPTED"] * 3
    assert [r["client-identifier"] for r in read_report(reports[1])] == [f"FEB-{i:05d}" for i in range(4)]
    assert [r["status"] for r in read_report(reports[2])] == ["DUPLICATE"] * 3
    summaries = [json.loads(Path(r.replace(".results.csv", ".summary.json")).read_text()) for r in reports]
    assert [s["accepted"] for s in summaries] == [3, 4, 0]
    assert stats["calls_accepted"] == 7


def test_file_names_with_plus_spaces_parentheses_and_accents_are_read(tmp_path):
    # Given file names a real S3 notification would URL-encode ('+' for a space), names that
    # look encoded already, URL delimiters, emoji, Devanagari, and one at the file system's
    # 255-byte limit (its report name cannot simply append `.<upload time>.summary.json`)
    names = ["Leads+Q3 (final) é.csv", "x%20y%2B.csv", "h#sh?q=1&a.csv", "📞 calls.csv", "संपर्क सूची.csv",
             "L" * 251 + ".csv"]
    paths = [write_csv(tmp_path / n, 2, prefix=f"N{i}") for i, n in enumerate(names)]
    proc = run_cli("run", "--json", "--flow-id", "DemoFlw1", "--out", str(tmp_path / "out"), *map(str, paths),
                   state=tmp_path / "state")
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = json.loads(proc.stdout)["files"]
    assert [f["key"] for f in files] == [f"incoming/{n}" for n in names]
    assert all(f["accepted"] == 2 and not f.get("error") for f in files)
    reports = [Path(f["report"]) for f in files]
    assert len(set(reports)) == len(names) and all(r.is_file() for r in reports)
    assert all(r.name.startswith(n[:40]) for r, n in zip(reports, names, strict=True))
    assert [len(read_report(str(r))) for r in reports] == [2] * len(names)


def test_ctrl_c_writes_every_row_exits_130_and_the_same_command_again_sends_nobody_twice(tmp_path):
    # Given 200 rows at 600 calls a minute (20 s of sending)
    data = write_csv(tmp_path / "slow.csv", 200)
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "outbound"), str(ROOT / "devkit")]), "PHONON_SECURITY_ID": SID}
    env.pop("AWS_ENDPOINT_URL", None)
    with PhononSimulator(flows={FLOW: SID}, rate_per_minute=600) as sim:
        args = [*CLI, "run", "--json", "--rate", "600", "--api-url", sim.url, "--flow-id", FLOW,
                "--out", str(tmp_path / "out"), "--state-dir", str(state), str(data)]
        # (a child of a non-interactive shell ignores SIGINT: its own session, signalled as a group)
        child = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        deadline = time.monotonic() + 120
        while sim.stats()["calls_accepted"] < 40 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.1)
        # When the user presses Ctrl-C mid-way
        os.killpg(child.pid, signal.SIGINT)
        stdout, stderr = child.communicate(timeout=120)
        first = sim.stats()
        # Then: exit 130, no traceback, a report with every row
        assert child.returncode == 130, stderr[-3000:]
        assert "Traceback" not in stderr and "Traceback" not in stdout
        result = json.loads(stdout)
        assert result["interrupted"] is True
        report = read_report(result["files"][0]["report"])
        assert [int(r["row"]) for r in report] == list(range(1, 201))
        assert [r["client-identifier"] for r in report] == [f"E-{i:05d}" for i in range(200)]
        accepted = {r["client-identifier"] for r in report if r["status"] == "ACCEPTED"}
        cancelled = [r for r in report if r["status"] == "CANCELLED"]
        assert all(r["request-id"] for r in report if r["status"] == "ACCEPTED")
        assert accepted == set(first["calls_by_client_identifier"])  # the report says what was sent
        assert cancelled and all("interrupted" in r["reason"] and "same command again" in r["reason"]
                                 for r in cancelled)
        assert {r["status"] for r in report} <= {"ACCEPTED", "CANCELLED"}
        assert "to go on, run the same command again" in stderr
        # When the same command runs again
        again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
        second = sim.stats()
    # Then nobody is called twice, everybody once, and the first run's rows are DUPLICATE
    assert again.returncode == 0, again.stderr[-3000:]
    assert second["called_twice"] == [] and len(second["calls_by_client_identifier"]) == 200
    report2 = read_report(json.loads(again.stdout)["files"][0]["report"])
    assert {r["client-identifier"] for r in report2 if r["status"] == "DUPLICATE"} == accepted
    assert {r["status"] for r in report2} == {"ACCEPTED", "DUPLICATE"}
    assert result["files"][0]["report"] != json.loads(again.stdout)["files"][0]["report"]  # not overwritten


def test_ctrl_c_during_start_up_is_exit_130_without_a_traceback(tmp_path):
    data = write_csv(tmp_path / "early.csv", 5)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "outbound"), str(ROOT / "devkit")])}
    env.pop("AWS_ENDPOINT_URL", None)
    child = subprocess.Popen([*CLI, "run", "--flow-id", "DemoFlw1", "--out", str(tmp_path / "out"), "--state-dir",
                              str(tmp_path / "state"), str(data)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(1.5)  # the embedded AWS is starting
    os.killpg(child.pid, signal.SIGINT)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr + stdout
    assert "interrupted" in stderr


def test_a_second_run_is_duplicate_without_calling_and_no_state_forgets(tmp_path):
    data = write_csv(tmp_path / "daily.csv", 6)
    state = tmp_path / "state"
    with PhononSimulator(flows={FLOW: SID}) as sim:
        base = ["run", "--json", "--api-url", sim.url, "--flow-id", FLOW, "--out", str(tmp_path / "out")]
        env = {"PHONON_SECURITY_ID": SID}
        first = run_cli(*base, "--state-dir", str(state), str(data), env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        assert (state / "dedupe-claims.jsonl").is_file()
        saved = (state / "dedupe-claims.jsonl").read_text()
        assert not any(f"98{i:08d}" in saved for i in range(6))  # hashes, no phone numbers
        second = run_cli(*base, "--state-dir", str(state), str(data), env=env)
        after_second = sim.stats()["calls_accepted"]
        third = run_cli(*base, "--no-state", str(data), env=env)
        after_third = sim.stats()["calls_accepted"]
    assert second.returncode == 0
    s = json.loads(second.stdout)["files"][0]
    assert (s["duplicate"], s["accepted"]) == (6, 0)
    reasons = {r["reason"] for r in read_report(s["report"])}
    assert all("already accepted from incoming/daily.csv row" in r for r in reasons)
    assert after_second == 6  # the second run called nobody
    assert json.loads(third.stdout)["totals"]["accepted"] == 6 and after_third == 12  # --no-state: no memory


def test_another_flows_security_id_from_the_environment(tmp_path):
    # Given a JSON file that names its own flow, whose security-id is in PHONON_SECURITY_ID_<FLOW>
    doc = {"flow-id": OTHER, "calls": [{"client-identifier": "J-1", "contact-numbers": ["9876543210"]}]}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(doc))
    with PhononSimulator(flows={FLOW: SID, OTHER: OTHER_SID}) as sim:
        ok = run_cli("run", "--json", "--api-url", sim.url, "--out", str(tmp_path / "out"), str(path),
                     env={f"PHONON_SECURITY_ID_{OTHER}": OTHER_SID}, state=tmp_path / "s1")
        missing = run_cli("run", "--json", "--api-url", sim.url, "--out", str(tmp_path / "out"), str(path),
                          state=tmp_path / "s2")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert json.loads(ok.stdout)["files"][0]["accepted"] == 1
    assert OTHER_SID not in ok.stdout + ok.stderr
    assert missing.returncode == 1
    assert OTHER in json.loads(missing.stdout)["files"][0]["error"]
    assert f"PHONON_SECURITY_ID_{OTHER}" in missing.stderr  # says how to give it
    # With the bundled simulator the file's own flow works with the demo security-id
    demo = run_cli("run", "--json", "--out", str(tmp_path / "out"), str(path), state=tmp_path / "s3")
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert json.loads(demo.stdout)["files"][0]["flow"] == OTHER


def test_usage_errors_are_one_line_and_exit_2(tmp_path):
    sample = "events/sample-contacts.csv"
    for args in (["run", "--flow-id", "bad", sample], ["run", "--flow-id", "Flow12345", sample],
                 ["check", "--flow-id", "Fl0w-123", sample], ["run", "--no-state", "--flow-id", FLOW, "--security-id", "short", sample],
                 ["run", "--security-id", f"bad={SID}", sample], ["run", str(tmp_path)]):
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert proc.stdout == ""
    # Every malformed command line is one line naming the problem (no usage block), exit 2
    for args, words in ((["run", "--rate", "0", sample], "--rate"), (["run", "--batch-size", "10001", sample], "10000"),
                        (["run", "--bogus", sample], "--bogus"), (["check", "--rate", "5", sample], "--rate"),
                        (["run", "--flow-id", "Fl0w\x1b[31m", sample], "--flow-id"), (["run"], "FILE"),
                        (["redrive"], "--stack"), (["nonsense"], "nonsense"), ([], "COMMAND"),
                        (["run", "--concurrency", "two", sample], "--concurrency")):
        proc = run_cli(*args, state=tmp_path.parent / f"{tmp_path.name}-st")
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr, (args, proc.stderr)
        assert "\x1b" not in proc.stderr and proc.stdout == ""
    # Output places that cannot be used: one line naming the option, exit 2, nothing sent
    places = tmp_path.parent / f"{tmp_path.name}-places"
    places.mkdir()
    a_file = places / "a-file.txt"
    a_file.write_text("x")
    for args, option in ((["run", "--out", str(a_file)], "--out"), (["check", "--out", str(a_file)], "--out"),
                         (["run", "--log-file", str(places)], "--log-file"),
                         (["run", "--log-file", str(a_file / "run.log")], "--log-file"),
                         (["check", "--out", str(a_file / "sub")], "--out")):
        proc = run_cli(*args, "--flow-id", "DemoFlw1", sample, state=places / "st")
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and option in proc.stderr, (args, proc.stderr)
    empty = run_cli("run", str(tmp_path))
    assert "no contact files" in empty.stderr
    assert "short" not in run_cli("run", "--flow-id", FLOW, "--security-id", "short", sample).stderr  # values are never echoed


def test_a_directory_stands_for_its_contact_files_sorted(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    write_csv(folder / "b.csv", 2, prefix="B")
    write_csv(folder / "a.csv", 2, prefix="A")
    (folder / "notes.md").write_text("not a contact file")
    (folder / "sub").mkdir()
    proc = run_cli("check", "--json", "--flow-id", "DemoFlw1", "--out", str(tmp_path / "out"), str(folder))
    assert proc.returncode == 0, proc.stderr
    assert [Path(f["file"]).name for f in json.loads(proc.stdout)["files"]] == ["a.csv", "b.csv"]


def test_every_option_of_every_command_is_described_in_its_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "run" in a.choices).choices
    for name in ("run", "check", "redrive"):
        for action in subparsers[name]._actions:
            assert action.help and len(action.help) > 10, (name, action.dest)
    for name in ("run", "check", "redrive"):
        proc = subprocess.run([*CLI, name, "--help"], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "outbound"), str(ROOT / "devkit")])})
        assert proc.returncode == 0 and "--" in proc.stdout
    sim = subprocess.run([*CLI, "simulate", "--help"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "outbound"), str(ROOT / "devkit")])})
    assert sim.returncode == 0 and "--port" in sim.stdout


def test_control_characters_from_a_file_never_reach_the_terminal(tmp_path):
    # Given a file whose name and header carry terminal escape sequences
    path = tmp_path / "evil\x1b[2J\x07.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["client-identifier", "phone", "Na\x1b]0;owned\x07me", ""])
        w.writerow(["C-1", "9876543210", "x", ""])
        w.writerow(["C-2", "12345", "y", ""])
    for command in ("check", "run"):
        proc = run_cli(command, "--flow-id", "DemoFlw1", "--out", str(tmp_path / command), str(path),
                       state=tmp_path / "state")
        assert proc.returncode == 1, proc.stderr[-2000:]
        for text in (proc.stdout, proc.stderr):
            assert "\x1b" not in text and "\x07" not in text
        assert "\\x1b" in proc.stdout  # shown escaped instead


def test_machine_logs_go_to_the_log_file_not_the_terminal(tmp_path):
    data = write_csv(tmp_path / "logs.csv", 3)
    proc = run_cli("run", "--flow-id", "DemoFlw1", "--out", str(tmp_path / "out"), str(data), state=tmp_path / "s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"level"' not in proc.stdout + proc.stderr  # no JSON log lines in the terminal
    assert "3 rows: 3 accepted" in proc.stdout  # the person's summary on stdout
    logs = list((tmp_path / "out" / "logs").glob("run-*.log"))
    assert len(logs) == 1 and '"report written"' in logs[0].read_text()
    verbose = run_cli("run", "--verbose", "--no-state", "--flow-id", "DemoFlw1", "--out", str(tmp_path / "out"),
                      str(data))
    assert '"level"' in verbose.stderr


def test_column_mapping_options_are_uploaded_as_object_metadata(tmp_path):
    from phonon_outbound_dev.local.runner import LocalPipeline, RunOptions

    data = write_csv(tmp_path / "m.csv", 1)
    opts = RunOptions(flow_id="DemoFlw1", out_dir=tmp_path / "out", phone_columns=("phone", "Mobile Nº"),
                      id_column="client-identifier")
    with LocalPipeline(opts) as pipeline:
        [f] = pipeline.upload([data])
        head = pipeline.s3.head_object(Bucket=f.obj.bucket, Key=f.obj.key, VersionId=f.obj.version_id)
    assert head["Metadata"]["id-column"] == "client-identifier"
    assert head["Metadata"]["phone-columns"].startswith("=?utf-8?")  # RFC 2047, as S3 returns non-ASCII


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_phone_and_id_column_options_map_columns_the_rules_do_not_know(tmp_path):
    # Given an export whose phone columns and identifier have names no rule recognises
    # (non-ASCII names too: S3 returns such metadata RFC 2047-encoded, ingest must decode it)
    path = tmp_path / "export.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["Réf", "Primary", "मोबाइल नंबर", "Name"])
        w.writerow(["R-1", "9876543210", "", "A"])
        w.writerow(["R-2", "", "9876543211", "B"])  # only the second column
    mapping = ["--phone-columns", "Primary,मोबाइल नंबर", "--id-column", "Réf"]
    unmapped = run_cli("check", "--json", "--flow-id", "DemoFlw1", "--out", str(tmp_path / "c0"), str(path))
    assert json.loads(unmapped.stdout)["files"][0].get("error")  # no phone column by the rules
    checked = run_cli("check", "--json", "--flow-id", "DemoFlw1", "--out", str(tmp_path / "c1"), *mapping, str(path))
    ran = run_cli("run", "--json", "--flow-id", "DemoFlw1", "--out", str(tmp_path / "r"), *mapping, str(path),
                  state=tmp_path / "state")
    for proc in (checked, ran):
        assert proc.returncode == 0, proc.stderr[-2000:]
        f = json.loads(proc.stdout)["files"][0]
        assert f["accepted"] == 2
        assert [r["client-identifier"] for r in read_report(f["report"])] == ["R-1", "R-2"]
    wrong = run_cli("run", "--json", "--flow-id", "DemoFlw1", "--out", str(tmp_path / "w"), "--phone-columns", "Fax",
                    str(path), state=tmp_path / "state")
    assert wrong.returncode == 1 and "Fax" in json.loads(wrong.stdout)["files"][0]["error"]


def test_check_gives_two_inputs_with_the_same_name_their_own_reports(tmp_path):
    jan = write_csv((tmp_path / "jan").mkdir() or tmp_path / "jan" / "contacts.csv", 2, prefix="JAN")
    feb = write_csv((tmp_path / "feb").mkdir() or tmp_path / "feb" / "contacts.csv", 3, prefix="FEB")
    proc = run_cli("check", "--json", "--flow-id", "DemoFlw1", "--out", str(tmp_path / "out"), str(jan), str(feb))
    files = json.loads(proc.stdout)["files"]
    assert files[0]["report"] != files[1]["report"]
    assert [len(read_report(f["report"])) for f in files] == [2, 3]


def test_an_api_that_never_answers_reads_0_requests_reached_phonon(tmp_path):
    data = write_csv(tmp_path / "down.csv", 4)
    proc = run_cli("run", "--api-url", "http://127.0.0.1:9/create", "--flow-id", FLOW, "--out", str(tmp_path / "out"),
                   str(data), env={"PHONON_SECURITY_ID": SID}, state=tmp_path / "state")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "4 rows: 0 accepted, 4 failed" in proc.stdout
    assert "0 requests reached Phonon" in proc.stdout
    assert "note: phone numbers from 'phone'" in proc.stdout  # the notes reach the person


def test_ctrl_c_while_an_answer_is_awaited_keeps_those_rows_from_being_sent_again(tmp_path):
    """A request on the wire when the run stops may have been placed: its rows are FAILED as
    such (not CANCELLED), and their dedupe claims are kept, so the next run does not call them."""
    import _thread
    import threading

    from phonon_outbound_dev.local.runner import IN_FLIGHT_REASON, LocalPipeline, RunOptions

    data = write_csv(tmp_path / "slowapi.csv", 20)
    with PhononSimulator(flows={FLOW: SID}, latency_s=(6.0, 6.0)) as sim:
        opts = RunOptions(flow_id=FLOW, api_url=sim.url, security_id=SID, batch_size=10, out_dir=tmp_path / "out",
                          state_dir=tmp_path / "state", inflight_grace_s=0.5)
        with LocalPipeline(opts) as pipeline:
            threading.Timer(3.0, _thread.interrupt_main).start()  # Ctrl-C while both requests wait
            result = pipeline.run([data])
        report = read_report(result["files"][0]["report"])
        assert result["interrupted"] and len(report) == 20
        assert {r["status"] for r in report} == {"FAILED"}
        assert all(r["reason"] == IN_FLIGHT_REASON and r["client-identifier"] for r in report)
        time.sleep(4)  # the slow answers arrive: Phonon did place those calls
        placed = sim.stats()["calls_accepted"]
        opts.inflight_grace_s = 10.0
        with LocalPipeline(opts) as pipeline:
            again = pipeline.run([data])
        assert again["totals"]["duplicate"] == 20
        assert sim.stats()["calls_accepted"] == placed == 20  # nobody called twice


def test_a_state_dir_that_cannot_be_used_is_a_usage_error_and_a_damaged_one_a_warning(tmp_path):
    data = write_csv(tmp_path / "st.csv", 2)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    # Given a --state-dir that cannot be written: refused before anything is sent, one line
    proc = run_cli("run", "--flow-id", "DemoFlw1", "--state-dir", str(blocker / "state"), "--out",
                   str(tmp_path / "out"), str(data))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert "--state-dir" in proc.stderr and "--no-state" in proc.stderr
    # Given a state file damaged by bytes that are not text and an item of the wrong shape
    state = tmp_path / "state"
    state.mkdir()
    (state / "dedupe-claims.jsonl").write_bytes(b"\xff\xfe garbage\n" + json.dumps(
        {"pk": {"S": "DEDUPE#x"}, "sk": {"S": "-"}, "expires": "soon"}).encode() + b"\n")
    proc = run_cli("run", "--json", "--flow-id", "DemoFlw1", "--state-dir", str(state), "--out", str(tmp_path / "out"),
                   str(data))
    # Then the run goes on, says what was lost, and saves a clean state
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["totals"]["accepted"] == 2
    assert "2 damaged line(s)" in proc.stderr and "Traceback" not in proc.stderr
    saved = (state / "dedupe-claims.jsonl").read_text().splitlines()
    assert len([line for line in saved if "DEDUPE#" in line]) == 2


def test_ctrl_c_after_everything_was_sent_stops_the_waiting_says_so_and_exits_130(tmp_path):
    # Given a run that has sent every row and now waits for the simulator's flow-end webhooks
    data = write_csv(tmp_path / "late.csv", 200)
    log = tmp_path / "run.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "outbound"), str(ROOT / "devkit")])}
    env.pop("AWS_ENDPOINT_URL", None)
    child = subprocess.Popen([*CLI, "run", "--json", "--flow-id", "DemoFlw1", "--out", str(tmp_path / "out"),
                              "--log-file", str(log), "--state-dir", str(tmp_path / "state"), str(data)], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline and '"report written"' not in (
            log.read_text() if log.exists() else ""):
        time.sleep(0.1)
    time.sleep(0.5)
    # When the user presses Ctrl-C (while the reports are being finished)
    os.killpg(child.pid, signal.SIGINT)
    stdout, stderr = child.communicate(timeout=90)
    # Then it is acknowledged at once, the reports are complete, and the exit status says interrupted
    assert child.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "everything was already sent" in stderr
    result = json.loads(stdout)
    assert result["totals"]["accepted"] == 200
    assert [r["status"] for r in read_report(result["files"][0]["report"])] == ["ACCEPTED"] * 200
    assert (tmp_path / "state" / "dedupe-claims.jsonl").is_file()
