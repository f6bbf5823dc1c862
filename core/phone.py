"""Phone number normalization and masking."""

from __future__ import annotations

import phonenumbers


class InvalidNumber(ValueError):
    pass


def normalize(raw: str, default_region: str = "US") -> str:
    """Return the E.164 form of `raw`, or raise InvalidNumber with a reason a user can act on."""
    text = raw.strip()
    if not text:
        raise InvalidNumber("phone number is empty")
    if len(text) > 40:
        raise InvalidNumber("phone number is too long")
    try:
        parsed = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(f"phone number could not be parsed: {exc._msg}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidNumber("phone number is not a valid, dialable number")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    # The metadata accepts a few national numbers longer than E.164 allows (15 digits); no
    # carrier dials those, and the provider would refuse them after a dial attempt.
    if len(e164) - 1 > 15:
        raise InvalidNumber("phone number is too long for E.164 (at most 15 digits)")
    return e164


def mask(number: str | None) -> str:
    """Keep only the last 4 digits, for logs and summaries."""
    if not number:
        return "-"
    digits = [c for c in number if c.isdigit()]
    return "***" + "".join(digits[-4:])
