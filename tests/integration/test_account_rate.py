"""An account's max_calls_per_second (issue 17), over HTTP on the real dev server: a single
call beyond it fails at once with its own failure_code, ids recorded, nothing dialed; a
campaign's pace is held to the account's rate when that is lower than its own."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment

from store import accounts
from store.models import CallSession, SimulatedCall
from tests.support.accounts import make_account
from tests.support.settings import settings_for
from tests.support.stack import open_stack
from tests.support.waiting import wait_until

URL = "/api/call/create_call?phoneNumber=%2B12025550101&wait=accepted"


def dials_of(engine: Engine, user_id: uuid.UUID) -> list[float]:
    """The carrier's ledger: when each of the account's calls reached it (Unix seconds)."""
    with Session(engine) as session:
        rows = session.exec(
            select(SimulatedCall.created_at)
            .join(CallSession, col(CallSession.id) == col(SimulatedCall.session_id))
            .where(CallSession.user_id == user_id)
        ).all()
    return sorted(r.timestamp() for r in rows)


async def test_a_call_beyond_max_calls_per_second_fails_with_its_own_code(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, database_url)
    account = make_account(engine)
    # One call per 10 s: the second call of a burst is beyond it whatever the machine's pace.
    accounts.set_limits(engine, account.user.id, max_calls_per_second=0.1)
    async with open_stack(settings, engine, dev_env.client) as stack:
        me = (await stack.http.get("/api/v1/me", headers=account.headers)).json()
        assert me["limits"]["max_calls_per_second"] == 0.1
        first = await stack.http.post(URL, headers=account.headers)
        second = await stack.http.post(URL, headers=account.headers)
        assert first.json()["status"] != "failed", first.json()
        assert second.status_code == 200
        refused = second.json()
        assert refused["status"] == "failed", refused
        assert refused["failure_code"] == "calls_per_second_limit"
        assert "max_calls_per_second" in refused["failure_reason"]
        assert refused["call_session_id"] and refused["request_id"]
        recorded = await stack.http.get(
            f"/api/v1/call-analytics?call_session_id={refused['call_session_id']}",
            headers=account.headers,
        )
        assert recorded.json()["failure_code"] == "calls_per_second_limit"
        # Another account is not limited by this one's calls.
        other = make_account(engine)
        free = (await stack.http.post(URL, headers=other.headers)).json()
        assert free["status"] != "failed", free
        await wait_until(lambda: len(dials_of(engine, account.user.id)) >= 1, timeout=30)
        with Session(engine) as session:
            dialed = session.exec(
                select(SimulatedCall).where(
                    SimulatedCall.session_id == uuid.UUID(refused["call_session_id"])
                )
            ).all()
        assert dialed == []  # nothing reached the carrier


async def test_a_campaign_is_paced_at_the_account_rate_when_it_is_lower(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, database_url, simulated_talk_seconds=0.2)
    account = make_account(engine)
    accounts.set_limits(engine, account.user.id, max_calls_per_second=2)
    async with open_stack(settings, engine, dev_env.client) as stack:
        agent = await stack.http.post(
            "/api/v1/agents", headers=account.headers, json={"name": "paced"}
        )
        body = {
            "batch_name": "account-paced",
            "agent_id": agent.json()["id"],
            "recipients": [{"phone_number": f"+1202555{110 + i:04d}"} for i in range(6)],
            "options": {"calls_per_second": 20, "max_concurrency": 6},
        }
        created = await stack.http.post(
            "/api/v1/batch-call/create", headers=account.headers, json=body
        )
        assert created.status_code == 201, created.text
        await wait_until(lambda: len(dials_of(engine, account.user.id)) >= 6, timeout=60)
        dials = dials_of(engine, account.user.id)
        # At the campaign's own 20/s all six would go within 0.3 s; at 2/s they take 2.5 s,
        # and no one-second window holds more than two.
        assert dials[-1] - dials[0] >= 2.0, dials
        assert max(sum(1 for d in dials if t <= d < t + 1.0) for t in dials) <= 2, dials
