"""Header names -> column roles (docs/contact-files.md "Headers").

Every header is first reduced to its *words* (:func:`header_words`): trimmed, camelCase split
(``MobilePhone`` -> ``mobile phone``), lower-cased, ``#`` read as "no", every other character
that is not a letter or digit (``.`` ``:`` ``(`` ``)`` ``/`` ``_`` ``-`` spaces ...) a word
break, digits split from letters (``tel1`` -> ``tel 1``) and run-together number words split
(``MobileNo`` -> ``mobile no``). Roles are decided on those words, so ``Mob. No.``,
``mob_no``, ``MOB NO`` and ``MobNo`` are the same header.

Phone columns are found by a rule, not a list of spellings (the exports of HubSpot,
Salesforce, Zoho, Pipedrive, Freshsales and everyday spreadsheets name them ``Phone Number``,
``Mobile Phone Number``, ``MobilePhone``, ``HomePhone``, ``Asst. Phone``, ``Phone - Work``,
``Work Number``, ``Mob. No.``, ``Contact No``, ``Cell #``, ``WhatsApp Number``,
``Alternate Mobile`` ...): a header is a phone column when

1. its words contain a *phone word* (``phone``, ``mobile``, ``mob``, ``cell``, ``tel``,
   ``telephone``, ``whatsapp``, ``landline`` ...), or ``contact`` / ``ph`` followed by a
   number word (``no``, ``number``, ``num``, ``nr``), or a line qualifier followed by a
   number word (``work number``, ``home no``, ``other number`` as Freshworks names them), and
2. none of its words makes it something *about* a phone rather than the number itself:
   its type or label (``Phone Type``), a flag or consent (``Phone Verified``,
   ``Mobile Opt Out``, ``Do Not Call``, ``DND Status``), a part of a number (``Country Code``,
   ``Extension``), another person's number (``Owner Phone``, ``Agent Mobile``), a record id
   (``Phone ID``), a date, count or source, or another channel (``Fax``, ``SMS``, ``Email``).

Record-id columns (used as client-identifier when the file has no ``client-identifier``
column and exactly one of them): ``Id``, and ``Record``/``Contact``/``Lead``/``Customer``/
``Client``/``Person`` followed by ``Id`` -- Salesforce's ``Id``, HubSpot's and Zoho's
``Record ID``, Pipedrive's ``Person - ID``. ``AccountId``, ``OwnerId``, ``CreatedById`` are
other records' ids, not this one's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "FLOW_KEY_PREFIX", "PHONE_HEADER_HELP", "Columns", "MappingError", "flow_key_name", "header_words",
    "is_phone_header", "is_record_id_header", "map_header", "shown_header", "summarize_columns",
]

FLOW_KEY_PREFIX = "$flow.key."
PHONE_HEADER_HELP = ("phone, mobile, contact number, tel1..tel10 or any header naming a phone line such as "
                     "'Mobile Phone Number', 'Phone - Work', 'Mob. No.', 'WhatsApp Number' "
                     "(docs/contact-files.md)")

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[\W_]+")
_WHATSAPP = re.compile(r"whats[\s_\-]*app", re.IGNORECASE)  # one word, not camelCase "Whats App"
_LETTER_DIGIT = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")
_NUMBER_WORDS = frozenset({"no", "nos", "num", "number", "numbers", "nr", "nbr"})
_RUN_TOGETHER = re.compile(r"(phone|mobile|mob|cell|tel|telephone|whatsapp|contact|ph|landline)"
                           r"(no|nos|num|number|numbers|nr|nbr)")
_PHONE_WORDS = frozenset({
    "phone", "phones", "telephone", "tel", "mobile", "mobiles", "mob", "cell", "cellphone", "cellular",
    "whatsapp", "landline", "smartphone", "telefon", "telefono", "telefone", "celular",
})
# "<qualifier> number" names a phone line in Freshworks' and others' exports ("Work Number").
_LINE_QUALIFIERS = frozenset({"work", "home", "office", "business", "personal", "other", "alternate",
                              "alternative", "alt", "primary", "secondary", "residence", "direct", "private",
                              "main"})
_NOT_A_NUMBER = frozenset({
    # what kind of number, or which one to prefer: a label, not the number
    "type", "types", "kind", "label", "format", "preferred",
    # flags, checks, consent and do-not-call lists (Salesforce DoNotCall, HasOptedOutOfFax, DND)
    "verified", "verification", "valid", "validated", "validity", "status", "is", "has", "flag",
    "opt", "optin", "optout", "opted", "out", "consent", "dnc", "dnd", "call", "calls", "called",
    "blocked", "unsubscribed", "bounced",
    # a part of a number
    "country", "code", "ext", "extension", "prefix", "area", "dial", "isd", "std",
    # another person's number or another record's id
    "owner", "agent", "executive", "rep", "salesperson", "manager", "emergency", "id",
    # facts about the number or the device, not the number
    "name", "date", "time", "count", "source", "carrier", "operator", "provider", "network", "app",
    "device", "model", "brand", "os", "plan", "bill", "billing", "recharge", "banking", "enabled", "active",
    # other channels
    "fax", "sms", "email", "mail", "e",
})
_RECORD_ENTITIES = frozenset({"record", "contact", "lead", "customer", "client", "person"})
_NUMBERED = re.compile(r"\d{1,3}")
_SHOWN_MAX = 40
_DATA_LIKE = re.compile(r"[+(]?\d[\d ()\-.]{3,}\d|\d+(?:[.,]\d+)?[eE]\+?\d+|.*\d{5,}.*|.*@.*")
MAX_LISTED = 10  # columns named in one aggregated note


class MappingError(Exception):
    """An explicit column mapping names a column the file does not have."""


def header_words(name: str) -> tuple[str, ...]:
    """The words of a header name, as the role rules see them (see the module docstring)."""
    s = _CAMEL.sub(" ", _WHATSAPP.sub("whatsapp", name.strip())).lower().replace("#", " no ")
    s = _LETTER_DIGIT.sub(" ", _NON_WORD.sub(" ", s))
    words: list[str] = []
    for w in s.split():
        m = _RUN_TOGETHER.fullmatch(w)
        if m is not None:
            words.extend(m.groups())
        else:
            words.append(w)
    return tuple(words)


def is_phone_header(words: Sequence[str]) -> bool:
    if not words or any(w in _NOT_A_NUMBER for w in words):
        return False
    if words[0] == "contact" and len(words) >= 2 and words[1] in _NUMBER_WORDS and \
            all(w in _NUMBER_WORDS or _NUMBERED.fullmatch(w) for w in words[2:]):
        return True  # contact-numbers, contact-number-<n>, Contact No, Contact Number
    for i, w in enumerate(words):
        if w in _PHONE_WORDS:
            return True
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if nxt in _NUMBER_WORDS and (w in ("contact", "ph") or w in _LINE_QUALIFIERS):
            return True
    return False


def is_record_id_header(words: Sequence[str]) -> bool:
    return words == ("id",) or (len(words) == 2 and words[1] == "id" and words[0] in _RECORD_ENTITIES)


def _is_client_header(words: Sequence[str]) -> bool:
    return words in (("client", "identifier"), ("clientidentifier",))


def _is_start_header(words: Sequence[str]) -> bool:
    return words in (("start", "time"), ("starttime",))


def flow_key_name(name: str) -> str:
    """A key name as written, with the ``$flow.key.`` prefix added when missing."""
    name = name.strip()
    if name[: len(FLOW_KEY_PREFIX)].lower() == FLOW_KEY_PREFIX:
        return name
    return FLOW_KEY_PREFIX + name


def _is_flow_key(name: str) -> bool:
    return name[: len(FLOW_KEY_PREFIX)].lower() == FLOW_KEY_PREFIX


def shown_header(name: str) -> str | None:
    """A header name fit for a reason or note: truncated; None when it looks like data
    (a number, an e-mail address, a long value) -- a headerless file's first line is data."""
    s = " ".join(name.split())
    if not s or _DATA_LIKE.fullmatch(s):
        return None
    if len(s) > 3 * _SHOWN_MAX:
        return None
    return s if len(s) <= _SHOWN_MAX else s[: _SHOWN_MAX - 1] + "…"


