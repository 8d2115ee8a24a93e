"""Issue 12 probes (QA): the reconciler against the simulator's pull API (the world of
test_reconcile.py): a pull meeting a row whose push came, a pulled record contradicting a
pushed uuid, request-ids that bring back more than 200 calls."""

from __future__ import annotations

import json

import pytest

from .test_reconcile import Pulling, clock, make_world, sim  # noqa: F401


def test_a_pull_that_brings_back_a_row_whose_push_came_counts_each_outcome_once(make_world, sim):  # noqa: F811
    p = Pulling(make_world, sim, "202")
    job = p.send_file(3)
    uuids = p.uuid_of()
    # row 2's push arrived; rows 1 and 3's were lost
    body = json.dumps({"phonon-uuid": uuids["C-0001"], "keys": [{"name": "$flow.key.OutboundRef",
                                                                  "value": f"{job}.2"}],
                       "callDetails": [{"hangupCause": "NO_ANSWER"}]})
    assert p.webhook.handle(body)["matched"] is True
    summary = p.run(job)
    assert len(sim.pull_log()) == 1 and all(q["request-ids"] + q["phonon-uuids"] <= 200 for q in sim.pull_log())
    assert summary["pulled"] == 2 and summary["errors"] == 0
    rows = p.rows(job)
    assert [r["outcome_src"] for r in rows] == ["pull", "webhook", "pull"]
    assert rows[1]["outcome"] == "NO_ANSWER"  # the push's, not overwritten by the pull
    assert p.w.store.jobs.get_job(job)["outcomes"] == 3
    assert p.run(job)["requests"] == 0


def test_a_row_bound_by_a_push_to_another_uuid_is_not_asked_for_and_its_pulled_record_is_skipped(make_world, sim):  # noqa: F811
    p = Pulling(make_world, sim, "202")
    job = p.send_file(2)
    # a push bound row 1 to another uuid than Phonon's pull API will give for it
    body = json.dumps({"phonon-uuid": "other-uuid", "keys": [{"name": "$flow.key.OutboundRef",
                                                              "value": f"{job}.1"}], "callDetails": []})
    p.webhook.handle(body)
    summary = p.run(job)
    assert (summary["pulled"], summary["errors"]) == (1, 0)  # row 1 has an outcome: not asked for, its record skipped
    rows = p.rows(job)
    assert rows[0]["phonon_uuid"] == "other-uuid" and rows[1]["outcome_src"] == "pull"


@pytest.mark.parametrize(("n", "batch_size", "expected"), [(201, 500, [(1, 201)]), (401, 100, [(2, 200), (2, 200), (1, 1)])])
def test_request_ids_bringing_back_more_than_200_calls_go_alone_and_never_more_than_200_ids(
        make_world, sim, n, batch_size, expected):  # noqa: F811
    p = Pulling(make_world, sim, "202", batch_size=batch_size)
    job = p.send_file(n)
    summary = p.run(job)
    assert [(q["request-ids"], q["records"]) for q in sim.pull_log()] == expected
    assert summary["pulled"] == n and all(r.get("outcome_src") == "pull" for r in p.rows(job))
