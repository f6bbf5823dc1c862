from __future__ import annotations

from tests.support.accounts import make_account
from tests.support.stack import Stack


async def test_create_call_dialed(stack: Stack) -> None:
    account = make_account(stack.engine)
    resp = await stack.http.post(
        "/api/call/create_call",
        params={"phoneNumber": "+1 202-555-0100", "wait": "dialed"},
        headers=account.headers,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "success"
    assert body["target_number"] == "+12025550100"
    assert body["telephony_leg_id"]
