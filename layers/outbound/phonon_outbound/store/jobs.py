"""The jobs repository: job META items, the KEY# index, report-name claims, S3 object claims,
the finalize lease, cancellation and control (pause / resume of a job or a flow; control.py).

A flow's pause and rate cap live in its own item, `FLOWCTL#<flow>` / `-` (attributes
`paused_reason`, `rate_cap`; no `expires_at`: they last until removed, whatever the retention).
A job's rate cap is its META item's `rate_cap` (calls per minute)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from .common import (
    ACTIVE_INDEX,
    ACTIVE_SHARD,
    AWAITING,
    FINALIZE_LEASE_S,
    MAX_TEXT_CHARS,
    OBJECT,
    Control,
    FlowControl,
    Retention,
    bound_job_attrs,
    clip,
    conditional,
    conditional_failed,
    dec,
    flow_control_pk,
    flow_pause_text,
    job_pk,
    key_pk,
    paged_query,
    plain,
    read_cap,
    set_update,
)


def upload_order(items: list[dict], report_name: Callable[[str], str]) -> list[dict]:
    """A key's index items (job, version, uploaded_at), oldest upload first: the last is the
    key's newest job (what `--key`, a `cancel/` marker and a control event's `key` name).

    `uploaded_at` alone can tie: on AWS it comes from EventBridge's `time`, whole seconds, so
    two uploads within one second share it, and the order would be the Query's (`JOB#<id>`,
    a hash: arbitrary). A tie is broken by the job's report name (`report_csv_key`,
    `reports/<key>.<stamp>.results.csv`; `report_name(job)` reads it from the job item, only
    for tied items): ingest's `_create_job` claims the stamp under a condition, unique per key,
    the upload time first and the next free millisecond when it is taken, so of two uploads
    with one `uploaded_at` the one whose job was created later has the later stamp, and its
    name sorts later (one key, one prefix, a fixed-width stamp). Not `created_at` (whole
    seconds of the ingest's clock: ties again) nor the S3 version id (opaque: S3 gives it no
    order). The event's `sequencer` would order uploads exactly, but no item keeps it; within
    one second the stamp follows the order in which the uploads were ingested. Last, the job
    id, so the order is the same on every read."""
    seen = Counter(str(i.get("uploaded_at") or "") for i in items)

    def order(item: dict) -> tuple[str, str, str]:
        at, job = str(item.get("uploaded_at") or ""), str(item.get("job") or "")
        return at, (report_name(job) if seen[at] > 1 and job else ""), job
    return sorted(items, key=order)


class JobsRepository(Protocol):
    def claim_object(self, identity: str, job: str, lease_s: float, now: float | None = None) -> str:
        """Claim an S3 object version for ingest: "new", "resume" (the holder's lease ran out,
        not done) or "duplicate" (ingested or being ingested)."""
        ...

    def renew_object(self, identity: str, lease_s: float, done: bool = False) -> None: ...

    def put_job(self, job: str, attrs: dict) -> None: ...

    def create_job(self, job: str, attrs: dict) -> bool: ...

    def get_job(self, job: str) -> dict | None: ...

    def update_job(self, job: str, **attrs: Any) -> dict: ...

    def add_to_job(self, job: str, **counters: int) -> dict: ...

    def cancel_job(self, job: str, reason: str) -> bool: ...

    def pause_job(self, job: str, reason: str) -> bool:
        """Set the job's `paused_reason` (True); False when it is unknown, completed or paused already."""
        ...

    def resume_job(self, job: str) -> bool:
        """Remove the job's `paused_reason` (True); False when it was not paused."""
        ...

    def pause_flow(self, flow: str, reason: str) -> bool:
        """Pause every job's chunks of this flow (True); False when the flow is paused already."""
        ...

    def resume_flow(self, flow: str) -> bool:
        """End the flow's pause (True); False when it was not paused."""
        ...

    def flow_paused(self, flow: str) -> str:
        """The flow's pause reason ("" = not paused)."""
        ...

    def set_job_cap(self, job: str, per_minute: int | None) -> bool:
        """Set the job's rate cap (calls per minute; None removes it): True when that changed
        it, False when it was so already or the job is unknown."""
        ...

    def set_flow_cap(self, flow: str, per_minute: int | None) -> bool:
        """Set the flow's rate cap (every job of the flow together; None removes it): True when
        that changed it, False when it was so already."""
        ...

    def flow_control(self, flow: str) -> FlowControl:
        """The flow's pause reason and rate cap, in one consistent read (none for "")."""
        ...

    def control(self, job: str, flow: str = "") -> Control:
        """What dispatch must obey for a job's chunks (`Control`): cancelled, paused when the job
        is paused or its flow is (a flow's pause reads "flow <id> paused: <reason>"), and the
        job's and the flow's rate caps. Two consistent reads at most (the flow's only when the
        job is neither cancelled nor paused itself)."""
        ...

    def index_job(self, bucket: str, key: str, job: str, attrs: dict) -> None: ...

    def jobs_for_key(self, bucket: str, key: str) -> list[dict]:
        """The index items of the key's jobs (job, version, uploaded_at), oldest upload first,
        a tie broken as `upload_order` says (the last item is the key's newest job)."""
        ...

    def claim_report_name(self, bucket: str, key: str, stamp: str, job: str) -> bool: ...

    def claim_finalize(self, job: str, lease_s: float = FINALIZE_LEASE_S, now: float | None = None,
                       rewrite: bool = False) -> bool: ...

    def release_finalize(self, job: str) -> None: ...

    def stale_jobs(self, updated_before: int) -> Iterator[tuple[str, int]]:
        """(job, updated_at) of every job not completed whose last write is before the cutoff,
        oldest first."""
        ...

    # ---------------------------------------------------------------- the report function's bookkeeping
    def awaiting_outcomes(self) -> Iterator[str]:
        """Ids of the jobs whose report is written but not final (completed, `report_final`
        false), from their `AWAITING#` index items (one Query; no Scan)."""
        ...

    def note_awaiting(self, job: str, awaiting: bool) -> None:
        """Put the job on the awaiting-outcomes index (its report written, not final) or take it off."""
        ...

    def claim_report_slot(self, job: str, previous: int, at: int) -> bool:
        """Book the job's next report write at `at` (epoch s) if `report_next_at` is still
        `previous` (0: never booked) and the job is completed: the debounce's one winner."""
        ...


