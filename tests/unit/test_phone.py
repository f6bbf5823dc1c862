"""core.phone: E.164 normalization and masking."""

from __future__ import annotations

import pytest

from core.phone import InvalidNumber, mask, normalize


@pytest.mark.parametrize(
    "raw",
    [
        "+12025550100",
        "+1 202-555-0100",
        "+1 (202) 555-0100",
        "(202) 555-0100",
        "202.555.0100",
        "2025550100",
        "1-202-555-0100",
        "  +1 202 555 0100\t",
        "tel:+1-202-555-0100",
    ],
)
def test_normalize_us_formats_to_e164(raw: str) -> None:
    assert normalize(raw) == "+12025550100"


def test_normalize_international_number_keeps_its_country() -> None:
    assert normalize("+44 20 7946 0018") == "+442079460018"
    assert normalize("+49 30 901820") == "+4930901820"


def test_default_region_applies_only_to_national_formats() -> None:
    assert normalize("020 7946 0018", "GB") == "+442079460018"
    assert normalize("(202) 555-0100", "US") == "+12025550100"
    # An explicit country code wins over the default region.
    assert normalize("+1 202 555 0100", "GB") == "+12025550100"
    # The same national digits mean another number in another region.
    with pytest.raises(InvalidNumber):
        normalize("020 7946 0018", "US")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("+1" + "2" * 60, "too long"),
        ("not a number", "could not be parsed"),
        ("+", "could not be parsed"),
        ("@@@@", "could not be parsed"),
        # Parses, but no such number exists (too short, unassigned area code).
        ("+1 202 555 01", "not a valid"),
        ("+1 000 555 0100", "not a valid"),
        ("12", "not a valid"),
    ],
)
def test_normalize_rejects_with_a_clear_message(raw: str, message: str) -> None:
    with pytest.raises(InvalidNumber, match=message) as info:
        normalize(raw)
    # InvalidNumber is a ValueError, so callers that only know ValueError still catch it.
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("phone number ")


def test_too_long_is_refused_even_when_the_digits_would_parse() -> None:
    # A valid number padded past 40 characters: the length bound, not the parser, refuses it.
    padded = "+1 202" + " " * 30 + "555 0100"
    assert len(padded) > 40
    with pytest.raises(InvalidNumber, match="too long"):
        normalize(padded)
    # Surrounding whitespace does not count.
    assert normalize(" " * 30 + "+1 202 555 0100" + " " * 30) == "+12025550100"


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+12025550100", "***0100"),
        ("+1 (202) 555-0107", "***0107"),
        ("+442079460018", "***0018"),
        ("123", "***123"),
        (None, "-"),
        ("", "-"),
    ],
)
def test_mask_keeps_only_the_last_four_digits(number: str | None, masked: str) -> None:
    assert mask(number) == masked


def test_mask_never_reveals_the_leading_digits() -> None:
    masked = mask("+12025550100")
    assert "202555" not in masked and "+1" not in masked
