"""The one vocabulary of a row's final status (docs/contract.md, "Statuses").

Every row of every input ends in exactly one of these. `StrEnum`, so a member is the plain
string it names wherever it is written (DynamoDB, reports, JSON) and compares equal to it.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    ACCEPTED = "ACCEPTED"      # Phonon accepted it (request-id; phonon-uuid once known)
    REJECTED = "REJECTED"      # failed validation; never sent
    DUPLICATE = "DUPLICATE"    # the same call was already accepted within the dedupe window
    FAILED = "FAILED"          # Phonon refused it for good, or retries ran out
    CANCELLED = "CANCELLED"    # not sent: its job was cancelled (or its file deleted / the run interrupted)
    SUPPRESSED = "SUPPRESSED"  # not sent: suppression list or frequency cap


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
