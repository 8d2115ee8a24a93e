"""Reading contact files (CSV, JSON, JSON Lines, gzip of each) into validated API calls.

    from phonon_outbound.contacts import open_contacts, ParseOptions
    cf = open_contacts(stream, "incoming/camp1/leads.csv.gz", ParseOptions(), stream_factory=reopen)
    for r in cf.rows(start_row=checkpoint): ...   # ValidRow | RejectedRow, one per data row

See reader.py for the two-pass design and SPEC.md "Contact files" for the rules.
"""

from .model import FileRejected, ParseOptions, RejectedRow, ValidRow
from .phones import PhoneNormalizer
from .reader import ContactFile, open_contacts
from .starttime import StartTimeParser

__all__ = [
    "ContactFile",
    "FileRejected",
    "ParseOptions",
    "PhoneNormalizer",
    "RejectedRow",
    "StartTimeParser",
    "ValidRow",
    "open_contacts",
]
