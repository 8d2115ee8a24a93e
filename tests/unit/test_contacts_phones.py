"""Phone numbers: libphonenumber's rules, and the fast path proven equal to them."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from phonon_outbound.contacts import PhoneNormalizer
from phonon_outbound.contacts.phones import SCIENTIFIC_PROBLEM

FAST_REGIONS = ["IN", "DE", "FR", "SG", "AE", "BR", "US", "GB"]  # BR/US/GB: fast path off, still checked


def reference(region: str, token: str):
    """What phonenumbers itself says, in PhoneNormalizer's answer shape."""
    return PhoneNormalizer(region)._slow_path(token)


@pytest.mark.parametrize(("token", "digits"), [
    ("9876543210", "919876543210"),
    ("+919876543210", "919876543210"),
    ("919876543210", "919876543210"),
    ("09876543210", "919876543210"),
    ("+91 98765 43210", "919876543210"),
    ("98765-43210", "919876543210"),
    ("+1 650 253 0000", "16502530000"),
    ("1800 180 1961", "9118001801961"),
])
def test_valid_numbers_become_e164_digits_without_plus(token, digits):
    assert PhoneNormalizer("IN").normalize(token) == (digits, None)


@pytest.mark.parametrize(("token", "problem"), [
    ("12345", "is not a valid number for region IN"),
    ("5555555555", "is not a valid number for region IN"),
    ("+1 555", "is not a valid phone number"),
    ("+999 12345678", "has an unknown country calling code"),
    ("abc", "is not a valid number for region IN (not a phone number)"),
    ("9.18E+11", SCIENTIFIC_PROBLEM),
    ("9876543210 ext. 12", "is not a valid number for region IN (it has an extension, which cannot be dialled)"),
])
def test_invalid_numbers_get_a_problem_that_completes_the_reason(token, problem):
    assert PhoneNormalizer("IN").normalize(token) == (None, problem)


def test_unknown_region_is_refused():
    with pytest.raises(ValueError):
        PhoneNormalizer("XX")


def _token(rng: random.Random, cc: str) -> str:
    length = rng.choice([3, 5, 7, 8, 9, 10, 10, 10, 11, 12, 13, 14, 17, 18])
    d = "".join(rng.choice("0123456789") for _ in range(length))
    k = rng.random()
    if k < 0.3:
        d = rng.choice("6789") + d[1:]
    elif k < 0.5:
        d = cc + d
    elif k < 0.6:
        d = "0" + d
    elif k < 0.65:
        d = "00" + cc + d
    if rng.random() < 0.3:
        d = "+" + d
    if rng.random() < 0.2:
        i = rng.randrange(1, max(2, len(d) - 1))
        d = d[:i] + rng.choice([" ", "-", " - ", "  "]) + d[i:]
    return d


@pytest.mark.parametrize("region", FAST_REGIONS)
def test_the_fast_path_answers_exactly_as_phonenumbers_on_generated_numbers(region):
    # Given 1,500 numbers in the shapes files hold, many near the branch points of parse()
    norm = PhoneNormalizer(region)
    cc = str(phonenumbers.country_code_for_region(region))
    rng = random.Random(f"phones-{region}")
    taken = 0
    for _ in range(1500):
        token = _token(rng, cc)
        fast = norm._fast_path(token) if norm._fast else None
        if fast is not None:
            taken += 1
            # Then whenever the fast path answers, phonenumbers answers the same
            assert fast == reference(region, token), token
    if norm._fast:
        assert taken > 600  # the fast path really is the common path


def test_every_region_agrees_on_its_own_example_numbers():
    # Given each region's example numbers written the ways people write them
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        norm = PhoneNormalizer(region)
        for kind in (PhoneNumberType.MOBILE,):
            ex = phonenumbers.example_number_for_type(region, kind)
            if ex is None:
                continue
            for fmt in (PhoneNumberFormat.E164, PhoneNumberFormat.NATIONAL):
                token = phonenumbers.format_number(ex, fmt)
                nsn = phonenumbers.national_significant_number(ex)
                for t in {token, nsn, str(ex.country_code) + nsn}:
                    assert norm.normalize(t) == reference(region, t), (region, t)


@settings(max_examples=300, deadline=None)
@given(region=st.sampled_from(["IN", "DE", "SG"]),
       plus=st.booleans(),
       body=st.text(alphabet="0123456789 -", min_size=1, max_size=20))
def test_property_fast_path_equals_phonenumbers(region, plus, body):
    token = (("+" if plus else "") + body).strip()
    if not token:
        return
    norm = PhoneNormalizer(region)
    fast = norm._fast_path(token)
    if fast is not None:
        assert fast == reference(region, token)
    assert norm.normalize(token) == reference(region, token)


def test_slow_path_results_are_cached_and_the_cache_is_bounded(monkeypatch):
    from phonon_outbound.contacts import phones

    monkeypatch.setattr(phones, "_CACHE_MAX", 3)
    norm = PhoneNormalizer("IN")
    for t in ["(0)98765 43210", "0 98765 43211", "0 98765 43212", "0 98765 43213"]:
        norm.normalize(t)
    assert len(norm._cache) <= 3
    assert norm.normalize("0 98765 43213") == ("919876543213", None)


@pytest.mark.parametrize(("token", "digits"), [
    ("9876543210.0", "919876543210"),  # a data-frame export's float of a number column with gaps
    ("919876543210.00", "919876543210"),
    ("+91 98765 43210 (WhatsApp)", "919876543210"),  # phonenumbers would read the letters as digits
    ("9876543210 (Father)", "919876543210"),
])
def test_what_exports_add_around_a_valid_number_is_tidied_away(token, digits):
    assert PhoneNormalizer("IN").normalize(token) == (digits, None)


@pytest.mark.parametrize("token", ["123.0", "98765.0", "98765 43210 (9)"])
def test_tidying_never_makes_a_short_or_odd_value_valid(token):
    assert PhoneNormalizer("IN").normalize(token)[0] is None
