"""The reconciler (reconcile.py) on the in-memory store, moto's Secrets Manager and the bundled
simulator's pull API over real HTTP: rows whose flow-end push never came get their outcome
from the pull API, in requests of at most `reconcile_batch` ids (counted in the simulator's
pull log), 213 leaves them pending, 429 is backed off, a refused flow is not asked again.

The world (ingest → chunk messages → dispatch against the simulator) is the ingest tests'
own (tests/unit/test_ingest_on_fakes.py). The simulator here has no webhook URL: every push
is lost, so every accepted row waits for the reconciler."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from phonon_outbound.api.client import PULL_MAX_ANSWER_BYTES, PhononClient
from phonon_outbound.observability import logger
from phonon_outbound.reconcile import Reconciler, records_of
from phonon_outbound.status import Status
from phonon_outbound.webhook import WebhookError, WebhookService
from phonon_outbound_dev.local.runner import FakeContext
from phonon_outbound_dev.simulator import DEMO_FLOW_ID, DEMO_SECURITY_ID, PhononSimulator
from tests.conftest import service_log

from . import test_ingest_on_fakes as _world
from .test_ingest_on_fakes import World, contacts, good_rows

sim, clock, make_world = _world.sim, _world.clock, _world.make_world

AFTER = 900.0


class Pulling:
    """A World whose accepted calls ended at once, and its reconciler."""

    def __init__(self, make_world, sim: PhononSimulator, shape: str, **settings: object):
        sim.shape = shape
        sim.webhook_delay_s = settings.pop("flow_runs_s", 0.0)  # type: ignore[assignment]
        self.sim = sim
        self.w: World = make_world(pull_api_url=sim.pull_url, reconcile_after_s=AFTER, **settings)
        w = self.w
        self.webhook = WebhookService(w.store, w.settings.correlation_key)
        self.reconciler = self.reconciler_with(PULL_MAX_ANSWER_BYTES)

    def reconciler_with(self, max_answer_bytes: int) -> Reconciler:
        """A reconciler whose pull client reads answers of at most `max_answer_bytes` (as wired)."""
        w, sim = self.w, self.sim
        return Reconciler(w.settings, w.store, lambda: PhononClient(sim.pull_url, 1.0, 5.0,
                                                                    max_answer_bytes=max_answer_bytes),
                          w.secrets, self.webhook, sleep=w.clock.sleep, clock=w.clock)

    def send_file(self, n: int) -> str:
        obj = self.w.ingest_file(f"f{n}.csv", contacts(*good_rows(n)))
        for body in self.w.take():
            self.w.handle(body)
        assert self.w.job(obj)["completed"] is True
        return obj.job_id

    def run(self, job: str, after: float = AFTER + 1) -> dict:
        return self.reconciler.run(now=self.w.clock() + after, jobs=[job])

    def rows(self, job: str) -> list[dict]:
        return list(self.w.store.rows.iter_outcomes(job))

    def uuid_of(self) -> dict[str, str]:
        return {c["client-identifier"]: c["phonon-uuid"] for c in self.sim.accepted_calls()}


def test_a_lost_push_is_pulled_by_request_id_and_fills_the_rows_outcome(make_world, sim):
    p = Pulling(make_world, sim, "202")
    job = p.send_file(3)
    # Given the bulk endpoint's 202 answer: the rows are ACCEPTED with a request-id, no uuid,
    # and their pushes never came
    assert [(r["status"], r.get("phonon_uuid")) for r in p.rows(job)] == [(Status.ACCEPTED, None)] * 3
    # When the reconciler runs once the rows are older than reconcile_after_s
    summary = p.run(job)
    # Then it asked once, by the request's id, and stored the three outcomes
    assert [(q["request-ids"], q["phonon-uuids"], q["code"]) for q in sim.pull_log()] == [(1, 0, 200)]
    assert (summary["requests"], summary["pulled"], summary["no_data"]) == (1, 3, 0)
    uuids = p.uuid_of()
    assert [(r["cid"], r["phonon_uuid"]) for r in p.rows(job)] == [(c, uuids[c]) for c in ("C-0000", "C-0001",
                                                                                          "C-0002")]
    for row, cid in enumerate(("C-0000", "C-0001", "C-0002"), start=1):
        result = p.w.store.results.get_result(uuids[cid])
        assert result is not None and (result["job"], result["row"], result["status"]) == (job, row, "COMPLETED")
    # each row's outcome, as the push would have brought it, marked as pulled
    assert [(r["outcome"], r["outcome_src"], r["outcome_at"] > 0) for r in p.rows(job)] == [
        ("ANSWERED", "pull", True)] * 3
    # and the next run asks for nothing more: every accepted row has its outcome
    again = p.run(job)
    assert len(sim.pull_log()) == 1 and (again["asked"], again["requests"]) == (0, 0)


def test_a_scheduled_run_finds_the_jobs_awaiting_outcomes_itself(make_world, sim):
    p = Pulling(make_world, sim, "202")
    job = p.send_file(2)
    # the report is written and not final: the job is on the awaiting-outcomes index
    assert list(p.w.store.jobs.awaiting_outcomes()) == [job]
    summary = p.reconciler.run(now=p.w.clock() + AFTER + 1)  # no jobs named: as the schedule runs it
    assert (summary["jobs"], summary["pulled"]) == (1, 2)
    assert all(r["outcome_src"] == "pull" for r in p.rows(job))


def test_rows_younger_than_reconcile_after_are_not_asked_for(make_world, sim):
    p = Pulling(make_world, sim, "202")
    job = p.send_file(3)
    summary = p.run(job, after=AFTER - 1)
    assert sim.pull_log() == [] and summary["not_due"] == 3 and summary["requests"] == 0


def test_213_no_data_leaves_the_rows_pending(make_world, sim):
    p = Pulling(make_world, sim, "202", flow_runs_s=3600.0)  # the calls are still running
    job = p.send_file(2)
    summary = p.run(job)
    assert [q["code"] for q in sim.pull_log()] == [213]
    assert (summary["no_data"], summary["pulled"], summary["errors"]) == (1, 0, 0)
    assert [r.get("phonon_uuid") for r in p.rows(job)] == [None, None]


@pytest.mark.parametrize(("batch", "sizes"), [(200, [200, 200, 50]), (120, [120, 120, 120, 90])])
def test_uuids_are_asked_for_in_requests_of_at_most_reconcile_batch(make_world, sim, batch, sizes):
    # Given 450 rows accepted with their uuids (the 200 shape) whose pushes never came
    p = Pulling(make_world, sim, "200", reconcile_batch=batch)
    job = p.send_file(450)
    summary = p.run(job)
    # Then the pulls carried at most `batch` uuids each, and every call's outcome is stored
    assert [(q["phonon-uuids"], q["code"]) for q in sim.pull_log()] == [(n, 200) for n in sizes]
    assert summary["pulled"] == 450
    assert all(p.w.store.results.get_result(u) for u in p.uuid_of().values())


def test_request_ids_are_grouped_by_the_calls_they_bring_back(make_world, sim):
    # 450 rows in chunks of 50: nine requests, nine request-ids of 50 calls each
    p = Pulling(make_world, sim, "202", batch_size=50)
    job = p.send_file(450)
    p.run(job)
    # a pull asks for at most 200 calls' worth: four request-ids, four, one
    assert [(q["request-ids"], q["records"]) for q in sim.pull_log()] == [(4, 200), (4, 200), (1, 50)]
    assert all(r.get("phonon_uuid") for r in p.rows(job))


def test_429_is_backed_off_and_asked_again(make_world, sim):
    p = Pulling(make_world, sim, "202")
    job = p.send_file(2)
    sim.set_pull_faults(["http429"])
    summary = p.run(job)
    assert [q["http"] for q in sim.pull_log()] == [429, 200]
    assert p.w.clock.slept == [1.0]  # the answer's Retry-After
    assert summary["pulled"] == 2 and summary["errors"] == 0


def test_a_flow_the_pull_api_refuses_is_not_asked_again_in_the_run(make_world, sim):
    p = Pulling(make_world, sim, "200")
    job = p.send_file(450)  # three pulls' worth
    sim.add_flow(DEMO_FLOW_ID, "Z" * 64)  # the security-id we hold is no longer the flow's
    with service_log() as stream:
        summary = p.run(job)
    assert [(q["http"], q["code"]) for q in sim.pull_log()] == [(202, 202)]
    assert (summary["errors"], summary["pulled"]) == (1, 0)
    # said as an error, naming the flow and Phonon's answer, never the security-id or a number
    logged = stream.getvalue()
    assert "the pull API refused the flow" in logged and "Invalid Security ID" in logged
    assert DEMO_SECURITY_ID not in logged and "9800000" not in logged


def test_a_run_stops_asking_when_its_invocation_runs_out_of_time(make_world, sim):
    p = Pulling(make_world, sim, "200")
    job = p.send_file(450)  # three pulls' worth
    # time is up once the first pull was made (checked per job, per row read and before each pull)
    summary = p.reconciler.run(now=p.w.clock() + AFTER + 1, jobs=[job],
                               remaining_s=lambda: 300.0 if not sim.pull_log() else 1.0)
    assert [q["phonon-uuids"] for q in sim.pull_log()] == [200] and summary["out_of_time"] is True
    assert summary["pulled"] == 200


def test_the_rows_are_read_with_the_time_checked_and_the_rest_left_to_the_next_run(make_world, sim):
    p = Pulling(make_world, sim, "200")
    job = p.send_file(5)
    reads = []
    rows = p.w.store.rows

    class Counting:
        def __getattr__(self, name):
            return getattr(rows, name)

        def iter_outcomes(self, job):
            for row in rows.iter_outcomes(job):
                reads.append(row["row"])
                yield row

    p.reconciler.store.rows = Counting()  # type: ignore[misc]
    left = iter([300.0, 300.0, 300.0, 1.0])  # the job's turn, then rows 1 and 2; time is up at row 3
    summary = p.reconciler.run(now=p.w.clock() + AFTER + 1, jobs=[job], remaining_s=lambda: next(left, 1.0))
    # it stopped inside the row loop: no more rows read, nothing asked, left for the next run
    assert reads == [1, 2, 3] and summary["out_of_time"] is True and sim.pull_log() == []
    p.reconciler.store.rows = rows  # type: ignore[misc]
    assert p.run(job)["pulled"] == 5


def test_the_least_recently_reconciled_job_is_served_first(make_world, sim):
    p = Pulling(make_world, sim, "200", flow_runs_s=3600.0)  # 213: every job stays pending
    first, second = p.send_file(2), p.send_file(3)
    served = []
    due = p.reconciler._due

    def spy(job, item, now):
        served.append(job)
        return due(job, item, now)

    p.reconciler._due = spy  # type: ignore[method-assign]
    one_job = iter([300.0, 1.0])  # time for one job's turn per run (then out of time)
    p.reconciler.run(now=p.w.clock() + AFTER + 1, jobs=[first, second], remaining_s=lambda: next(one_job, 1.0))
    assert served == [first]
    # the next run starts with the job that was not served, though the index names it second
    one_job = iter([300.0, 1.0])
    p.reconciler.run(now=p.w.clock() + AFTER + 2, jobs=[first, second], remaining_s=lambda: next(one_job, 1.0))
    assert served == [first, second]
    assert p.w.store.jobs.get_job(second)["reconciled_at"] == int(p.w.clock() + AFTER + 2)


def test_phonons_error_text_is_masked_in_the_log(make_world, sim, monkeypatch):
    from phonon_outbound.api.client import ApiAnswer

    p = Pulling(make_world, sim, "202")
    job = p.send_file(1)
    number = "919812345678"
    answer = ApiAnswer(http_status=400, code=400, message=f"bad number {number}", request_id=None,
                       call_details=None, error=f"rejected {number}", elapsed_s=0.1)
    monkeypatch.setattr(PhononClient, "post", lambda self, body: answer)
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append({**record.__dict__})

    std = logging.getLogger(logger.name)
    keep = Keep()
    std.addHandler(keep)
    try:
        summary = p.run(job)
    finally:
        std.removeHandler(keep)
    assert summary["errors"] == 1
    refused = [r for r in seen if "refused a request" in str(r.get("msg"))]
    assert refused and all(number not in str(r) for r in refused)
    assert "678" in str(refused[0].get("answer"))  # masked to its last digits, not dropped


def test_off_without_a_pull_api_url(make_world, sim):
    p = Pulling(make_world, sim, "202")
    job = p.send_file(1)
    off = Reconciler(p.w.settings.model_copy(update={"pull_api_url": ""}), p.w.store, lambda: None, p.w.secrets,
                     p.webhook)
    assert off.run(jobs=[job]) == {"off": True} and sim.pull_log() == []


def test_the_answers_records_are_read_leniently():
    assert records_of({"data": [{"a": 1}, "x"]}) == [{"a": 1}]
    assert records_of({"records": {"a": 1}}) == [{"a": 1}]
    assert records_of({"api-response-code": 200}) == [] and records_of(None) == []


SCHEDULE = json.loads((Path(__file__).resolve().parents[2] / "events" / "schedule-event.json").read_text())


@pytest.mark.parametrize("event", [None, [], "x", {"jobs": "abc"}, {"jobs": [1, 2]}, {"jobs": ["j"] * 101}, {},
                                   SCHEDULE])
def test_the_handler_takes_any_event_without_crashing(aws_env, monkeypatch, event):
    import importlib.util

    from phonon_outbound import wiring
    from tests.conftest import ROOT

    monkeypatch.setenv("PULL_API_URL", "")  # off: nothing is asked, whatever the event says
    wiring.reset()
    spec = importlib.util.spec_from_file_location("reconcile_handler",
                                                  ROOT / "functions" / "reconcile" / "reconcile_handler.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    passed = []

    class Recording:
        def run(self, remaining_s=None, jobs=None):
            passed.append(jobs)
            return {"off": True}

    monkeypatch.setattr(wiring, "reconciler", lambda: Recording())
    try:
        assert module.handler(event, FakeContext("reconcile", 60)) == {"off": True}
        assert passed == [None]  # a bad event: every job awaiting outcomes, not the event's "jobs"
        assert module.handler({"jobs": ["j1", "j2"]}, FakeContext("reconcile", 60)) == {"off": True}
        assert passed == [None, ["j1", "j2"]]  # a good one: the validated list
    finally:
        wiring.reset()


# ------------------------------------------------------------------ records without keys, over-counted jobs, huge answers
def test_a_record_pulled_by_uuid_without_keys_is_stored_on_the_row_asked_for(make_world, sim):
    # Given rows accepted with their uuids (the 200 shape), and a pull API whose records do not
    # echo the flow variables (its record format is not published)
    p = Pulling(make_world, sim, "200")
    sim.pull_without_keys = True
    job = p.send_file(3)
    summary = p.run(job)
    # Then each record is stored on the row its uuid was asked for (not refused as unmatched, 409)
    assert (summary["pulled"], summary["errors"]) == (3, 0)
    uuids = p.uuid_of()
    assert [(r["phonon_uuid"], r["outcome_src"]) for r in p.rows(job)] == [
        (uuids[c], "pull") for c in ("C-0000", "C-0001", "C-0002")]
    for row, cid in enumerate(("C-0000", "C-0001", "C-0002"), start=1):
        result = p.w.store.results.get_result(uuids[cid])
        assert result is not None and (result["job"], result["row"], result.get("unmatched")) == (job, row, None)
    assert p.run(job)["requests"] == 0  # nothing pending any more


def test_a_record_pulled_by_request_id_without_keys_is_not_guessed(make_world, sim):
    # a request-id stands for many calls: a record without its ref cannot be told apart
    p = Pulling(make_world, sim, "202")
    sim.pull_without_keys = True
    job = p.send_file(2)
    summary = p.run(job)
    assert (summary["pulled"], summary["errors"]) == (0, 2)
    assert [(r.get("phonon_uuid"), r.get("outcome_at")) for r in p.rows(job)] == [(None, None)] * 2


def test_a_record_whose_own_ref_is_another_rows_is_not_bound_to_the_row_asked_for(make_world, sim):
    p = Pulling(make_world, sim, "200")
    job = p.send_file(2)
    uuid = p.uuid_of()["C-0000"]  # row 1's
    record = json.dumps({"phonon-uuid": uuid, "keys": [{"name": "$flow.key.OutboundRef", "value": f"{job}.2"}],
                         "callDetails": [{"duration": "1000", "connectTime": "2024-01-01T00:00:00"}]})
    before = p.w.store.results.get_result(uuid)  # dispatch's binding of the uuid to row 1
    with pytest.raises(WebhookError) as err:
        p.webhook.handle(record, source="pull", expected_ref=f"{job}.1")
    assert err.value.status == 409
    assert [r.get("outcome_at") for r in p.rows(job)] == [None, None]
    assert p.w.store.results.get_result(uuid) == before  # nothing written


def test_a_job_whose_outcomes_counter_over_counts_is_still_reconciled(make_world, sim):
    # Given a job whose `outcomes` counter says every accepted row has its outcome (it can
    # over-count: a push before its chunk settled is counted, the row may then settle FAILED)
    p = Pulling(make_world, sim, "200")
    job = p.send_file(2)
    p.w.store.jobs.add_to_job(job, outcomes=2)
    from phonon_outbound.records import Job

    assert Job.from_item(p.w.store.jobs.get_job(job)).all_outcomes_in
    # When the reconciler runs, the rows still without an outcome are asked for and filled
    summary = p.run(job)
    assert (summary["asked"], summary["pulled"]) == (2, 2)
    assert all(r["outcome_src"] == "pull" for r in p.rows(job))


def test_a_pull_answer_over_the_cap_is_not_read_and_counted_as_an_error(make_world, sim):
    p = Pulling(make_world, sim, "200")
    job = p.send_file(3)
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(str({**record.__dict__}))

    std = logging.getLogger(logger.name)
    keep = Keep()
    std.addHandler(keep)
    try:  # the simulator's real answer (three records), read by a client capped below its size
        summary = p.reconciler_with(500).run(now=p.w.clock() + AFTER + 1, jobs=[job])
    finally:
        std.removeHandler(keep)
    assert [q["code"] for q in sim.pull_log()] == [200]
    assert (summary["requests"], summary["errors"], summary["pulled"]) == (1, 1, 0)
    assert [r.get("outcome_at") for r in p.rows(job)] == [None] * 3
    logged = [s for s in seen if "answer was not usable" in s]
    assert logged and "larger than 500 bytes" in logged[0]
    # the body is not logged: no uuid, no number, no security-id
    assert all(u not in s for s in seen for u in p.uuid_of().values())
    assert all(DEMO_SECURITY_ID not in s and "9800000" not in s for s in seen)
    # the same answer under the wired cap is read
    assert p.run(job)["pulled"] == 3
