"""The customer's webhooks through the API, the workflows and a real HTTP receiver process
(tests/support/webhook_receiver.py), on the dev server, SQLite and PostgreSQL. Signatures are
verified with the standardwebhooks library."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from store.db import session_scope
from store.models import Agent
from tests.support.accounts import Account, make_account
from tests.support.stack import Stack, StackFactory, create_call
from tests.support.waiting import wait_until
from tests.support.webhooks import Receiver, delivered, events_of, receiver, verified

CALL_EVENTS = ["call.dialed", "call.ringing", "call.answered", "call.ended"]
# Retries in fractions of a second, so a test sees the backoff without waiting for it.
FAST = {
    "webhook_retry_initial_seconds": 0.2,
    "webhook_retry_max_seconds": 1.0,
    "webhook_attempt_timeout_seconds": 3.0,
}


def make_agent(account: Account, stack: Stack) -> uuid.UUID:
    with session_scope(stack.engine) as session:
        agent = Agent(user_id=account.user.id, name="webhook agent")
        session.add(agent)
    return agent.id


async def add_endpoint(stack: Stack, account: Account, url: str, **body: Any) -> dict[str, Any]:
    resp = await stack.http.post(
        "/api/v1/webhooks", json={"url": url, **body}, headers=account.headers
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["cache-control"] == "no-store"
    created: dict[str, Any] = resp.json()
    assert created["secret"].startswith("whsec_")
    return created


async def wait_events(r: Receiver, key: str, value: str, types: list[str]) -> list[str]:
    async def arrived() -> list[str] | None:
        got = events_of(r.attempts(), key, value)
        return got if len(got) >= len(types) else None

    try:
        return await wait_until(arrived, timeout=60, interval=0.1)
    except AssertionError:
        raise AssertionError(f"got {events_of(r.attempts(), key, value)}") from None


async def test_every_event_of_a_call_and_a_campaign_arrives_once_in_order_signed(
    stack_factory: StackFactory, tmp_path: Path
) -> None:
    with receiver(tmp_path) as r:
        async with stack_factory(**FAST) as stack:
            account = make_account(stack.engine)
            endpoint = await add_endpoint(stack, account, r.url)
            secret = endpoint["secret"]

            ok = await create_call(
                stack, account.headers, "+12025550100", body={"metadata": {"crm": "lead-7"}}
            )
            rejected = await create_call(stack, account.headers, "+12025550103")
            call_id = ok.json()["call_session_id"]
            failed_id = rejected.json()["call_session_id"]
            assert await wait_events(r, "call_session_id", call_id, CALL_EVENTS) == CALL_EVENTS
            assert await wait_events(r, "call_session_id", failed_id, ["call.failed"]) == [
                "call.failed"
            ]

            agent_id = make_agent(account, stack)
            resp = await stack.http.post(
                "/api/v1/batch-call/create",
                json={
                    "batch_name": "hooks",
                    "agent_id": str(agent_id),
                    "recipients": [
                        {"phone_number": "+12025550111", "external_id": "r-1"},
                        {"phone_number": "+12025550112", "external_id": "r-2"},
                    ],
                },
                headers=account.headers,
            )
            assert resp.status_code == 201, resp.text
            campaign_id = resp.json()["campaign"]["id"]
            want = ["campaign.started", "campaign.completed"]
            got = await wait_events(r, "campaign_id", campaign_id, want + CALL_EVENTS * 2)
            campaign_only = [t for t in got if t.startswith("campaign.")]
            assert campaign_only == want

            log = r.attempts()
            # Once each: every attempt was answered 2xx, so nothing came twice.
            ids = [a["headers"]["webhook-id"] for a in log]
            assert len(ids) == len(set(ids)), ids
            for attempt in log:
                event = verified(attempt, secret)
                assert set(event) == {"type", "timestamp", "data"}
            ended = next(
                json.loads(a["body"])
                for a in delivered(log)
                if json.loads(a["body"])["type"] == "call.ended"
                and json.loads(a["body"])["data"]["call_session_id"] == call_id
            )["data"]
            assert ended["call_status"] == "completed"
            assert ended["duration_seconds"] is not None
            assert ended["metadata"] == {"crm": "lead-7"}
            assert ended["request_id"] == ok.json()["request_id"]
            # Not opted in: the numbers only as their last four digits.
            assert ended["to_number"] == "***0100"
            assert "+1202555" not in "".join(a["body"] for a in log)
            failed = json.loads(next(a["body"] for a in log if "call.failed" in a["body"]))["data"]
            assert failed["failure_code"] == "provider_rejected"
            campaign_calls = [
                json.loads(a["body"])["data"]
                for a in delivered(log)
                if json.loads(a["body"])["type"] == "call.dialed"
                and json.loads(a["body"])["data"]["campaign_id"] == campaign_id
            ]
            assert sorted(c["metadata"]["external_id"] for c in campaign_calls) == ["r-1", "r-2"]
            completed = next(
                json.loads(a["body"])["data"]
                for a in log
                if json.loads(a["body"])["type"] == "campaign.completed"
            )
            assert completed["counts"]["completed"] == 2

            page = await stack.http.get(
                f"/api/v1/webhooks/{endpoint['id']}/deliveries",
                params={"page_size": 200},
                headers=account.headers,
            )
            assert page.status_code == 200
            assert {d["state"] for d in page.json()["items"]} == {"delivered"}
            assert page.json()["total"] == len(ids)


async def test_a_receiver_failing_its_first_attempts_gets_the_event_after_the_backoff(
    stack_factory: StackFactory, tmp_path: Path
) -> None:
    with receiver(tmp_path, fail_first=2) as r:
        async with stack_factory(**FAST) as stack:
            account = make_account(stack.engine)
            endpoint = await add_endpoint(stack, account, r.url, events=["call.failed"])
            resp = await create_call(stack, account.headers, "+12025550103")
            call_id = resp.json()["call_session_id"]
            await wait_events(r, "call_session_id", call_id, ["call.failed"])
            attempts = r.attempts()
            assert [a["status"] for a in attempts] == [500, 500, 204]
            assert len({a["headers"]["webhook-id"] for a in attempts}) == 1
            gaps = [b["at"] - a["at"] for a, b in zip(attempts, attempts[1:], strict=False)]
            # Equal jitter: at least half of 0.2 s, then of 0.4 s.
            assert gaps[0] >= 0.09 and gaps[1] >= 0.19, gaps
            for attempt in attempts:  # a retry is signed anew, with its own timestamp
                verified(attempt, endpoint["secret"])

            async def logged() -> dict[str, Any] | None:
                page = await stack.http.get(
                    f"/api/v1/webhooks/{endpoint['id']}/deliveries", headers=account.headers
                )
                item: dict[str, Any] = page.json()["items"][0]
                return item if item["state"] == "delivered" else None

            item = await wait_until(logged, timeout=10)
            assert item["attempts"] == 3 and item["last_status_code"] == 204
            assert item["event_type"] == "call.failed"

            # Redelivery: the same id and body once more.
            again = await stack.http.post(
                f"/api/v1/webhooks/{endpoint['id']}/deliveries/{item['id']}/redeliver",
                headers=account.headers,
            )
            assert again.status_code == 202, again.text
            await wait_until(lambda: len(r.attempts()) == 4, timeout=20)
            last = r.attempts()[-1]
            assert last["headers"]["webhook-id"] == attempts[0]["headers"]["webhook-id"]
            assert last["body"] == attempts[0]["body"]


async def test_rotation_signs_with_both_secrets_during_the_grace(
    stack_factory: StackFactory, tmp_path: Path
) -> None:
    with receiver(tmp_path) as r:
        async with stack_factory(**FAST) as stack:
            account = make_account(stack.engine)
            endpoint = await add_endpoint(stack, account, r.url, events=["call.failed"])
            rotated = await stack.http.post(
                f"/api/v1/webhooks/{endpoint['id']}/rotate-secret", headers=account.headers
            )
            assert rotated.status_code == 200, rotated.text
            assert rotated.headers["cache-control"] == "no-store"
            new = rotated.json()
            assert new["secret"] != endpoint["secret"]
            assert new["previous_secret_expires_at"] is not None
            resp = await create_call(stack, account.headers, "+12025550103")
            await wait_events(r, "call_session_id", resp.json()["call_session_id"], ["x"])
            attempt = r.attempts()[0]
            assert len(attempt["headers"]["webhook-signature"].split(" ")) == 2
            # Either secret verifies on its own: receivers switch over when they like.
            verified(attempt, endpoint["secret"])
            verified(attempt, new["secret"])
            listed = await stack.http.get("/api/v1/webhooks", headers=account.headers)
            assert "secret" not in listed.json()[0]
            assert endpoint["secret"] not in listed.text and new["secret"] not in listed.text


async def test_endpoint_routes_refuse_what_they_do_not_know_and_hide_other_users(
    stack: Stack,
) -> None:
    alice, bob = make_account(stack.engine), make_account(stack.engine)
    base = "/api/v1/webhooks"
    url = "http://127.0.0.1:9/hook"
    for body in (
        {"url": url, "events": ["call.exploded"]},
        {"url": url, "colour": "blue"},
        {"url": "ftp://example.com/x"},
        {"url": "http://user:pw@example.com/x"},
        {"url": url, "events": []},
    ):
        resp = await stack.http.post(base, json=body, headers=alice.headers)
        assert resp.status_code == 422, (body, resp.text)
    created = (await stack.http.post(base, json={"url": url}, headers=alice.headers)).json()
    hook = f"{base}/{created['id']}"
    missing = f"{base}/{uuid.uuid4()}"
    for path in (hook, missing):
        assert (await stack.http.get(path, headers=bob.headers)).status_code == 404
        patch = await stack.http.patch(path, json={"enabled": False}, headers=bob.headers)
        assert patch.status_code == 404
        assert (await stack.http.delete(path, headers=bob.headers)).status_code == 404
        rotate = await stack.http.post(f"{path}/rotate-secret", headers=bob.headers)
        assert rotate.status_code == 404
        deliveries = await stack.http.get(f"{path}/deliveries", headers=bob.headers)
        assert deliveries.status_code == 404
        redeliver = await stack.http.post(
            f"{path}/deliveries/{uuid.uuid4()}/redeliver", headers=bob.headers
        )
        assert redeliver.status_code == 404
    assert (await stack.http.get(base, headers=bob.headers)).json() == []

    patched = await stack.http.patch(
        hook, json={"enabled": False, "events": ["call.ended"]}, headers=alice.headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["enabled"] is False
    assert patched.json()["disabled_reason"] == "disabled by the user"
    assert patched.json()["events"] == ["call.ended"]
    bad = await stack.http.patch(hook, json={"secret": "mine"}, headers=alice.headers)
    assert bad.status_code == 422
    enabled = await stack.http.patch(hook, json={"enabled": True}, headers=alice.headers)
    assert enabled.json()["enabled"] is True and enabled.json()["disabled_reason"] is None
    assert (await stack.http.delete(hook, headers=alice.headers)).status_code == 204
    assert (await stack.http.get(hook, headers=alice.headers)).status_code == 404


@pytest.mark.parametrize("opt_in", [True])
async def test_phone_numbers_only_for_an_endpoint_that_opted_in(
    stack_factory: StackFactory, tmp_path: Path, opt_in: bool
) -> None:
    with receiver(tmp_path) as r:
        async with stack_factory(**FAST) as stack:
            account = make_account(stack.engine)
            await add_endpoint(
                stack, account, r.url, events=["call.failed"], include_phone_numbers=opt_in
            )
            resp = await create_call(stack, account.headers, "+12025550103")
            await wait_events(r, "call_session_id", resp.json()["call_session_id"], ["x"])
            data = json.loads(r.attempts()[0]["body"])["data"]
            assert data["to_number"] == "+12025550103"
