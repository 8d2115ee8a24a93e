"""The shapes contacts hands to the ingest service (docs/design.md "contacts -> ingest")."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["FileRejected", "ParseOptions", "RejectedRow", "ValidRow"]


@dataclass(frozen=True, slots=True)
class ParseOptions:
    default_region: str = "IN"
    time_zone: str = "Asia/Kolkata"
    max_bytes: int = 2 * 1024**3
    correlation_key: str = "OutboundRef"
    now: datetime | None = None  # aware datetime for tests; None = the real clock

    @property
    def reserved_key(self) -> str:
        """The flow variable the pipeline adds itself, e.g. ``$flow.key.OutboundRef``."""
        return "$flow.key." + self.correlation_key


@dataclass(slots=True)
class ValidRow:
    row: int
    client_id: str
    call: dict  # "client-identifier", ["start-time"], "contact-numbers", "keys" -- no security-id
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RejectedRow:
    row: int
    client_id: str
    reason: str


class FileRejected(Exception):
    """The whole file is rejected: nothing from it may be sent. ``reason`` is for the report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
