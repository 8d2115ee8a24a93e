"""Every setting of the three functions, read once from the environment into a typed object.

The template's `Globals.Function.Environment` sets these on AWS; the local runner sets the same
names from the same template. Nothing here is read at import time: call `Settings.from_env()`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

DEFAULT_BATCH_SIZE = 500
RECONCILE_PERIOD_S = 300  # the reconciler's schedule in template.yaml: rate(5 minutes)


def fit_batch_size(records_per_minute: int, batch_size: int | None = None) -> int:
    """Calls per request for a rate limit: the requested size (500 by default), but never more
    than one second's worth of the limit. A bigger chunk is a bigger burst, and the limiter can
    only grant whole chunks: at 600/min a 500-call chunk would fit once per minute (0.83 of the
    limit) where 10-call chunks use all of it (docs/rate-limit.md)."""
    return max(1, min(batch_size or DEFAULT_BATCH_SIZE, records_per_minute // 60))


class Settings(BaseModel):
    bucket_name: str = ""
    chunk_queue_url: str = ""
    state_table: str = ""
    results_table: str = ""
    event_bus_name: str = "default"

    api_url: str = ""
    api_connect_timeout_s: float = 3.05
    api_read_timeout_s: float = 30.0

    default_flow_id: str = ""
    flow_secret_prefix: str = "phonon-outbound/flows/"
    webhook_secret_name: str = "phonon-outbound/webhook"
    correlation_key: str = "OutboundRef"

    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=10_000)  # lowered by fit_batch_size
    records_per_minute: int = Field(30_000, ge=1)
    requests_per_minute: int = Field(0, ge=0)  # 0 = no request cap
    rate_jitter_allowance_s: float = Field(1.0, ge=0)

    time_zone: str = "Asia/Kolkata"
    default_region: str = "IN"
    max_file_bytes: int = 2 * 1024**3
    dedupe_window_hours: float = Field(24.0, ge=0)

    max_receive_count: int = Field(8, ge=1)
    retry_base_s: float = Field(5.0, ge=0)
    retry_max_s: float = Field(900.0, ge=0)
    breaker_open_s: float = Field(60.0, ge=1)
    chunk_lease_s: float = Field(120.0, ge=1)
    ingest_time_margin_s: float = Field(60.0, ge=0)
    dispatch_max_wait_s: float = Field(20.0, ge=0)
    dispatch_parallelism: int = Field(4, ge=1, le=32)
    # How long the state table keeps personal data (jobs, row outcomes, key index): every such
    # item carries `expires_at`, and the table's TTL deletes it (docs/design.md, "Retention").
    data_retention_days: float = Field(90.0, gt=0)

    @property
    def retention_s(self) -> float:
        return self.data_retention_days * 86400.0

    # dispatch: a job whose item has not changed for this long is stale (watchdog.py's StaleJobs)
    stale_job_minutes: float = Field(60.0, gt=0)

    # contacts: resource caps on a contact file (docs/contact-files.md "Limits")
    max_decompressed_bytes: int = Field(4 * 1024**3, ge=1)
    max_line_bytes: int = Field(1024**2, ge=1024)
    max_columns: int = Field(16_384, ge=1)
    max_cell_bytes: int = Field(128 * 1024, ge=64)
    max_compression_ratio: float = Field(100.0, ge=1)  # gzip: decompressed / compressed bytes

    # suppression list and frequency cap (docs/suppression.md); no table = suppression off
    suppression_table: str = ""
    suppression_salt_secret: str = ""  # Secrets Manager secret (name or ARN) holding the hashing salt
    frequency_caps: str = ""  # e.g. "*=3/24h,AbCd1234=1/7d": at most N contacts per number per period, per flow
    opt_out_dtmf: str = Field("", pattern=r"^[0-9*#]?$")  # a digit pressed in the call (flow-end webhook's DTMF) that means "stop calling me"
    opt_out_key: str = ""  # a flow variable whose true/yes/1 value in the push means the same
    opt_out_scope: str = Field("all", pattern="^(all|flow)$")  # an opt-out holds for every flow, or its own

    @field_validator("frequency_caps")
    @classmethod
    def _caps(cls, v: str) -> str:
        from .suppression import parse_caps  # noqa: PLC0415 - kept in this hunk

        parse_caps(v)
        return v
    # events out (docs/events-out.md): `Outbound Call Completed` per matched flow-end push
    publish_call_events: bool = True
    # operating a campaign (docs/operating.md, issue 12)
    report_queue_url: str = ""  # the report function's queue ("" = reports written in-line)
    express_queue_url: str = ""  # the express lane for small jobs ("" = one lane)
    express_max_rows: int = Field(2_000, ge=0)  # a job of at most this many rows takes the express lane
    report_debounce_s: float = Field(60.0, ge=0)  # at most one report rewrite per job per this many seconds
    report_final_wait_s: float = Field(3_600.0, ge=0)  # the final write at the latest this long after settling
    pull_api_url: str = ""  # Phonon's account-specific Pull API v2 URL ("" = reconciler off)
    reconcile_after_s: float = Field(900.0, ge=0)  # an accepted call without an outcome this old is pulled
    reconcile_batch: int = Field(200, ge=1, le=200)  # phonon-uuids / request-ids per pull request
    pause_poll_s: float = Field(30.0, ge=1)  # a paused job's chunk comes back this often

    @property
    def final_write_after_s(self) -> float:
        """How long after a job's first report write its final write is due at the latest: the
        configured wait, but with the reconciler on never before it has had two runs at the
        last chunk's calls (`reconcile_after_s` + two schedule periods). The reconciler only
        asks for jobs whose report is not final yet, so with a longer `reconcile_after_s` than
        the wait it would otherwise never ask for anything."""
        if not self.pull_api_url:
            return self.report_final_wait_s
        return max(self.report_final_wait_s, self.reconcile_after_s + 2 * RECONCILE_PERIOD_S)

    @field_validator("default_flow_id", "api_url", "bucket_name", mode="before")
    @classmethod
    def _strip(cls, v: object) -> object:
        return v.strip() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _fit_batch(self) -> Settings:
        self.batch_size = fit_batch_size(self.records_per_minute, self.batch_size)
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}  # text from the environment; pydantic converts and checks it
        for name in cls.model_fields:
            raw = env.get(name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        return cls(**values)

    def env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings (for the local runner)."""
        return {name.upper(): str(value) for name, value in self.model_dump().items()}

    # calling windows (docs/calling-windows.md): off unless CALLING_WINDOW or a flow's entry in
    # CALLING_WINDOWS (JSON) is set; read and checked by windows.rules_for, never here, so a bad
    # setting holds the sending (fail closed) instead of crashing every handler.
    calling_window: str = ""  # e.g. "Mon-Sat 09:00-21:00; except 2026-12-25"
    calling_window_tz: str = ""  # the flow's zone when a number's does not settle it ("" = time_zone)
    calling_window_policy: str = "reject"  # a start-time outside the window: reject | defer
    calling_window_margin_min: float = 0.0  # no call starts this close to a closing
    calling_window_by_number: bool = True  # the recipient's zone from the number where one fits
    calling_windows: str = ""  # per flow: {"<flow-id>": {"window", "tz", "policy", "margin_min"}}


@lru_cache(maxsize=1)
def current() -> Settings:
    """The settings of this Lambda execution environment (cached; `current.cache_clear()` in tests)."""
    return Settings.from_env()
