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
    # An explicit column mapping (docs/contact-files.md "Mapping"): header names, matched as
    # headers are (case, punctuation and camelCase alike). It replaces the phone rule / the
    # identifier choice; a name the file does not have rejects the file.
    phone_columns: tuple[str, ...] | None = None
    id_column: str | None = None
    # Resource caps (docs/contact-files.md "Limits"): whole-file rejections for the decompressed
    # size, the header's length and its number of columns; a row rejection for a longer line
    # or cell. Line and cell lengths count characters of the decoded text (bytes for ASCII).
    max_decompressed_bytes: int = 4 * 1024**3
    max_line_bytes: int = 1024**2
    max_columns: int = 16_384  # Excel's own maximum (column XFD)
    max_cell_bytes: int = 128 * 1024
    # A gzip whose decompressed bytes pass this many times its compressed bytes (checked once
    # min_ratio_check_bytes are decompressed) is rejected: a bomb of short lines would otherwise
    # be read for hours and reported as a billion rows. Contact CSVs compress 3-10 times.
    max_compression_ratio: float = 100.0
    min_ratio_check_bytes: int = 16 * 1024**2

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
