"""Header names -> column roles (SPEC.md "Contact files": trimmed, case-insensitive, `_` space `-` alike)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["FLOW_KEY_PREFIX", "PHONE_HEADER_HELP", "Columns", "flow_key_name", "map_header", "normalize_header"]

FLOW_KEY_PREFIX = "$flow.key."
_SEPARATORS = re.compile(r"[\s_\-]+")
_PHONE_NAMES = frozenset({"contact-numbers", "contact-number", "phone", "phone-number", "mobile", "mobile-number"})
_NUMBERED_PHONE = re.compile(r"contact-numbers?-?\d+|tel-?(?:[1-9]|10)")
_CLIENT_NAMES = frozenset({"client-identifier"})
_START_NAMES = frozenset({"start-time", "starttime"})
PHONE_HEADER_HELP = ("contact-numbers, contact-number, contact-number-<n>, phone, phone-number, mobile, "
                     "mobile-number or tel1..tel10")


def normalize_header(name: str) -> str:
    return _SEPARATORS.sub("-", name.strip().lower())


def flow_key_name(name: str) -> str:
    """A key name as written, with the ``$flow.key.`` prefix added when missing."""
    name = name.strip()
    if name[: len(FLOW_KEY_PREFIX)].lower() == FLOW_KEY_PREFIX:
        return name
    return FLOW_KEY_PREFIX + name


@dataclass(slots=True)
class Columns:
    """Where each role sits in a CSV header."""

    width: int
    client: int | None = None
    phones: list[tuple[int, str]] = field(default_factory=list)  # (index, header as written)
    start: int | None = None
    keys: list[tuple[int, str]] = field(default_factory=list)  # (index, "$flow.key.<Header>")
    reserved: list[tuple[int, str]] = field(default_factory=list)  # columns dropped: the correlation key
    notes: list[str] = field(default_factory=list)


def map_header(cells: list[str], reserved_key: str) -> Columns:
    cols = Columns(width=len(cells))
    reserved_lower = reserved_key.lower()
    for i, raw in enumerate(cells):
        written = raw.strip()
        if not written:
            cols.notes.append(f"column {i + 1} has no header name: its values are ignored")
            continue
        norm = normalize_header(written)
        if norm in _CLIENT_NAMES:
            if cols.client is None:
                cols.client = i
            else:
                cols.notes.append(f"column {i + 1} ('{written}') repeats client-identifier: ignored")
        elif norm in _PHONE_NAMES or _NUMBERED_PHONE.fullmatch(norm):
            cols.phones.append((i, written))
        elif norm in _START_NAMES:
            if cols.start is None:
                cols.start = i
            else:
                cols.notes.append(f"column {i + 1} ('{written}') repeats start-time: ignored")
        else:
            key = flow_key_name(written)
            if key.lower() == reserved_lower:
                cols.reserved.append((i, written))
                cols.notes.append(f"column '{written}' is ignored: {reserved_key} is reserved for the "
                                  f"pipeline's own tracking reference")
            else:
                cols.keys.append((i, key))
    return cols