def column_label(index: int, name: str, quote: bool = False) -> str:
    """``Mobile Phone Number`` (quoted on request) or ``column 4`` when the name is not fit to show."""
    shown = shown_header(name)
    if not shown:
        return f"column {index + 1}"
    return f"'{shown}'" if quote else shown


def listed(indices: Sequence[int], limit: int = MAX_LISTED) -> str:
    """``4, 7, 9`` or ``4, 7, 9, … (10,000 in all)`` (1-based column numbers)."""
    head = ", ".join(str(i + 1) for i in indices[:limit])
    return head if len(indices) <= limit else f"{head}, … ({len(indices):,} in all)"


@dataclass(slots=True)
class Columns:
    """Where each role sits in a CSV header."""

    width: int
    client: int | None = None
    client_from: str = ""  # how the identifier column was chosen: "", "client-identifier", "record id", "mapping"
    phones: list[tuple[int, str]] = field(default_factory=list)  # (index, label for reasons)
    start: int | None = None
    keys: list[tuple[int, str]] = field(default_factory=list)  # (index, "$flow.key.<Header>")
    reserved: list[tuple[int, str]] = field(default_factory=list)  # columns dropped: the correlation key
    notes: list[str] = field(default_factory=list)


def _matches(names: Iterable[str] | None) -> list[tuple[str, tuple[str, ...]]]:
    out = []
    for n in names or ():
        n = n.strip()
        if n:
            out.append((n, header_words(n) or (n.lower(),)))
    return out


