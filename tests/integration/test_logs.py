"""The logs of a run of calls, captured through Dialer's own handler: no line holds a full test
phone number, and the lines about a call carry its request_id and call_session_id."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from core.logs import make_handler
from tests.support.accounts import make_account
from tests.support.rows import terminal_row
from tests.support.stack import Stack, create_call
from tests.support.waiting import wait_until

# Success, refused twice then placed, rejected, busy; and the caller line of make_account.
NUMBERS = ("+1 202-555-0100", "+12025550104", "(202) 555-0103", "+12025550101")
LINE = "+12025550199"
# Any run of the fictional range's digits longer than the 4 a mask keeps.
FULL_NUMBER = re.compile(r"555\D{0,3}01\d\d|2025550")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every record of every logger at INFO and above, as the JSON handler writes it."""
    out = io.StringIO()
    handler = make_handler("json", out)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_no_log_line_holds_a_full_test_phone_number(
    stack: Stack, captured: io.StringIO
) -> None:
    account = make_account(stack.engine)
    calls = []
    for number in NUMBERS:
        resp = await create_call(stack, account.headers, number, wait="dialed")
        assert resp.status_code == 200, resp.text
        calls.append(resp.json())
    for call in calls:
        await wait_until(terminal_row(stack.engine, call["call_session_id"]))
    # A request line as uvicorn's access log writes it (not produced over ASGI in tests):
    # the query string holds the number, the handler must mask it.
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:50000",
        "POST",
        "/api/call/create_call?phoneNumber=%2B12025550100&wait=dialed",
        "1.1",
        200,
    )

    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert lines
    for line in lines:
        assert not FULL_NUMBER.search(json.dumps(line)), line

    # The dial lines (one per attempt) name the masked number and carry the call's ids,
    # which the activity code does not pass: the worker's interceptor brings them.
    by_session = {c["call_session_id"]: c["request_id"] for c in calls}
    dials = [line for line in lines if line["message"].startswith("dial attempt")]
    assert len(dials) == 6, dials  # 1 + 3 + 1 + 1 attempts
    for line in dials:
        assert by_session[line["call_session_id"]] == line["request_id"]
        assert "***01" in line["message"]
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert "phoneNumber=***0100" in access[0]["message"]
    # Outside a call, no ids are attached.
    assert "call_session_id" not in access[0]


@pytest.fixture
def captured_text() -> Iterator[io.StringIO]:
    """Every record at INFO and above as an operator reads it (the text handler)."""
    out = io.StringIO()
    handler = make_handler("text", out)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_an_expected_dial_failure_is_one_line_without_a_traceback(
    stack: Stack, captured_text: io.StringIO
) -> None:
    """Refused twice (+12025550104) and rate limited once (+12025550107): expected outcomes,
    handled by the workflow's retries, each one line, never the SDK's chained traceback."""
    account = make_account(stack.engine)
    for number in ("+12025550104", "+12025550107"):
        resp = await create_call(stack, account.headers, number, wait="dialed")
        assert resp.status_code == 200 and resp.json()["status"] == "success", resp.text
    text = captured_text.getvalue()
    assert "Traceback" not in text, text
    assert "Completing activity as failed" not in text, text
    failed = [line for line in text.splitlines() if "dial attempt" in line and "not_placed" in line]
    assert len(failed) == 3, text  # 2 refused + 1 rate limited, one line each
    for line in failed:
        assert "code" in line and "***01" in line, line
