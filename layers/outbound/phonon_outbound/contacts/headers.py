"""Header names -> column roles (docs/contact-files.md "Headers").

Every header is first reduced to its *words* (:func:`header_words`): trimmed, accents removed
(``Teléfono`` -> ``telefono``), camelCase split (``MobilePhone`` -> ``mobile phone``),
lower-cased, ``#`` read as "no", every other character that is not a letter or digit (``.``
``:`` ``(`` ``)`` ``/`` ``_`` ``-`` ``'`` spaces ...) a word break, digits split from letters
(``tel1`` -> ``tel 1``), run-together number words split (``MobileNo`` -> ``mobile no``), a
lower-case name made only of known words cut into them (``mobilephone``, ``altmobno``,
``contactid``; ``hotel`` stays whole) and a Salesforce custom field's ``__c`` dropped.
Roles are decided on those words, so ``Mob. No.``, ``mob_no``, ``MOB NO`` and ``MobNo`` are the
same header.

Phone columns are found by a rule, not a list of spellings (the exports of HubSpot,
Salesforce, Zoho, Pipedrive, Freshsales, Dynamics 365, Google and Outlook contacts, Shopify,
WooCommerce, form responses and everyday spreadsheets name them ``Phone Number``,
``Mobile Phone Number``, ``MobilePhone``, ``Asst. Phone``, ``Phone - Work``, ``Phone 1 - Value``,
``Billing Phone``, ``Work Number``, ``Mob. No.``, ``Contact No``, ``Cell #``, ``RMN``,
``What is your phone number?``, ``Phone number (with country code)`` ...). The words are read
up to a *description* of how to write the value -- from ``with``, ``including``, ``include``,
``incl``, ``e.g.``, ``i.e.``, ``example`` on (``Phone number (with country code)``,
``Phone (e.g. +91 98765 43210)``): those words say how the number is written, not what the
column is. On the words before it, a header is a phone column when

1. they contain a *phone word* (``phone``, ``mobile``, ``mob``, ``cell``, ``tel``,
   ``telephone``, ``whatsapp``, ``landline``, ``rmn`` ...), or ``contact`` / ``ph`` followed by a
   number word (``no``, ``number``, ``num``, ``nr``) or ending with one (``Contact Person No``),
   or a line qualifier followed by a number
   word (``work number``, ``home no``, ``callback number`` as Freshworks and Dynamics name
   them), and
2. they are not a yes/no question or flag (the first word ``is``, ``has``, ``do``, ``can`` ...:
   ``Do you have WhatsApp?``, ``IsMobileVerified``; ``what is your ...`` asks for the value) nor
   a count (``Number of Phones``, ``No. of Mobiles``), and
3. none of them makes the column something *about* a phone rather than the number itself:
   its type or label (``Phone Type``), a flag or consent (``Phone Verified``,
   ``Mobile Opt Out``, ``Do Not Call``, ``DND Status``), a part of a number (``Country Code``,
   ``Extension``), another person's number, ours or a third party's (``Owner Phone``,
   ``RM Mobile``, ``Reference 1 Mobile``), a record id (``Phone ID``), a number known dead
   (``Old Mobile Number``), a date, count, source or change, a digest (``Hashed Phone``), a
   device or bill (``Mobile Model``, ``Phone Bill Amount``), or another channel or what is sent
   on it (``Fax``, ``SMS``, ``Email``, ``TTY/TDD Phone``, ``WhatsApp Group``).

Record-id columns (used as client-identifier when the file has no ``client-identifier``
column and exactly one of them): ``Id``, and ``Record``/``Contact``/``Lead``/``Customer``/
``Cust``/``Client``/``Person``/``Prospect`` followed by ``Id`` -- Salesforce's ``Id``, HubSpot's
and Zoho's ``Record ID``, Pipedrive's ``Person - ID``, LeadSquared's ``ProspectID`` -- and
Dynamics 365's ``(Do Not Modify) Contact`` / ``(Do Not Modify) Lead`` (the record's GUID in
its Excel exports), also after a report's object prefix (``Contact: Contact ID``).
``AccountId``, ``OwnerId``, ``CreatedById`` are other records' ids, not this one's.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "FLOW_KEY_PREFIX", "PHONE_HEADER_HELP", "Columns", "MappingError", "flow_key_name", "header_words",
    "is_phone_header", "is_record_id_header", "map_header", "maybe_phone_columns", "shown_header", "summarize_columns",
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
    "phone", "phones", "telephone", "telephones", "tel", "mobile", "mobiles", "mob", "cell", "cellphone", "cellular",
    "whatsapp", "landline", "smartphone", "telefon", "telefono", "telefone", "celular",
    "rmn",  # Indian banks' "registered mobile number"
})
# "<qualifier> number" names a phone line in Freshworks' and others' exports ("Work Number").
_LINE_QUALIFIERS = frozenset({"work", "home", "office", "business", "personal", "other", "alternate",
                              "alternative", "alt", "primary", "secondary", "residence", "direct", "private",
                              "main", "callback"})
_NOT_A_NUMBER = frozenset({
    # what kind of number, or which one to prefer: a label, not the number
    "type", "types", "kind", "label", "format", "preferred",
    # flags, checks, consent and do-not-call lists (Salesforce DoNotCall, HasOptedOutOfFax, DND, NDNC)
    "verified", "verification", "valid", "invalid", "validated", "validity", "confirmed", "status", "is", "has",
    "flag", "opt", "optin", "optout", "opted", "out", "consent", "dnc", "dnd", "ndnc", "call", "calls", "called",
    "blocked", "unsubscribed", "bounced", "reachable", "unreachable", "available", "availability", "exists",
    "missing",
    # a number known not to work any more
    "old", "previous", "former", "inactive", "disconnected", "deactivated", "wrong", "obsolete",
    # a part of a number
    "country", "code", "ext", "extension", "prefix", "area", "dial", "isd", "std",
    # another person's number (ours, or a third party's) or another record's id
    "owner", "agent", "executive", "rep", "salesperson", "sales", "staff", "employee", "caller", "telecaller",
    "assigned", "assignee", "counsellor", "counselor", "advisor", "officer", "collector", "manager", "rm", "branch",
    "emergency", "reference", "referrer", "referred", "referral", "id",
    # facts about the number or the device, not the number
    "name", "date", "time", "count", "total", "source", "updated", "modified", "created", "changed", "carrier",
    "operator", "provider", "network", "app", "device", "model", "brand", "os", "imei", "sim", "plan", "bill",
    "recharge", "amount", "balance", "wallet", "usage", "banking", "enabled", "active", "last",
    # a digest or a masked copy, not a number one can dial (ad-platform exports' hashed phones)
    "hash", "hashed", "sha", "md", "encrypted", "masked",
    # other channels, or what is sent on them ("Billing Phone" is a phone: "billing" is not here,
    # "bill" is; "phone_e164" is a phone: "E-mail" is caught by "mail")
    "fax", "sms", "email", "mail", "tty", "tdd", "telex", "pager", "group", "link", "url", "profile", "username",
    "handle", "template", "message", "msg", "text", "chat",
})
# A first word that makes the header a yes/no question or a flag ("Do you have WhatsApp?",
# "Is Mobile Verified", "Can we call you?"); "what is your phone number" asks for the number.
_YES_NO_START = frozenset({"is", "are", "has", "have", "had", "do", "does", "did", "can", "could", "may", "shall",
                           "should", "will", "would", "was", "were", "allow", "accepts", "accept"})
_ASKING = frozenset({"what", "whats", "which", "enter", "please", "kindly", "provide", "share", "your"})
# From these words on, a header describes how to write the value ("Phone number (with country
# code)", "Phone (e.g. +91 ...)"): the rule reads only the words before them.
_DESCRIPTION_START = frozenset({"with", "including", "include", "includes", "incl", "eg", "ie", "example", "like"})
_RECORD_ENTITIES = frozenset({"record", "contact", "lead", "customer", "cust", "client", "person", "prospect"})
_DYNAMICS_KEY = ("do", "not", "modify")  # Dynamics 365 Excel exports: "(Do Not Modify) Contact" holds the GUID
_NUMBERED = re.compile(r"\d{1,3}")
_SHOWN_MAX = 40
_DATA_LIKE = re.compile(r"[+(]?\d[\d ()\-.]{3,}\d|\d+(?:[.,]\d+)?[eE]\+?\d+|.*\d{5,}.*|.*@.*")
MAX_LISTED = 10  # columns named in one aggregated note


class MappingError(Exception):
    """An explicit column mapping names a column the file does not have."""


# Words a run-together lower-case name is cut into ("mobilephone", "homephone" -- HubSpot's and
# Salesforce's field names as some tools export them --, "altmobno", "contactid", "phonetype"):
# only when the whole name is made of them, so "hotel", "cellar" and "telex" stay whole.
_PIECES = frozenset(_PHONE_WORDS | _NUMBER_WORDS | _LINE_QUALIFIERS | _RECORD_ENTITIES
                    | {w for w in _NOT_A_NUMBER if len(w) >= 3}
                    | {"ph", "id", "assistant", "asst", "car", "company", "billing", "shipping"})
_PIECE_MAX = max(map(len, _PIECES))
_PIECE_HINT = re.compile("ph|mob|tel|cell|whatsapp|landline|rmn|id|no|num|nr|nbr")  # a cut could matter
_PIECES_WORD_MAX = 40


def _pieces(word: str) -> list[str] | None:
    """``word`` cut into the fewest _PIECES, or None when it cannot be (or need not be)."""
    n = len(word)
    if n < 5 or n > _PIECES_WORD_MAX or word in _PIECES or not word.isalpha() or not _PIECE_HINT.search(word):
        return None
    best: list[list[str] | None] = [None] * n + [[]]
    for i in range(n - 1, -1, -1):
        for j in range(min(n, i + _PIECE_MAX), i + 1, -1):
            rest = best[j]
            here = best[i]
            if rest is not None and word[i:j] in _PIECES and (here is None or len(rest) + 1 < len(here)):
                best[i] = [word[i:j], *rest]
    found = best[0]
    return found if found is not None and len(found) > 1 else None


def header_words(name: str) -> tuple[str, ...]:
    """The words of a header name, as the role rules see them (see the module docstring)."""
    name = name.strip()
    if not name.isascii():  # Teléfono, Téléphone portable, Número de móvil
        name = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    s = _CAMEL.sub(" ", _WHATSAPP.sub("whatsapp", name)).lower().replace("#", " no ")
    s = _LETTER_DIGIT.sub(" ", _NON_WORD.sub(" ", s))
    words: list[str] = []
    for w in s.split():
        m = _RUN_TOGETHER.fullmatch(w)
        if m is not None:
            words.extend(m.groups())
        elif (cut := _pieces(w)) is not None:
            words.extend(cut)
        else:
            words.append(w)
    if len(words) > 1 and words[-1] in ("c", "pc") and name.endswith(("__c", "__pc")):
        words.pop()  # a Salesforce custom field's suffix: Mobile_Number__c, Customer_ID__c
    return tuple(words)


def _head(words: Sequence[str]) -> Sequence[str]:
    """The words before a description of how to write the value (``with country code``,
    ``e.g. +91 ...``, ``i.e. ...``)."""
    for i, w in enumerate(words):
        if w in _DESCRIPTION_START or (i + 1 < len(words) and (w, words[i + 1]) in (("e", "g"), ("i", "e"))):
            return words[:i]
    return words


def is_phone_header(words: Sequence[str]) -> bool:
    words = _head(words)
    if not words or words[0] in _YES_NO_START:
        return False
    if words[0] in _NUMBER_WORDS and len(words) > 1 and words[1] == "of":
        return False  # "Number of Phones", "No. of Mobiles": a count
    asking = words[0] in _ASKING
    for w in words:
        if w in _NOT_A_NUMBER and not (asking and w in ("is", "has")):
            return False
    if words[0] == "contact" and len(words) >= 2 and words[1] in _NUMBER_WORDS and \
            all(w in _NUMBER_WORDS or _NUMBERED.fullmatch(w) for w in words[2:]):
        return True  # contact-numbers, contact-number-<n>, Contact No, Contact Number
    if "contact" in words:  # "Contact Person No.", "Parent Contact Number 2": a contact's number
        last = len(words) - 1
        while last > 0 and _NUMBERED.fullmatch(words[last]):
            last -= 1
        if words[last] in _NUMBER_WORDS and words.index("contact") < last:
            return True
    for i, w in enumerate(words):
        if w in _PHONE_WORDS:
            return True
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if nxt in _NUMBER_WORDS and (w in ("contact", "ph") or w in _LINE_QUALIFIERS):
            return True
    return False


def is_record_id_header(words: Sequence[str]) -> bool:
    words = tuple(words)
    if len(words) == 3 and words[0] in _RECORD_ENTITIES:
        words = words[1:]  # a report's object prefix: "Contact: Contact ID", "Lead - Lead ID"
    if words == ("id",) or (len(words) == 2 and words[1] == "id" and words[0] in _RECORD_ENTITIES):
        return True
    return len(words) == 4 and words[:3] == _DYNAMICS_KEY and words[3] in _RECORD_ENTITIES


def maybe_phone_columns(cells: Sequence[str]) -> list[str]:
    """Header names that may hold numbers but that the rule does not take on its own: ``Contact``
    (Razorpay's payment exports, some sheets) or ``Customer Contact`` -- a name or a link in
    CRMs. Named in the "no phone column" rejection so the person can map one."""
    out = []
    for c in cells:
        w = header_words(c)
        if w and w[-1] == "contact" and len(w) <= 2 and (shown := shown_header(c)):
            out.append(shown)
    return out


def _is_client_header(words: Sequence[str]) -> bool:
    return words in (("client", "identifier"), ("clientidentifier",))


def _is_start_header(words: Sequence[str]) -> bool:
    return words in (("start", "time"), ("starttime",))


def flow_key_name(name: str) -> str:
    """A key name as written, with the ``$flow.key.`` prefix added when missing (a prefix
    written in another case, ``$FLOW.KEY.x``, is written as documented: ``$flow.key.x``)."""
    name = name.strip()
    if name[: len(FLOW_KEY_PREFIX)].lower() == FLOW_KEY_PREFIX:
        return FLOW_KEY_PREFIX + name[len(FLOW_KEY_PREFIX):].strip()
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
    nameless: list[int] = []  # '$flow.key.' and nothing after it
    key_columns: dict[str, tuple[int, str]] = {}  # a flow variable's name (exact: the flow tells case apart) -> (column, name)
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
        if key == FLOW_KEY_PREFIX:
            nameless.append(i)
        elif key.lower() == reserved_lower:
            cols.reserved.append((i, column_label(i, written)))
        elif key in key_columns:  # one variable, one value: the first column with the name gives it
            first, first_key = key_columns[key]
            repeated.setdefault(f"the flow variable {shown_header(first_key) or 'of an earlier column'} "
                                f"(column {first + 1})", []).append(i)
        else:
            key_columns[key] = (i, key)
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
    if nameless:
        cols.notes.append(f"column{'s' if len(nameless) > 1 else ''} {listed(nameless)} "
                          f"{'have' if len(nameless) > 1 else 'has'} no name after {FLOW_KEY_PREFIX}: "
                          f"{'their' if len(nameless) > 1 else 'its'} values are ignored")
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