def _words_or_name(cell: str) -> tuple[str, ...]:
    return header_words(cell) or (cell.strip().lower(),)


def map_header(cells: list[str], reserved_key: str, *, phone_columns: Sequence[str] | None = None,
               id_column: str | None = None) -> Columns:
    """Column roles of a CSV header. ``phone_columns`` / ``id_column``: an explicit mapping
    (header names, matched by their words) that replaces the phone rule / the identifier
    choice. Raises MappingError when the mapping names a column the header does not have."""
    cols = Columns(width=len(cells))
    reserved_lower = reserved_key.lower()
    words = [_words_or_name(c) if c.strip() else () for c in cells]
    mapped_phones = _matches(phone_columns)
    mapped_id = _matches([id_column] if id_column else None)
    for name, w in (*mapped_phones, *mapped_id):
        if w not in words:
            shown = shown_header(name) or "(a name that looks like data)"
            raise MappingError(f"the column mapping names '{shown}', which is not a column of this file's header")
    phone_set = {w for _, w in mapped_phones}
    unnamed: list[int] = []
    repeated: dict[str, list[int]] = {}
    record_ids: list[int] = []
    for i, raw in enumerate(cells):
        written = raw.strip()
        if not written:
            unnamed.append(i)
            continue
        w = words[i]
        if mapped_id and w == mapped_id[0][1]:
            if cols.client is None:
                cols.client, cols.client_from = i, "mapping"
            else:
                repeated.setdefault("the mapped id column", []).append(i)
        if _is_flow_key(written):
            pass
        elif (w in phone_set) if mapped_phones else is_phone_header(w):
            cols.phones.append((i, column_label(i, written)))
            continue
        elif _is_client_header(w) and not mapped_id:
            if cols.client is None:
                cols.client, cols.client_from = i, "client-identifier"
            else:
                repeated.setdefault("client-identifier", []).append(i)
            continue
        elif _is_start_header(w):
            if cols.start is None:
                cols.start = i
            else:
                repeated.setdefault("start-time", []).append(i)
            continue
        elif is_record_id_header(w):
            record_ids.append(i)
        key = flow_key_name(written)
        if key.lower() == reserved_lower:
            cols.reserved.append((i, column_label(i, written)))
        else:
            cols.keys.append((i, key))
    if cols.client is None and len(record_ids) == 1:
        cols.client, cols.client_from = record_ids[0], "record id"
    elif cols.client is None and len(record_ids) > 1:
        names = ", ".join(column_label(i, cells[i], True) for i in record_ids[:MAX_LISTED])
        cols.notes.append(f"{len(record_ids)} columns could be the record id ({names}): none is used as "
                          f"client-identifier; name one with the id-column mapping")
    if unnamed:
        if len(unnamed) == 1:
            cols.notes.append(f"column {unnamed[0] + 1} has no header name: its values are ignored")
        else:
            cols.notes.append(f"{len(unnamed):,} columns have no header name (columns {listed(unnamed)}): "
                              f"their values are ignored")
    for role, idx in repeated.items():
        cols.notes.append(f"column{'s' if len(idx) > 1 else ''} {listed(idx)} repeat{'' if len(idx) > 1 else 's'} "
                          f"{role}: ignored")
    if cols.reserved:
        names = ", ".join(column_label(i, cells[i], True) for i, _ in cols.reserved[:MAX_LISTED])
        cols.notes.append(f"column {names} is ignored: {reserved_key} is reserved for the pipeline's own "
                          f"tracking reference")
    return cols


def summarize_columns(cols: Columns, cells: list[str], stem: str) -> list[str]:
    """The summary notes that say which columns gave the numbers and the identifiers."""
    notes = []
    labels = [column_label(i, cells[i], True) for i, _ in cols.phones[:MAX_LISTED]]
    more = f", … ({len(cols.phones):,} in all)" if len(cols.phones) > MAX_LISTED else ""
    notes.append(f"phone numbers from {', '.join(labels)}{more}")
    if cols.client is None:
        notes.append(f"no client-identifier column: identifiers generated as {stem}-<row>")
    else:
        label = column_label(cols.client, cells[cols.client], True)
        how = {"client-identifier": "", "record id": " (the file's record id; no client-identifier column)",
               "mapping": " (the id-column mapping)"}[cols.client_from]
        notes.append(f"client-identifier from {label}{how}")
    return notes
