"""Per-account limits and caller lines that belong to one account (issue 17), over HTTP on
the real dev server: the operator's `dialer users limits`, GET /api/v1/me, a single call
beyond max_concurrent_calls, a campaign that waits for a slot, a number already taken."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from store import accounts
from store.models import CallSession, SimulatedCall
from tests.support.accounts import fresh_line_number, make_account
from tests.support.settings import settings_for
from tests.support.stack import create_call, open_stack
from tests.support.waiting import wait_until

NUMBER = "+12025550100"


async def test_a_call_beyond_max_concurrent_calls_fails_with_its_own_code(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    # Calls that stay in progress for a while, so the first holds the account's one slot.
    settings = settings_for(tmp_path, database_url, simulated_talk_seconds=30.0)
    account = make_account(engine)
    accounts.set_limits(engine, account.user.id, max_concurrent_calls=1, fairness_weight=2.0)
    async with open_stack(settings, engine, dev_env.client) as stack:
        me = (await stack.http.get("/api/v1/me", headers=account.headers)).json()
        assert me["limits"] == {
            "max_concurrent_calls": 1,
            "max_calls_per_second": None,
            "fairness_weight": 2.0,
        }
        assert me["usage"] == {"calls_in_flight": 0}
        url = f"/api/call/create_call?phoneNumber=%2B1{NUMBER[2:]}&wait=dialed"
        first = (await stack.http.post(url, headers=account.headers)).json()
        assert first["status"] == "success", first
        second = (await stack.http.post(url, headers=account.headers)).json()
        assert second["status"] == "failed"
        assert second["failure_code"] == "concurrency_limit"
        assert "max_concurrent_calls" in second["failure_reason"]
        assert second["call_session_id"] and second["request_id"]
        recorded = await stack.http.get(
            f"/api/v1/call-analytics?call_session_id={second['call_session_id']}",
            headers=account.headers,
        )
        assert recorded.json()["failure_code"] == "concurrency_limit"
        me = (await stack.http.get("/api/v1/me", headers=account.headers)).json()
        assert me["usage"] == {"calls_in_flight": 1}
        # Another account is not limited by this one's calls.
        other = make_account(engine)
        free = (await stack.http.post(url, headers=other.headers)).json()
        assert free["status"] == "success", free


async def test_a_campaign_waits_for_a_slot_of_the_account(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, database_url, simulated_talk_seconds=1.0)
    account = make_account(engine)
    accounts.set_limits(engine, account.user.id, max_concurrent_calls=2)
    agent_id = None
    async with open_stack(settings, engine, dev_env.client) as stack:
        agent = await stack.http.post(
            "/api/v1/agents", headers=account.headers, json={"name": "limits"}
        )
        agent_id = agent.json()["id"]
        body = {
            "batch_name": "limited",
            "agent_id": agent_id,
            "recipients": [{"phone_number": f"+1202555{100 + i:04d}"} for i in range(6)],
            "options": {"calls_per_second": 20, "max_concurrency": 6},
        }
        created = await stack.http.post(
            "/api/v1/batch-call/create", headers=account.headers, json=body
        )
        assert created.status_code == 201, created.text
        campaign_id = created.json()["campaign"]["id"]
        seen: list[dict[str, object]] = []

        async def status() -> dict[str, object]:
            answer = await stack.http.get(
                f"/api/v1/batch-call/{campaign_id}/status", headers=account.headers
            )
            seen.append(answer.json())
            return seen[-1]

        async def finished() -> bool:
            return (await status()).get("finished_at") is not None

        await wait_until(finished, timeout=90, interval=0.2)
        assert seen[-1]["state"] == "completed"
        # While the account's two slots were taken, its status said why it waited.
        assert "account_max_concurrent_calls" in {s["waiting_for"] for s in seen}
        assert (
            max(
                s["counts"]["queued"] + s["counts"]["calling"]  # type: ignore[index]
                for s in seen
            )
            <= 2
        )


async def test_a_scheduled_call_waits_for_a_free_slot_up_to_its_latest_at(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    """At its time the account's one slot is taken: a call with a latest_at waits and dials
    once the other call ended; one without a latest_at fails at its time with the limit's
    code, as a single call does at its request."""
    settings = settings_for(tmp_path, database_url, simulated_talk_seconds=6.0)
    account = make_account(engine)
    accounts.set_limits(engine, account.user.id, max_concurrent_calls=1)

    def when(seconds: float) -> str:
        return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()

    async with open_stack(settings, engine, dev_env.client) as stack:
        # Both scheduled before the call that takes the slot: at their time they count it.
        waits = await create_call(
            stack, account.headers, NUMBER, body={"scheduled_at": when(2), "latest_at": when(60)}
        )
        refused = await create_call(stack, account.headers, NUMBER, body={"scheduled_at": when(2)})
        first = await create_call(stack, account.headers, NUMBER, wait="dialed")
        assert first.json()["status"] == "success", first.text
        ids = [r.json()["call_session_id"] for r in (first, waits, refused)]

        def row(i: int) -> CallSession:
            with Session(engine) as session:
                found = session.get(CallSession, uuid.UUID(ids[i]))
                assert found is not None
                return found

        await wait_until(lambda: row(2).status == "failed", timeout=30)
        assert row(2).failure_code == "concurrency_limit"
        assert row(2).telephony_leg_id is None
        await wait_until(lambda: row(1).telephony_leg_id is not None, timeout=60)
        # Dialed only after the first call had ended: the slot was the first call's.
        first_ended = row(0).ended_at
        assert first_ended is not None and row(0).status != "failed"
        with Session(engine) as session:
            dialed = session.exec(
                select(SimulatedCall.created_at).where(
                    SimulatedCall.session_id == uuid.UUID(ids[1])
                )
            ).all()
        assert len(dialed) == 1 and dialed[0] >= first_ended.replace(tzinfo=dialed[0].tzinfo)


async def test_a_number_belongs_to_one_account(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, database_url)
    owner, other = make_account(engine, with_line=False), make_account(engine, with_line=False)
    number = fresh_line_number()
    async with open_stack(settings, engine, dev_env.client, workers=False) as stack:
        mine = await stack.http.post(
            "/api/v1/phone", headers=owner.headers, json={"number": number}
        )
        assert mine.status_code == 201
        again = await stack.http.post(
            "/api/v1/phone", headers=owner.headers, json={"number": number}
        )
        taken = await stack.http.post(
            "/api/v1/phone", headers=other.headers, json={"number": number}
        )
        # The same answer as a duplicate of one's own: nothing more is given away.
        assert (again.status_code, again.json()) == (taken.status_code, taken.json())
        assert taken.status_code == 409
        lines = await stack.http.get("/api/v1/phone", headers=other.headers)
        assert lines.json() == []
