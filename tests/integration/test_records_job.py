"""`records.Job` read from job items that ingest, dispatch and the report writer really wrote
(moto built from template.yaml, the bundled simulator)."""

from __future__ import annotations

from dataclasses import fields

from phonon_outbound import wiring
from phonon_outbound.jobs import job_report_keys
from phonon_outbound.records import Job, JobStatus, parse_row_ref

from .conftest import csv_rows

STORE_KEYS = {"pk", "sk"}  # the item's key: `Job.id` is the job id in `pk`


def _check_typed(item: dict) -> Job:
    job = Job.from_item(item)
    unknown = set(item) - {f.name for f in fields(Job)} - STORE_KEYS
    assert unknown == set(), "attributes written to the job item that Job does not type"
    for name in {f.name for f in fields(Job)} & set(item):
        value = getattr(job, name)
        assert (list(value) if name == "notes" else dict(value) if name == "counts" else value) == item[name], name
    return job


def test_the_job_item_ingest_writes_reads_back_attribute_for_attribute(make_harness):
    h = make_harness()
    obj = h.upload("typed.csv", csv_rows(7) + b"X-bad,not-a-phone,Nobody\n")
    h.ingest(obj)

    job = _check_typed(wiring.store().jobs.get_job(obj.job_id))
    assert job.id == obj.job_id and job.key == obj.key and job.bucket == h.bucket
    assert job.status == JobStatus.DISPATCHING and job.ingest_done and not job.completed
    assert (job.total_rows, job.chunks_total, job.chunks_settled) == (8, 1, 0) and not job.all_chunks_settled
    assert job.flow and job.created_at and job.uploaded_at and job.active_shard == "A"
    assert job_report_keys(job) == job_report_keys(wiring.store().jobs.get_job(obj.job_id) or {})

    h.drain()
    done = _check_typed(wiring.store().jobs.get_job(obj.job_id))
    assert done.completed and done.status == JobStatus.COMPLETED and done.all_chunks_settled
    assert done.counts["accepted"] == 7 and done.counts["rejected"] == 1 and done.api_requests == 1


def test_the_correlation_key_ingest_sends_is_a_row_reference_of_its_job(make_harness):
    h = make_harness()
    obj = h.upload("refs.csv", csv_rows(3))
    h.ingest(obj)
    h.drain()
    sent = [k["value"] for call in h.sim.accepted_calls() for k in call.get("keys", []) if k["name"] == "$flow.key.OutboundRef"]
    assert sorted(parse_row_ref(v) for v in sent) == [(obj.job_id, 1), (obj.job_id, 2), (obj.job_id, 3)]