class DynamoJobs:
    def __init__(self, table: Any, retention: Retention):
        self.table = table
        self.retention = retention

    # ---------------------------------------------------------------- S3 object claims
    def claim_object(self, identity: str, job: str, lease_s: float, now: float | None = None) -> str:
        now = self.retention.now() if now is None else now
        key = {"pk": OBJECT + identity, "sk": "-"}
        try:
            self.table.put_item(
                Item={**key, "job": job, "lease_until": dec(now + lease_s), "done": False,
                      "expires_at": self.retention.expiry(now)},
                ConditionExpression=Attr("pk").not_exists(),
            )
            return "new"
        except ClientError as err:
            if not conditional_failed(err):
                raise
        try:
            self.table.update_item(
                Key=key,
                UpdateExpression="SET lease_until = :l",
                ConditionExpression="done = :f AND lease_until < :now",
                ExpressionAttributeValues={":l": dec(now + lease_s), ":f": False, ":now": dec(now)},
            )
            return "resume"
        except ClientError as err:
            if not conditional_failed(err):
                raise
            return "duplicate"

    def renew_object(self, identity: str, lease_s: float, done: bool = False) -> None:
        self.table.update_item(
            Key={"pk": OBJECT + identity, "sk": "-"},
            UpdateExpression="SET lease_until = :l, done = :d",
            ExpressionAttributeValues={":l": dec(self.retention.now() + lease_s), ":d": done},
        )

    # ---------------------------------------------------------------- file jobs
    def _stamp(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {**bound_job_attrs(attrs), "updated_at": int(self.retention.now())}

    def put_job(self, job: str, attrs: dict) -> None:
        """Write a job item as given (bounded; `updated_at` now unless given). Ingest creates
        jobs with `create_job`, which also puts them on the active-jobs index."""
        item = {"pk": job_pk(job), "sk": "META", "updated_at": int(self.retention.now()), **bound_job_attrs(attrs),
                "expires_at": self.retention.expiry()}
        self.table.put_item(Item=item)

    def create_job(self, job: str, attrs: dict) -> bool:
        """The job's META item, written once (False: it exists already)."""
        item = {"pk": job_pk(job), "sk": "META", **self._stamp(attrs), "expires_at": self.retention.expiry(),
                "active_shard": ACTIVE_SHARD}
        return conditional(self.table.put_item, Item=item, ConditionExpression=Attr("pk").not_exists())

    def get_job(self, job: str) -> dict | None:
        item = self.table.get_item(Key={"pk": job_pk(job), "sk": "META"}, ConsistentRead=True).get("Item")
        return plain(item) if item and self.retention.live(item) else None

    def update_job(self, job: str, **attrs: Any) -> dict:
        """SET the attributes (and `updated_at`); a job set `completed` leaves the active-jobs index."""
        update = set_update(self._stamp(attrs))
        if attrs.get("completed"):
            update["UpdateExpression"] += " REMOVE active_shard"
        out = self.table.update_item(Key={"pk": job_pk(job), "sk": "META"}, ReturnValues="ALL_NEW", **update)
        return plain(out["Attributes"])

    def add_to_job(self, job: str, **counters: int) -> dict:
        names = {f"#{k}": k for k in counters}
        values = {f":{k}": v for k, v in counters.items()}
        out = self.table.update_item(
            Key={"pk": job_pk(job), "sk": "META"},
            UpdateExpression="SET updated_at = :now ADD " + ", ".join(f"#{k} :{k}" for k in counters),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={**values, ":now": int(self.retention.now())},
            ReturnValues="ALL_NEW",
        )
        return plain(out["Attributes"])

    def cancel_job(self, job: str, reason: str) -> bool:
        """Mark a job cancelled (its input was deleted, or an operator cancelled it). Dispatch
        sends nothing more for it; its unsent rows end CANCELLED with this reason. Does nothing
        (False) to a job that is completed, already cancelled, or unknown."""
        return conditional(
            self.table.update_item,
            Key={"pk": job_pk(job), "sk": "META"},
            UpdateExpression="SET cancelled_reason = :r, updated_at = :u",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(cancelled_reason) "
                                "AND (attribute_not_exists(completed) OR completed = :f)",
            ExpressionAttributeValues={":r": clip(reason, MAX_TEXT_CHARS), ":u": int(self.retention.now()), ":f": False},
        )

    # ---------------------------------------------------------------- control (control.py)
    def pause_job(self, job: str, reason: str) -> bool:
        return conditional(
            self.table.update_item,
            Key={"pk": job_pk(job), "sk": "META"},
            UpdateExpression="SET paused_reason = :r, paused_at = :u, updated_at = :u",
            ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(paused_reason) OR paused_reason = :e) "
                                "AND (attribute_not_exists(completed) OR completed = :f)",
            ExpressionAttributeValues={":r": clip(reason or "paused", MAX_TEXT_CHARS), ":u": int(self.retention.now()),
                                       ":f": False, ":e": ""},
        )

    def resume_job(self, job: str) -> bool:
        return conditional(
            self.table.update_item,
            Key={"pk": job_pk(job), "sk": "META"},
            UpdateExpression="REMOVE paused_reason, paused_at SET updated_at = :u",
            ConditionExpression="attribute_exists(pk) AND attribute_exists(paused_reason) AND paused_reason <> :e",
            ExpressionAttributeValues={":u": int(self.retention.now()), ":e": ""},
        )

    def pause_flow(self, flow: str, reason: str) -> bool:
        return conditional(
            self.table.update_item,
            Key={"pk": flow_control_pk(flow), "sk": "-"},
            UpdateExpression="SET paused_reason = :r, paused_at = :u",
            ConditionExpression="attribute_not_exists(paused_reason) OR paused_reason = :e",
            ExpressionAttributeValues={":r": clip(reason or "paused", MAX_TEXT_CHARS), ":u": int(self.retention.now()),
                                       ":e": ""},
        )

    def resume_flow(self, flow: str) -> bool:
        return conditional(
            self.table.update_item,
            Key={"pk": flow_control_pk(flow), "sk": "-"},
            UpdateExpression="REMOVE paused_reason, paused_at",
            ConditionExpression="attribute_exists(paused_reason) AND paused_reason <> :e",
            ExpressionAttributeValues={":e": ""},
        )

    def flow_paused(self, flow: str) -> str:
        if not flow:
            return ""
        item = self.table.get_item(Key={"pk": flow_control_pk(flow), "sk": "-"}, ConsistentRead=True,
                                   ProjectionExpression="paused_reason").get("Item") or {}
        return str(item.get("paused_reason") or "")

    def set_job_cap(self, job: str, per_minute: int | None) -> bool:
        return self._set_cap({"pk": job_pk(job), "sk": "META"}, per_minute, job_item=True)

    def set_flow_cap(self, flow: str, per_minute: int | None) -> bool:
        return self._set_cap({"pk": flow_control_pk(flow), "sk": "-"}, per_minute, job_item=False)

    def _set_cap(self, key: dict, per_minute: int | None, job_item: bool) -> bool:
        """Set (or with None remove) `rate_cap` on a job item (which must exist; its `updated_at`
        moves) or a flow's control item (created when needed). False when nothing changed."""
        values: dict[str, Any] = {":u": int(self.retention.now())} if job_item else {}
        exists = "attribute_exists(pk) AND " if job_item else ""
        if per_minute is None:
            update = "REMOVE rate_cap" + (" SET updated_at = :u" if job_item else "")
            condition = exists + "attribute_exists(rate_cap)"
        else:
            update = "SET rate_cap = :c" + (", updated_at = :u" if job_item else "")
            condition = exists + "(attribute_not_exists(rate_cap) OR rate_cap <> :c)"
            values[":c"] = int(per_minute)
        return conditional(self.table.update_item, Key=key, UpdateExpression=update, ConditionExpression=condition,
                           **({"ExpressionAttributeValues": values} if values else {}))

    def flow_control(self, flow: str) -> FlowControl:
        if not flow:
            return FlowControl()
        item = self.table.get_item(Key={"pk": flow_control_pk(flow), "sk": "-"}, ConsistentRead=True,
                                   ProjectionExpression="paused_reason, rate_cap").get("Item") or {}
        return FlowControl(str(item.get("paused_reason") or ""), read_cap(item.get("rate_cap")))

    def control(self, job: str, flow: str = "") -> Control:
        item = self.table.get_item(Key={"pk": job_pk(job), "sk": "META"}, ConsistentRead=True,
                                   ProjectionExpression="cancelled_reason, paused_reason, rate_cap").get("Item") or {}
        cancelled, paused = str(item.get("cancelled_reason") or ""), str(item.get("paused_reason") or "")
        job_cap = read_cap(item.get("rate_cap"))
        if cancelled or paused:
            return Control(cancelled, paused, job_cap)
        flow_paused, flow_cap = self.flow_control(flow)
        return Control("", flow_pause_text(flow, flow_paused), job_cap, flow_cap)

    # ---------------------------------------------------------------- key index
    def index_job(self, bucket: str, key: str, job: str, attrs: dict) -> None:
        """Remember that `job` reads this key (idempotent put)."""
        self.table.put_item(Item={"pk": key_pk(bucket, key), "sk": f"JOB#{job}", "job": job, **attrs,
                                  "expires_at": self.retention.expiry()})

    def jobs_for_key(self, bucket: str, key: str) -> list[dict]:
        """The index items of the key's jobs (job, version, uploaded_at), oldest upload first
        (`upload_order`: a tie costs one read of each tied job's report name)."""
        pages = paged_query(self.table, ConsistentRead=True,
                            KeyConditionExpression=Key("pk").eq(key_pk(bucket, key)) & Key("sk").begins_with("JOB#"))
        items = [plain(i) for i in pages if self.retention.live(i)]
        return upload_order(items, self._report_name)

    def _report_name(self, job: str) -> str:
        item = self.table.get_item(Key={"pk": job_pk(job), "sk": "META"}, ConsistentRead=True,
                                   ProjectionExpression="report_csv_key").get("Item") or {}
        return str(item.get("report_csv_key") or "")

    def claim_report_name(self, bucket: str, key: str, stamp: str, job: str) -> bool:
        """Take a report time stamp for this key (True also when `job` holds it already)."""
        return conditional(
            self.table.put_item,
            Item={"pk": key_pk(bucket, key), "sk": f"REPORT#{stamp}", "job": job, "expires_at": self.retention.expiry()},
            ConditionExpression="attribute_not_exists(pk) OR job = :j",
            ExpressionAttributeValues={":j": job},
        )

    # ---------------------------------------------------------------- finalize lease
    def claim_finalize(self, job: str, lease_s: float = FINALIZE_LEASE_S, now: float | None = None,
                       rewrite: bool = False) -> bool:
        """One caller at a time wins the right to write the job's report, for `lease_s` seconds.

        A lease, not a flag: a writer killed half-way (a Lambda time-out) leaves `finalizing`
        behind, and with a flag no report would ever be written. Once the lease has run out the
        next caller (a redelivered chunk, the stale-job watchdog) takes it over. A completed
        job is never claimed again for its first write, so its report and completion event are
        not repeated; `rewrite` claims it for a later write (outcomes arrived), so two writers
        never overlap and an older read can never land after a newer one. The lease is longer
        than any function's time-out, so a writer never outlives it."""
        now = self.retention.now() if now is None else now
        first = "" if rewrite else " AND (attribute_not_exists(completed) OR completed = :f)"
        return conditional(
            self.table.update_item,
            Key={"pk": job_pk(job), "sk": "META"},
            UpdateExpression="SET finalizing = :until, updated_at = :now",
            ConditionExpression="attribute_exists(pk) "
                                "AND (attribute_not_exists(finalizing) OR finalizing < :now)" + first,
            ExpressionAttributeValues={":until": int(now + lease_s), ":now": int(now),
                                       **({} if rewrite else {":f": False})},
        )

    def release_finalize(self, job: str) -> None:
        self.table.update_item(Key={"pk": job_pk(job), "sk": "META"}, UpdateExpression="REMOVE finalizing")

    # ---------------------------------------------------------------- the watchdog's view
    def stale_jobs(self, updated_before: int) -> Iterator[tuple[str, int]]:
        for item in paged_query(
                self.table, IndexName=ACTIVE_INDEX, ProjectionExpression="pk, sk, updated_at",
                KeyConditionExpression=Key("active_shard").eq(ACTIVE_SHARD) & Key("updated_at").lt(updated_before)):
            pk = str(item.get("pk", ""))
            if item.get("sk") == "META" and pk.startswith("JOB#"):  # only job items carry these; be safe anyway
                yield pk[len("JOB#"):], int(item.get("updated_at", 0))

    # ---------------------------------------------------------------- the report function's bookkeeping
    def awaiting_outcomes(self) -> Iterator[str]:
        for item in paged_query(self.table, ConsistentRead=True, ProjectionExpression="job",
                                KeyConditionExpression=Key("pk").eq(AWAITING) & Key("sk").begins_with("JOB#")):
            yield str(item["job"])

    def note_awaiting(self, job: str, awaiting: bool) -> None:
        key = {"pk": AWAITING, "sk": f"JOB#{job}"}
        if awaiting:
            self.table.put_item(Item={**key, "job": job, "expires_at": self.retention.expiry()})
        else:
            self.table.delete_item(Key=key)

    def claim_report_slot(self, job: str, previous: int, at: int) -> bool:
        first = "attribute_not_exists(report_next_at) OR report_next_at = :zero" if not previous else "report_next_at = :p"
        return conditional(
            self.table.update_item, Key={"pk": job_pk(job), "sk": "META"},
            UpdateExpression="SET report_next_at = :at",
            ConditionExpression=f"attribute_exists(pk) AND completed = :t AND ({first})",
            ExpressionAttributeValues={":at": int(at), ":t": True,
                                       **({":p": int(previous)} if previous else {":zero": 0})})
