"""A call's context over HTTP on the dev server: create_call's JSON body (variables and
metadata) stored, echoed and part of the Idempotency-Key; its limits as 422s that write
nothing; agents' and workflows' media stream URLs; campaigns passing their variables and
external ids on; and, with the twilio provider, the TwiML a Twilio-compatible server receives
holding the agent's URL and the call's parameters, or no call at all without a URL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from contracts import context
from store.models import CallSession
from tests.fakes.twilio_server import FakeTwilio
from tests.support.accounts import Account, make_account
from tests.support.rows import terminal_row
from tests.support.stack import Stack, StackFactory, create_call
from tests.support.twilio import twilio_settings
from tests.support.waiting import wait_until

AGENTS = "/api/v1/agents"
FLOWS = "/api/v1/workflows"
CAMPAIGNS = "/api/v1/batch-call/create"
TO = "+12025550100"
VARIABLES = {"first_name": "Ada", "balance_due": 42.5, "visits": 3, "vip": True}
METADATA = {"crm_contact": "C-1029"}


def sessions_of(stack: Stack, account: Account) -> int:
    with Session(stack.engine) as session:
        return session.exec(
            select(func.count())
            .select_from(CallSession)
            .where(CallSession.user_id == account.user.id)
        ).one()


async def analytics(stack: Stack, account: Account, **query: str) -> dict[str, Any]:
    resp = await stack.http.get("/api/v1/call-analytics", params=query, headers=account.headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def new_agent(stack: Stack, account: Account, **fields: Any) -> dict[str, Any]:
    resp = await stack.http.post(AGENTS, json={"name": "agent", **fields}, headers=account.headers)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_variables_and_metadata_are_stored_and_returned(stack: Stack) -> None:
    account = make_account(stack.engine)
    resp = await create_call(
        stack, account.headers, TO, body={"variables": VARIABLES, "metadata": METADATA}
    )
    assert resp.status_code == 200, resp.text
    sid = resp.json()["call_session_id"]
    await wait_until(terminal_row(stack.engine, sid))

    one = await analytics(stack, account, call_session_id=sid)
    assert one["variables"] == VARIABLES  # types kept: 42.5, 3 and true stay what they were
    assert one["metadata"] == METADATA
    listed = await analytics(stack, account)
    assert [c["variables"] for c in listed["items"] if c["call_session_id"] == sid] == [VARIABLES]

    # A call without a body has neither, as before.
    plain = await create_call(stack, account.headers, TO)
    assert plain.status_code == 200
    bare = await analytics(stack, account, call_session_id=plain.json()["call_session_id"])
    assert bare["variables"] == {} and bare["metadata"] == {}


async def test_idempotency_key_covers_the_body(stack: Stack) -> None:
    account = make_account(stack.engine)
    key = f"ctx-{uuid.uuid4()}"
    body = {"variables": {"first_name": "Ada"}, "metadata": METADATA}
    first = await create_call(stack, account.headers, TO, idempotency_key=key, body=body)
    again = await create_call(stack, account.headers, TO, idempotency_key=key, body=body)
    assert first.status_code == again.status_code == 200
    assert again.json()["call_session_id"] == first.json()["call_session_id"]

    for other in (
        {"variables": {"first_name": "Grace"}, "metadata": METADATA},
        {"variables": {"first_name": "Ada"}},  # metadata is part of the request too
        None,  # no body at all
    ):
        conflict = await create_call(stack, account.headers, TO, idempotency_key=key, body=other)
        assert conflict.status_code == 409, (other, conflict.text)
        assert "Idempotency-Key" in conflict.json()["detail"]
    assert sessions_of(stack, account) == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"variables": {"1st": "x"}}, "not a valid name"),
        ({"variables": {"a" * 65: "x"}}, "not a valid name"),
        ({"variables": {"call_session_id": "x"}}, "reserved"),
        ({"variables": {"campaign_id": "x"}}, "reserved"),
        ({"variables": {f"v{i}": i for i in range(context.MAX_VARIABLES + 1)}}, "at most 32"),
        ({"variables": {"note": "x" * (context.MAX_VARIABLE_CHARS + 1)}}, "longer than 500"),
        ({"variables": {f"v{i}": "&" * 100 for i in range(8)}}, "characters of the call's TwiML"),
        ({"variables": {"big": 2**60}}, "send it as a string"),
        ({"variables": {"nested": {"a": 1}}}, "nested must be a string, a number or a boolean"),
        ({"variables": {"nothing": None}}, "nothing must be a string, a number or a boolean"),
        ({"metadata": {"n": 1}}, "'n' must be a string"),
        ({"metadata": {"k" * 41: "v"}}, "1 to 40 characters"),
        ({"metadata": {"v": "x" * 501}}, "longer than 500"),
        ({"variable": {"a": "b"}}, "variable"),  # a misspelt field is refused, not ignored
    ],
)
async def test_a_body_beyond_the_limits_is_a_422_naming_it_and_stores_nothing(
    stack: Stack, body: dict[str, Any], says: str
) -> None:
    account = make_account(stack.engine)
    resp = await create_call(stack, account.headers, TO, body=body)
    assert resp.status_code == 422, resp.text
    assert says in resp.text
    assert sessions_of(stack, account) == 0


async def test_agents_and_workflows_take_a_media_stream_url(stack: Stack) -> None:
    account = make_account(stack.engine)
    url = "wss://agent.example.test/media/{call_session_id}?r={request_id}"
    agent = await new_agent(stack, account, media_stream_url=url)
    assert agent["media_stream_url"] == url
    listed = (await stack.http.get(AGENTS, headers=account.headers)).json()
    assert [a["media_stream_url"] for a in listed] == [url]

    patched = await stack.http.patch(
        f"{AGENTS}/{agent['id']}", json={"name": "renamed"}, headers=account.headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "renamed" and patched.json()["media_stream_url"] == url
    cleared = await stack.http.patch(
        f"{AGENTS}/{agent['id']}", json={"media_stream_url": None}, headers=account.headers
    )
    assert cleared.json()["media_stream_url"] is None

    flow = await stack.http.post(
        FLOWS,
        json={"name": "flow", "media_stream_url": "ws://127.0.0.1:9/x"},
        headers=account.headers,
    )
    assert flow.status_code == 201 and flow.json()["media_stream_url"] == "ws://127.0.0.1:9/x"
    changed = await stack.http.patch(
        f"{FLOWS}/{flow.json()['id']}",
        json={"media_stream_url": "wss://other.example.test/"},
        headers=account.headers,
    )
    assert changed.json()["media_stream_url"] == "wss://other.example.test/"

    # Another user's agent is a missing agent.
    stranger = make_account(stack.engine)
    foreign = await stack.http.patch(
        f"{AGENTS}/{agent['id']}", json={"name": "mine"}, headers=stranger.headers
    )
    assert foreign.status_code == 404


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://agent.example.test/media", "ws:// or wss://"),
        ("ftp://agent.example.test/", "ws:// or wss://"),
        ("wss:///media", "needs a host"),
        ("wss://agent.example.test/{user_id}", "placeholders"),
        ("wss://agent.example.test/a b", "spaces"),
        ("wss://agent.example.test:port/", "cannot be read"),
        ("wss://agent.example.test/" + "a" * 1000, "longer than 1000"),
    ],
)
async def test_a_media_stream_url_that_cannot_be_used_is_a_422(
    stack: Stack, url: str, says: str
) -> None:
    account = make_account(stack.engine)
    resp = await stack.http.post(
        AGENTS, json={"name": "agent", "media_stream_url": url}, headers=account.headers
    )
    assert resp.status_code == 422, resp.text
    assert says in resp.text
    agent = await new_agent(stack, account)
    patched = await stack.http.patch(
        f"{AGENTS}/{agent['id']}", json={"media_stream_url": url}, headers=account.headers
    )
    assert patched.status_code == 422
    assert (await stack.http.get(AGENTS, headers=account.headers)).json()[0][
        "media_stream_url"
    ] is None


async def test_campaign_calls_carry_the_campaign_and_recipient_context(stack: Stack) -> None:
    account = make_account(stack.engine)
    agent = await new_agent(stack, account)
    resp = await stack.http.post(
        CAMPAIGNS,
        json={
            "batch_name": "renewals",
            "agent_id": agent["id"],
            "variables": {"campaign_name": "renewals", "discount": 10, "tone": "warm"},
            "options": {"calls_per_second": 50},
            "recipients": [
                {
                    "phone_number": "+12025550110",
                    "external_id": "crm-1",
                    "variables": {"first_name": "Ada", "discount": 15, "tone": None},
                },
                {"phone_number": "+12025550111"},
                {"phone_number": "+12025550112", "variables": {"call_session_id": "x"}},
            ],
        },
        headers=account.headers,
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["accepted"] == 2
    assert [r["row"] for r in created["rejected"]] == [3]
    assert "reserved" in created["rejected"][0]["reason"]
    campaign_id = created["campaign"]["id"]
    assert created["campaign"]["variables"] == {
        "campaign_name": "renewals",
        "discount": 10,
        "tone": "warm",
    }

    async def both_calls() -> list[dict[str, Any]] | None:
        page = await analytics(stack, account, campaign_id=campaign_id)
        return page["items"] if page["total"] == 2 else None

    calls = await wait_until(both_calls)
    by_meta = {c["metadata"].get("external_id"): c for c in calls}
    assert by_meta["crm-1"]["variables"] == {
        "campaign_name": "renewals",
        "discount": 15,  # the recipient's own wins
        "first_name": "Ada",
    }  # and its null removed the campaign's tone
    assert by_meta[None]["variables"] == {
        "campaign_name": "renewals",
        "discount": 10,
        "tone": "warm",
    }
    assert by_meta[None]["metadata"] == {}


async def test_csv_columns_are_variables_and_must_be_valid_names(stack: Stack) -> None:
    account = make_account(stack.engine)
    agent = await new_agent(stack, account)

    async def upload(csv: str, **form: str) -> httpx.Response:
        return await stack.http.post(
            CAMPAIGNS,
            data={"batch_name": "csv", "agent_id": agent["id"], **form},
            files={"file": ("r.csv", csv.encode(), "text/csv")},
            headers=account.headers,
        )

    bad = await upload("phone_number,first name\n+12025550120,Ada\n")
    assert bad.status_code == 422
    assert "'first name'" in bad.json()["detail"]
    reserved = await upload("phone_number,request_id\n+12025550120,x\n")
    assert reserved.status_code == 422 and "reserved" in reserved.json()["detail"]

    ok = await upload(
        "phone_number,external_id,first_name,plan\n+12025550121,crm-9,Ada,\n",
        variables='{"plan": "gold", "campaign_name": "csv"}',
    )
    assert ok.status_code == 201, ok.text
    campaign_id = ok.json()["campaign"]["id"]

    async def the_call() -> dict[str, Any] | None:
        page = await analytics(stack, account, campaign_id=campaign_id)
        return page["items"][0] if page["total"] else None

    call = await wait_until(the_call)
    # An empty cell leaves the campaign's value; CSV cells are strings.
    assert call["variables"] == {"plan": "gold", "campaign_name": "csv", "first_name": "Ada"}
    assert call["metadata"] == {"external_id": "crm-9"}


# --- with the twilio provider -------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    server = FakeTwilio().start()
    yield server
    server.stop()


async def test_twiml_holds_the_agents_url_and_the_calls_parameters(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    async with stack_factory(**twilio_settings(fake)) as stack:
        account = make_account(stack.engine)
        agent = await new_agent(
            stack, account, media_stream_url="wss://agent.example.test/s/{call_session_id}"
        )
        variables = {"first_name": 'Ada "A" & co', "vip": True, "balance_due": 42.5}
        resp = await create_call(
            stack,
            account.headers,
            TO,
            wait="dialed",
            agent_id=agent["id"],
            body={"variables": variables, "metadata": METADATA},
        )
        body = resp.json()
        assert body["status"] == "success", body
        (placed,) = fake.calls_for(body["call_session_id"])
        stream = ElementTree.fromstring(placed.params["Twiml"][0]).find("./Connect/Stream")
        assert stream is not None
        assert stream.get("url") == f"wss://agent.example.test/s/{body['call_session_id']}"
        params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        assert params == {
            "request_id": body["request_id"],
            "call_session_id": body["call_session_id"],
            "user_id": str(account.user.id),
            "agent_id": agent["id"],
            "first_name": 'Ada "A" & co',
            "vip": "true",
            "balance_due": "42.5",
        }
        # Metadata is the client's own: never sent to the carrier.
        assert "C-1029" not in str(placed.params)


async def test_no_url_anywhere_fails_the_call_before_any_dial(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    async with stack_factory(**twilio_settings(fake, media_stream_url=None)) as stack:
        account = make_account(stack.engine)
        agent = await new_agent(stack, account)  # no media_stream_url, and no default
        resp = await create_call(stack, account.headers, TO, agent_id=agent["id"], wait="dialed")
        body = resp.json()
        assert resp.status_code == 200
        assert body["status"] == "failed" and body["failure_code"] == "no_media_stream", body
        assert "media_stream_url" in body["failure_reason"]
        assert fake.created == 0  # nobody was called into silence


async def test_the_default_url_is_used_when_the_agent_has_none(
    stack_factory: StackFactory, fake: FakeTwilio
) -> None:
    default = "wss://default.example.test/{request_id}"
    async with stack_factory(**twilio_settings(fake, media_stream_url=default)) as stack:
        account = make_account(stack.engine)
        resp = await create_call(stack, account.headers, TO, wait="dialed")
        body = resp.json()
        assert body["status"] == "success", body
        (placed,) = fake.calls_for(body["call_session_id"])
        stream = ElementTree.fromstring(placed.params["Twiml"][0]).find("./Connect/Stream")
        assert stream is not None
        assert stream.get("url") == f"wss://default.example.test/{body['request_id']}"
