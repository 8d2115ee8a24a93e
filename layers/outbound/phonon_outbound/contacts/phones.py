"""Phone numbers: libphonenumber rules, E.164 digits without '+', with a proven fast path.

`PhoneNormalizer(region).normalize(token)` answers ``(digits, None)`` for a valid number
(``"916262772728"``) or ``(None, problem)`` where *problem* completes the sentence
"contact number '<token>' in <column> …", e.g. ``"is not a valid number for region IN"``.

Why a fast path: ``phonenumbers.parse`` + ``is_valid_number`` + ``format_number`` costs
~30-40 µs per number, which alone would cap ingest below 30,000 rows/s. Contact files
overwhelmingly hold the same few shapes (``9876543210``, ``+91 98765 43210``,
``919876543210``), so for tokens made only of ASCII digits, spaces and hyphens (optionally
after one leading ``+``) in the *default region's own country calling code* this module
replays exactly the steps ``phonenumbers.parse`` takes for such input -- country-code
extraction, the "starts with the default country code" rule, national-prefix stripping,
the NSN length bounds -- and then the same number-type patterns ``is_valid_number`` uses.
Whenever a step could branch in a way not replayed here (a national prefix or IDD that
matches, a leading zero, another country code, letters, extensions, ...) the token goes to
``phonenumbers`` itself. ``tests/unit/test_contacts_phones.py`` checks the equivalence on
hundreds of thousands of generated tokens for several regions.

Results of the slow path are memoised per token in a bounded dict (campaign files repeat
numbers; the fast path is cheaper than a cache).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, NumberParseException, PhoneNumberFormat
from phonenumbers.phonemetadata import PhoneMetadata

__all__ = ["PhoneNormalizer", "SCIENTIFIC_PROBLEM", "is_scientific_notation", "masked"]

# 9.18E+11, 9,18E+11 (European Excel), 9.18e11, 918E9
_SCIENTIFIC = re.compile(r"[+-]?\d+(?:[.,]\d*)?[eE][+-]?\d+")

SCIENTIFIC_PROBLEM = (
    "is in spreadsheet scientific notation, so its digits are lost; format the column as "
    "text in the spreadsheet and export the file again"
)

_CACHE_MAX = 8_192
_MIN_NSN, _MAX_NSN = 2, 17  # phonenumbers' _MIN_LENGTH_FOR_NSN / _MAX_LENGTH_FOR_NSN


def _prefix_test(pattern: str | None):
    """``re.match(pattern, s)`` as a callable; a plain digit string becomes ``str.startswith``."""
    if not pattern:
        return None
    if pattern.isdigit():
        return lambda s: s.startswith(pattern)
    return re.compile(pattern).match


def masked(token: str) -> str:
    """A cell shown in a reason without giving it away: ``'•••••••728'`` for a number (at most
    its last 3 digits kept, one dot per other digit), else only its length."""
    digits = [c for c in token if c.isdigit()]
    letters = sum(1 for c in token if c.isalpha())
    if digits and letters <= 1:
        keep = "".join(digits[-3:]) if len(digits) >= 4 else ""
        return "'" + "\u2022" * (len(digits) - len(keep)) + keep + "'"
    return f"(a value of {len(token)} character{'' if len(token) == 1 else 's'})"


# What exports add around a number that phonenumbers reads otherwise (tried only when the
# token as written is not valid): a float's ".0" from a data-frame export ("9876543210.0") and a
# label with letters in trailing parentheses ("+91 98765 43210 (WhatsApp)": phonenumbers reads
# letters as a vanity number's digits).
_FLOAT_TAIL = re.compile(r"(\+?\d{6,})\.0+")
_LABEL_TAIL = re.compile(r"(.*\d)\s*\([^()]*[^\W\d_][^()]*\)")


def _tidy(token: str) -> str | None:
    m = _FLOAT_TAIL.fullmatch(token) or _LABEL_TAIL.fullmatch(token)
    return m.group(1) if m is not None else None


def is_scientific_notation(token: str) -> bool:
    return ("e" in token or "E" in token) and _SCIENTIFIC.fullmatch(token) is not None


class _Desc(NamedTuple):
    lengths: frozenset[int]  # empty = any length
    pattern: re.Pattern[str]

    def matches(self, nsn: str) -> bool:
        return (not self.lengths or len(nsn) in self.lengths) and self.pattern.fullmatch(nsn) is not None


def _desc(d) -> _Desc | None:
    if d is None or not d.national_number_pattern:
        return None
    return _Desc(frozenset(d.possible_length or ()), re.compile(d.national_number_pattern))


class PhoneNormalizer:
    """Validates and normalises phone numbers for one default region (e.g. ``"IN"``)."""

    def __init__(self, region: str = "IN") -> None:
        region = region.upper()
        meta = PhoneMetadata.metadata_for_region(region, None)
        if meta is None:
            raise ValueError(f"unknown phone region {region!r}")
        self.region = region
        self._invalid_here = f"is not a valid number for region {region}"
        self._cache: dict[str, tuple[str | None, str | None]] = {}
        self._fast = self._prepare_fast_path(meta)

    # -- public -------------------------------------------------------------------------
    def normalize(self, token: str) -> tuple[str | None, str | None]:
        """``token`` is one stripped, non-empty number as written in the file."""
        if self._fast:
            result = self._fast_path(token)
            if result is not None:
                return result
        hit = self._cache.get(token)
        if hit is not None:
            return hit
        result = self._slow_path(token)
        if result[0] is None:
            tidy = _tidy(token)
            if tidy is not None:
                retried = self._slow_path(tidy)
                if retried[0] is not None:
                    result = retried
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[token] = result
        return result

    # -- the reference: phonenumbers itself ---------------------------------------------
    def _slow_path(self, token: str) -> tuple[str | None, str | None]:
        if is_scientific_notation(token):
            return None, SCIENTIFIC_PROBLEM
        international = token.lstrip().startswith(("+", "\uff0b"))
        invalid = "is not a valid phone number" if international else self._invalid_here
        try:
            num = phonenumbers.parse(token, self.region)
        except NumberParseException as exc:
            if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE and international:
                return None, "has an unknown country calling code"
            if exc.error_type in (NumberParseException.TOO_SHORT_NSN,
                                  NumberParseException.TOO_SHORT_AFTER_IDD):
                return None, f"{invalid} (too short)"
            if exc.error_type == NumberParseException.TOO_LONG:
                return None, f"{invalid} (too long)"
            return None, f"{invalid} (not a phone number)"
        if num.extension:
            return None, f"{invalid} (it has an extension, which cannot be dialled)"
        if not phonenumbers.is_valid_number(num):
            return None, invalid
        return phonenumbers.format_number(num, PhoneNumberFormat.E164)[1:], None

    # -- the fast path ---------------------------------------------------------------------
    def _prepare_fast_path(self, meta) -> bool:
        cc = meta.country_code
        regions = COUNTRY_CODE_TO_REGION_CODE.get(cc, ())
        general = _desc(meta.general_desc)
        if len(regions) != 1 or general is None or meta.national_prefix_transform_rule:
            return False  # shared calling codes (NANPA, +7, +44...) need phonenumbers' region lookup
        cc_str = str(cc)
        # _extract_country_code takes the shortest prefix that is a calling code.
        if any(int(cc_str[:i]) in COUNTRY_CODE_TO_REGION_CODE for i in range(1, len(cc_str))):
            return False
        self._cc = cc_str
        self._general = general
        self._general_lengths = sorted(meta.general_desc.possible_length or ())
        self._local_lengths = frozenset(meta.general_desc.possible_length_local_only or ())
        npp, idd = meta.national_prefix_for_parsing, meta.international_prefix
        self._npp = _prefix_test(npp)
        self._idd = _prefix_test(idd)
        literal = [p for p in (npp, idd) if p]
        self._no_plus_bad_start = tuple(literal) if all(p.isdigit() for p in literal) else None
        # Most likely first: the order of the alternation below does not change its answer.
        kinds = [meta.fixed_line, meta.premium_rate, meta.toll_free, meta.shared_cost, meta.voip,
                 meta.personal_number, meta.pager, meta.uan, meta.voicemail]
        if not meta.same_mobile_and_fixed_line_pattern:
            kinds.insert(0, meta.mobile)
        descs = [d for d in (_desc(k) for k in kinds) if d is not None]
        # phonenumbers._number_type_helper(nsn, metadata) != UNKNOWN, i.e. the general
        # description matches and so does one of the types -- folded into one regex per NSN
        # length: a lookahead for the general pattern, then the alternation of the types whose
        # possible lengths allow that length (fullmatch backtracks through every alternative).
        self._valid_by_len: dict[int, re.Pattern[str]] = {}
        for n in range(_MIN_NSN, _MAX_NSN + 1):
            if general.lengths and n not in general.lengths:
                continue
            alts = [d.pattern.pattern for d in descs if not d.lengths or n in d.lengths]
            if alts:
                either = "|".join(f"(?:{a})" for a in alts)
                self._valid_by_len[n] = re.compile(f"(?=(?:{general.pattern.pattern})\\Z)(?:{either})")
        return bool(self._general_lengths)

    def _fast_path(self, token: str) -> tuple[str | None, str | None] | None:
        plus = token[0] == "+"
        digits = token[1:] if plus else token
        if not (digits.isdigit() and digits.isascii()):
            if not digits[:1].isdigit() or not digits[-1:].isdigit():
                return None
            digits = digits.replace(" ", "").replace("-", "")
            if not (digits.isdigit() and digits.isascii()):
                return None
        if len(digits) < 3:
            return None
        cc = self._cc
        npp = self._npp
        if plus:
            if not digits.startswith(cc) or len(digits) <= _MIN_NSN:
                return None
            nsn = digits[len(cc):]
            if not nsn or (npp is not None and npp(nsn)):
                return None
        else:
            if self._no_plus_bad_start is not None:
                # IDD and national prefix are plain digits (e.g. "00" and "0"): one test for both
                if digits.startswith(self._no_plus_bad_start):
                    return None
            elif (self._idd is not None and self._idd(digits)) or (npp is not None and npp(digits)):
                return None
            nsn = digits
            if digits.startswith(cc):
                potential = digits[len(cc):]
                if not potential or (npp is not None and npp(potential)):
                    return None
                n = len(digits)
                too_long = n not in self._local_lengths and n > self._general_lengths[-1]
                if too_long or (not self._general.pattern.fullmatch(digits)
                                and self._general.pattern.fullmatch(potential)):
                    nsn = potential
                    if npp is not None and npp(nsn):
                        return None
        if nsn[0] == "0" or not (_MIN_NSN <= len(nsn) <= _MAX_NSN):
            return None
        valid = self._valid_by_len.get(len(nsn))
        if valid is not None and valid.fullmatch(nsn) is not None:
            return cc + nsn, None
        return None, ("is not a valid phone number" if plus else self._invalid_here)
