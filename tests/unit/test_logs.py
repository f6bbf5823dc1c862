"""Log lines: phone numbers masked in every shape, ids kept, call ids attached, JSON option."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from core.logs import call_context, make_handler, redact

SESSION = "6f1c8a52-5d0e-4a0b-9a55-0d6b3c1f2e01"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("dialing +12025550100", "dialing ***0100"),
        ("to +1 202-555-0101 now", "to ***0101 now"),
        ("(202) 555-0102", "***0102"),
        ("12025550103", "***0103"),
        ("?phoneNumber=%2B12025550104&wait=dialed", "?phoneNumber=***0104&wait=dialed"),
        ("?phoneNumber=%2B1%20202-555-0105 HTTP/1.1", "?phoneNumber=***0105 HTTP/1.1"),
        ("To=+12025550106&From=+12025550199", "To=***0106&From=***0199"),
        ("?phoneNumber=%28202%29+555-0107&wait=x", "?phoneNumber=***0107&wait=x"),
        ("1 (202) 555 0108", "***0108"),
    ],
)
def test_phone_numbers_are_masked_to_the_last_four_digits(text: str, masked: str) -> None:
    assert redact(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        f"session {SESSION}",
        "12345678-1234-1234-1234-123456789012",
        "at 2026-11-26 23:42:59,123",
        "at 2026-11-26T23:42:59.123",
        '127.0.0.1:54321 - "GET /health HTTP/1.1" 200',
        "attempt 2 of 5 after 1500 ms",
    ],
)
def test_ids_times_and_addresses_are_kept(text: str) -> None:
    assert redact(text) == text


def _log(fmt: str, logger: logging.Logger, *args: object, **kwargs: Any) -> str:
    out = io.StringIO()
    handler = make_handler(fmt, out)
    logger.addHandler(handler)
    try:
        logger.warning(*args, **kwargs)
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def test_json_lines_carry_the_call_ids_and_mask_args_and_extras() -> None:
    logger = logging.getLogger("test.dialer.logs.json")
    with call_context(request_id="req-1", call_session_id=SESSION):
        line = _log("json", logger, "dialing %s", "+12025550100", extra={"to": "+12025550100"})
    record = json.loads(line)
    assert record["message"] == "dialing ***0100"
    assert record["to"] == "***0100"
    assert (record["request_id"], record["call_session_id"]) == ("req-1", SESSION)
    assert "2025550100" not in line


def test_text_lines_carry_the_ids_and_mask_tracebacks() -> None:
    logger = logging.getLogger("test.dialer.logs.text")
    with call_context(request_id="req-2", call_session_id=SESSION):
        try:
            raise ValueError("bad number +12025550100")
        except ValueError:
            line = _log("text", logger, "failed", exc_info=True)
    assert f"request_id=req-2 call_session_id={SESSION}" in line
    assert "***0100" in line and "2025550100" not in line
    # Outside a call, nothing is attached.
    assert "request_id" not in _log("text", logger, "idle")
