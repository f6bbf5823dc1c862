"""What an operator sees in the Temporal UI: every call is findable by DialerUserId,
DialerCallStatus and DialerRequestId, and no search attribute or summary holds a phone number."""

from __future__ import annotations

from tests.support.accounts import make_account
from tests.support.stack import Stack, create_call
from tests.support.waiting import wait_until

NUMBERS = ("+12025550100", "+12025550103")
# Digit runs that would betray a phone number (target or line) in a visible value.
TELLTALES = ("2025550", "+1202", "555-01", "5550100", "5550103", "5550199")


async def _ids(stack: Stack, query: str) -> list[str]:
    return [wf.id async for wf in stack.client.list_workflows(query)]


async def test_calls_are_findable_by_search_attributes(stack: Stack) -> None:
    account = make_account(stack.engine)
    ok = (await create_call(stack, account.headers, NUMBERS[0], wait="dialed")).json()
    failed = (await create_call(stack, account.headers, NUMBERS[1], wait="dialed")).json()
    assert (ok["status"], failed["status"]) == ("success", "failed")
    uid = account.user.id

    # Visibility is eventually consistent: wait for it, within a bound.
    query = f"DialerUserId='{uid}' AND DialerCallStatus='failed'"
    found = await wait_until(lambda: _expect(stack, query, [failed["call_session_id"]]), timeout=15)
    assert found
    assert await wait_until(
        lambda: _expect(stack, f"DialerRequestId='{ok['request_id']}'", [ok["call_session_id"]]),
        timeout=15,
    )
    both = await wait_until(
        lambda: _expect(
            stack,
            f"DialerUserId='{uid}'",
            sorted([ok["call_session_id"], failed["call_session_id"]]),
        ),
        timeout=15,
    )
    assert both
    # Another user's filter does not find them.
    other = make_account(stack.engine)
    assert await _ids(stack, f"DialerUserId='{other.user.id}'") == []

    for sid in (ok["call_session_id"], failed["call_session_id"]):
        desc = await stack.client.get_workflow_handle(sid).describe()
        values = {
            pair.key.name: str(pair.value)
            for pair in desc.typed_search_attributes.search_attributes
        }
        assert values["DialerUserId"] == str(uid)
        assert values["DialerProvider"] == "simulated"
        visible = [
            *values.values(),
            await desc.static_summary() or "",
            await desc.static_details() or "",
        ]
        for value in visible:
            assert not any(t in value for t in TELLTALES), value
        assert await desc.static_summary()


async def _expect(stack: Stack, query: str, expected: list[str]) -> bool:
    return sorted(await _ids(stack, query)) == sorted(expected)
