"""Reading contact files (CSV, JSON, JSON Lines, gzip of each) into validated API calls.

    from phonon_outbound.contacts import open_contacts, ParseOptions
    cf = open_contacts(stream, "incoming/camp1/leads.csv.gz", ParseOptions(), stream_factory=reopen)
    for r in cf.rows(start_row=checkpoint): ...   # ValidRow | RejectedRow, one per data row

See reader.py for the two-pass design and docs/contact-files.md for the rules.
"""

from .mapping import mapping_from_metadata, parse_options
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
    "mapping_from_metadata",
    "open_contacts",
    "parse_options",
]
