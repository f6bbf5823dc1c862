"""The routes around create_call: lines, mappings, agents, workflows, suppressions, /me, /health,
/ready; and on every route that takes an id, another user's id behaves like a missing one."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.accounts import fresh_line_number, make_account
from tests.support.rows import sessions_of
from tests.support.stack import Stack, create_call

DEFAULT_LINE = "+12025550199"  # make_account's line


async def _post(
    stack: Stack, path: str, headers: dict[str, str], json: dict[str, Any]
) -> dict[str, Any]:
    resp = await stack.http.post(path, json=json, headers=headers)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_phone_lines(stack: Stack) -> None:
    account = make_account(stack.engine)
    h = account.headers
    number = fresh_line_number()  # e.g. +13035550110
    spelled = f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    line = await _post(stack, "/api/v1/phone", h, {"number": spelled, "label": "desk"})
    assert line["number"] == number
    assert line["active"] is True and line["provider"] == "simulated" and line["label"] == "desk"

    dup = await stack.http.post(
        "/api/v1/phone", json={"number": f"+1 {number[2:5]} {number[5:8]} {number[8:]}"}, headers=h
    )
    assert dup.status_code == 409 and dup.json()["detail"]
    for bad in ("12", "not a number", "+1202555"):
        resp = await stack.http.post("/api/v1/phone", json={"number": bad}, headers=h)
        assert resp.status_code == 422, bad
    listed = (await stack.http.get("/api/v1/phone", headers=h)).json()
    assert [x["number"] for x in listed] == [DEFAULT_LINE, number]

    off = await stack.http.patch(f"/api/v1/phone/{line['id']}", json={"active": False}, headers=h)
    assert off.status_code == 200 and off.json()["active"] is False
    assert (await stack.http.get("/api/v1/phone", headers=h)).json()[1]["active"] is False
    on = await stack.http.patch(f"/api/v1/phone/{line['id']}", json={"active": True}, headers=h)
    assert on.status_code == 200 and on.json()["active"] is True
    assert on.json()["label"] == "desk"

    # A number is one account's line: another user gets the answer of a duplicate.
    other = make_account(stack.engine)
    taken = await stack.http.post("/api/v1/phone", json={"number": number}, headers=other.headers)
    assert (taken.status_code, taken.json()) == (dup.status_code, dup.json())


async def test_mappings_resolve_the_from_number(stack: Stack) -> None:
    account = make_account(stack.engine)
    h = account.headers
    number2, number3 = fresh_line_number(), fresh_line_number()
    line2 = await _post(stack, "/api/v1/phone", h, {"number": number2})
    line3 = await _post(stack, "/api/v1/phone", h, {"number": number3})
    agent = await _post(stack, "/api/v1/agents", h, {"name": "Ann"})
    flow = await _post(stack, "/api/v1/workflows", h, {"name": "Renewals"})
    assert agent["phone_number_id"] is None

    both = {"phone_number_id": line2["id"], "agent_id": agent["id"], "workflow_id": flow["id"]}
    resp = await stack.http.post("/api/v1/phone/mapping", json=both, headers=h)
    assert resp.status_code == 422
    resp = await stack.http.post("/api/v1/phone/mapping", json={"phone_number_id": line2["id"]})
    assert resp.status_code == 401
    resp = await stack.http.post(
        "/api/v1/phone/mapping", json={"phone_number_id": line2["id"]}, headers=h
    )
    assert resp.status_code == 422

    first = await _post(
        stack, "/api/v1/phone/mapping", h, {"phone_number_id": line3["id"], "agent_id": agent["id"]}
    )
    # Mapping the agent again replaces its line; it never holds two.
    second = await _post(
        stack, "/api/v1/phone/mapping", h, {"phone_number_id": line2["id"], "agent_id": agent["id"]}
    )
    assert second["id"] == first["id"] and second["phone_number_id"] == line2["id"]
    await _post(
        stack,
        "/api/v1/phone/mapping",
        h,
        {"phone_number_id": line3["id"], "workflow_id": flow["id"]},
    )
    agents = (await stack.http.get("/api/v1/agents", headers=h)).json()
    assert [(a["id"], a["phone_number_id"]) for a in agents] == [(agent["id"], line2["id"])]
    flows = (await stack.http.get("/api/v1/workflows", headers=h)).json()
    assert [(f["id"], f["phone_number_id"]) for f in flows] == [(flow["id"], line3["id"])]

    async def from_number(**params: str) -> str:
        resp = await create_call(stack, h, "+12025550100", **params)
        assert resp.status_code == 200 and resp.json()["status"] == "success", resp.text
        number: str = resp.json()["from_phone_number"]
        return number

    # explicit line -> the agent's line -> the workflow's line -> the first active line
    assert await from_number(phone_number_id=line3["id"], agent_id=agent["id"]) == number3
    assert await from_number(agent_id=agent["id"], workflow_id=flow["id"]) == number2
    assert await from_number(workflow_id=flow["id"]) == number3
    assert await from_number() == DEFAULT_LINE
    # The agent's line switched off: its calls fall through to the workflow's line.
    await stack.http.patch(f"/api/v1/phone/{line2['id']}", json={"active": False}, headers=h)
    assert await from_number(agent_id=agent["id"], workflow_id=flow["id"]) == number3


async def test_suppressions(stack: Stack) -> None:
    account = make_account(stack.engine)
    h = account.headers
    for raw in ("+12025550188", "(202) 555-0188"):
        resp = await stack.http.post(
            "/api/v1/suppressions", json={"phone_number": raw, "reason": "asked"}, headers=h
        )
        assert resp.status_code == 201 and resp.json()["phone_number"] == "+12025550188"
    listed = (await stack.http.get("/api/v1/suppressions", headers=h)).json()
    assert [x["phone_number"] for x in listed] == ["+12025550188"]
    bad = await stack.http.post("/api/v1/suppressions", json={"phone_number": "nope"}, headers=h)
    assert bad.status_code == 422

    blocked = await create_call(stack, h, "+12025550188")
    assert blocked.json()["failure_code"] == "suppressed_number"
    # Another user's list does not block my calls.
    other = make_account(stack.engine)
    theirs = await create_call(stack, other.headers, "+12025550188")
    assert theirs.json()["status"] == "success"
    # ... nor can they remove my entry.
    gone = await stack.http.delete("/api/v1/suppressions/%2B12025550188", headers=other.headers)
    assert gone.status_code == 404

    deleted = await stack.http.delete("/api/v1/suppressions/%2B12025550188", headers=h)
    assert deleted.status_code == 204
    again = await stack.http.delete("/api/v1/suppressions/%2B12025550188", headers=h)
    assert again.status_code == 404 and again.json()["detail"]
    assert (await stack.http.get("/api/v1/suppressions", headers=h)).json() == []
    allowed = await create_call(stack, h, "+12025550188")
    assert allowed.json()["status"] == "success"


async def test_me_health_ready(stack: Stack) -> None:
    account = make_account(stack.engine)
    me = await stack.http.get("/api/v1/me", headers={"Authorization": f"Bearer {account.key}"})
    assert me.status_code == 200
    body = me.json()
    assert body["user_id"] == str(account.user.id)
    assert body["email"] == account.user.email
    assert body["api_key_prefix"] and account.key.split("_")[1] == body["api_key_prefix"]
    assert account.key not in me.text
    assert (await stack.http.get("/health")).json() == {"status": "ok"}
    ready = await stack.http.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True


async def test_foreign_ids_behave_like_missing_ones_on_every_route(stack: Stack) -> None:
    me = make_account(stack.engine)
    other = make_account(stack.engine)
    mine = (await stack.http.get("/api/v1/phone", headers=me.headers)).json()[0]["id"]
    my_agent = (await _post(stack, "/api/v1/agents", me.headers, {"name": "mine"}))["id"]
    their_line = (await stack.http.get("/api/v1/phone", headers=other.headers)).json()[0]["id"]
    their_agent = (await _post(stack, "/api/v1/agents", other.headers, {"name": "x"}))["id"]
    their_flow = (await _post(stack, "/api/v1/workflows", other.headers, {"name": "y"}))["id"]
    their_call = (await create_call(stack, other.headers, "+12025550100")).json()

    cases = [
        ("PATCH", "/api/v1/phone/{id}", {"id": their_line}, {"active": False}),
        ("PATCH", "/api/v1/phone/{id}", {"id": their_line}, {"label": "mine now"}),
    ]
    for method, path, ids, body in cases:
        foreign = await stack.http.request(
            method, path.format(**ids), json=body, headers=me.headers
        )
        missing = await stack.http.request(
            method, path.format(id=uuid.uuid4()), json=body, headers=me.headers
        )
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json()

    mapping_bodies = [
        ({"phone_number_id": their_line, "agent_id": my_agent}, "phone_number_id"),
        ({"phone_number_id": mine, "agent_id": their_agent}, "agent_id"),
        ({"phone_number_id": mine, "workflow_id": their_flow}, "workflow_id"),
    ]
    for body, field in mapping_bodies:
        foreign = await stack.http.post("/api/v1/phone/mapping", json=body, headers=me.headers)
        missing = await stack.http.post(
            "/api/v1/phone/mapping", json={**body, field: str(uuid.uuid4())}, headers=me.headers
        )
        assert foreign.status_code == missing.status_code == 404, field
        assert foreign.json() == missing.json()

    for param in ("call_session_id", "request_id"):
        foreign = await stack.http.get(
            "/api/v1/call-analytics", params={param: their_call[param]}, headers=me.headers
        )
        missing = await stack.http.get(
            "/api/v1/call-analytics", params={param: str(uuid.uuid4())}, headers=me.headers
        )
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json()

    # Lists never show another user's rows; the other user's line is untouched.
    page = (await stack.http.get("/api/v1/call-analytics", headers=me.headers)).json()
    assert page["items"] == [] and page["total"] == 0
    assert [
        a["id"] for a in (await stack.http.get("/api/v1/agents", headers=me.headers)).json()
    ] == [my_agent]
    assert (await stack.http.get("/api/v1/workflows", headers=me.headers)).json() == []
    theirs = (await stack.http.get("/api/v1/phone", headers=other.headers)).json()[0]
    assert theirs["active"] is True and theirs["label"] == "test line"
    assert sessions_of(stack.engine, me.user.id) == []
