"""Campaigns through the API on the real dev server, against SQLite and PostgreSQL: a 1,000
recipient campaign with one dial each, CSV uploads with bad rows, control, isolation."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.db import session_scope
from store.models import (
    Agent,
    CallSession,
    Campaign,
    CampaignRecipient,
    SimulatedCall,
    SuppressedNumber,
)
from tests.support.accounts import Account, make_account
from tests.support.campaigns import fictional_numbers
from tests.support.stack import Stack
from tests.support.waiting import wait_until

CREATE = "/api/v1/batch-call/create"


def make_agent(engine: Engine, account: Account) -> uuid.UUID:
    with session_scope(engine) as session:
        agent = Agent(user_id=account.user.id, name="campaign agent")
        session.add(agent)
    return agent.id


def finished(engine: Engine, campaign_id: str) -> Callable[[], bool]:
    """A predicate for wait_until: the campaign is over, its last call ended (read from the
    database, not over HTTP, so polling does not spend the key's rate limit)."""

    def check() -> bool:
        with Session(engine) as session:
            row = session.get(Campaign, uuid.UUID(campaign_id))
            assert row is not None
            return row.finished_at is not None

    return check


# Minutes of CPU on a shared machine: one backend carries the big run; the smaller campaign
# tests below run on PostgreSQL too.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_thousand_recipients_one_dial_each(stack: Stack) -> None:
    account = make_account(stack.engine)
    agent_id = make_agent(stack.engine, account)
    numbers = fictional_numbers(1000)
    resp = await stack.http.post(
        CREATE,
        json={
            "batch_name": "thousand",
            "agent_id": str(agent_id),
            "recipients": [
                {"phone_number": n, "external_id": f"r{i}"} for i, n in enumerate(numbers)
            ],
            "options": {"calls_per_second": 100, "max_concurrency": 200},
        },
        headers=account.headers,
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert (body["accepted"], body["skipped"], body["rejected"]) == (1000, 0, [])
    campaign_id = body["campaign"]["id"]
    # Minutes on a busy shared machine: the bound is generous, the assertions are not.
    await wait_until(finished(stack.engine, campaign_id), timeout=600, interval=0.5)

    status = (
        await stack.http.get(f"/api/v1/batch-call/{campaign_id}/status", headers=account.headers)
    ).json()
    assert status["state"] == "completed"
    assert status["counts"]["completed"] == 1000
    assert sum(status["counts"].values()) == status["total_recipients"] == 1000
    with Session(stack.engine) as session:
        session_ids = session.exec(
            select(CampaignRecipient.call_session_id).where(
                CampaignRecipient.campaign_id == uuid.UUID(campaign_id)
            )
        ).all()
        assert len(set(session_ids)) == 1000 and None not in session_ids
        # The carrier's ledger: exactly one dial per recipient, to each number once.
        dials = session.exec(
            select(SimulatedCall.session_id, SimulatedCall.to_number).where(
                col(SimulatedCall.session_id).in_(session_ids)
            )
        ).all()
        assert len(dials) == 1000
        assert Counter(to for _, to in dials) == Counter(numbers)
        calls = session.exec(
            select(func.count())
            .select_from(CallSession)
            .where(CallSession.campaign_id == uuid.UUID(campaign_id))
        ).one()
        assert calls == 1000

    # Every call of the campaign is found in Temporal by its search attribute.
    query = f"DialerCampaignId = '{campaign_id}' AND WorkflowType = 'CreateCallWorkflow'"

    async def all_indexed() -> bool:
        counted: int = (await stack.client.count_workflows(query)).count
        return counted == 1000

    await wait_until(all_indexed, timeout=60, interval=0.5)


CSV_WITH_BAD_ROWS = (
    "phone_number,first_name,external_id\n"
    "+12025550150,Ada,c-1\n"  # line 2: good
    "not a number,Bob,c-2\n"  # line 3: unparseable
    ",Cy,c-3\n"  # line 4: empty
    "+12025550151,Di,c-4,extra\n"  # line 5: more fields than the header
    "+1 202-555-0150,Eve,c-5\n"  # line 6: duplicate of line 2
    "+12025550152,Fay,c-6\n"  # line 7: suppressed
    "12025550153,Gus,c-7\n"  # line 8: good (no +, US default region)
)


async def test_csv_upload_reports_bad_rows_and_accepts_good_ones(stack: Stack) -> None:
    account = make_account(stack.engine)
    agent_id = make_agent(stack.engine, account)
    with session_scope(stack.engine) as session:
        session.add(SuppressedNumber(user_id=account.user.id, number="+12025550152"))
    resp = await stack.http.post(
        CREATE,
        data={
            "batch_name": "from csv",
            "agent_id": str(agent_id),
            "options": '{"calls_per_second": 50, "max_concurrency": 10}',
        },
        files={"file": ("list.csv", CSV_WITH_BAD_ROWS.encode(), "text/csv")},
        headers=account.headers,
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["accepted"] == 2 and body["skipped"] == 2
    rejected = {r["row"]: r["reason"] for r in body["rejected"]}
    assert set(rejected) == {3, 4, 5}
    assert "could not be parsed" in rejected[3]
    assert "empty" in rejected[4]
    assert "4 fields, the header has 3" in rejected[5]
    campaign_id = body["campaign"]["id"]
    assert body["campaign"]["total_recipients"] == 4
    assert body["campaign"]["failure_codes"] == {"duplicate": 1, "suppressed_number": 1}

    with Session(stack.engine) as session:
        rows = session.exec(
            select(CampaignRecipient)
            .where(CampaignRecipient.campaign_id == uuid.UUID(campaign_id))
            .order_by(col(CampaignRecipient.row_number))
        ).all()
    assert [(r.row_number, r.state) for r in rows if r.state == "skipped"] == [
        (6, "skipped"),
        (7, "skipped"),
    ]
    first = rows[0]
    assert (first.row_number, first.phone_number, first.external_id) == (2, "+12025550150", "c-1")
    assert first.variables == '{"first_name": "Ada"}'

    await wait_until(finished(stack.engine, campaign_id), timeout=60, interval=0.2)
    status = (
        await stack.http.get(f"/api/v1/batch-call/{campaign_id}/status", headers=account.headers)
    ).json()
    assert status["counts"]["completed"] == 2 and status["counts"]["skipped"] == 2


async def test_a_file_of_only_bad_rows_is_refused_whole(stack: Stack) -> None:
    account = make_account(stack.engine)
    agent_id = make_agent(stack.engine, account)
    resp = await stack.http.post(
        CREATE,
        data={"batch_name": "bad", "agent_id": str(agent_id)},
        files={"file": ("list.csv", b"phone_number\nnope\n\n123\n", "text/csv")},
        headers=account.headers,
    )
    assert resp.status_code == 422
    assert "row 2:" in resp.json()["detail"] and "row 4:" in resp.json()["detail"]
    resp = await stack.http.post(
        CREATE,
        data={"batch_name": "bad", "agent_id": str(agent_id)},
        files={"file": ("list.csv", b"number,name\n+12025550150,x\n", "text/csv")},
        headers=account.headers,
    )
    assert resp.status_code == 422 and "phone_number column" in resp.json()["detail"]
    with Session(stack.engine) as session:
        assert (
            session.exec(
                select(func.count())
                .select_from(Campaign)
                .where(Campaign.user_id == account.user.id)
            ).one()
            == 0
        )


async def test_foreign_ids_look_missing_and_limits_are_clear(stack: Stack) -> None:
    owner, other = make_account(stack.engine), make_account(stack.engine)
    foreign_agent = make_agent(stack.engine, owner)
    answers = []
    for agent in (foreign_agent, uuid.uuid4()):
        resp = await stack.http.post(
            CREATE,
            json={
                "batch_name": "x",
                "agent_id": str(agent),
                "recipients": [{"phone_number": "+12025550150"}],
            },
            headers=other.headers,
        )
        answers.append((resp.status_code, resp.json()))
    assert answers[0] == answers[1] == (404, {"detail": "agent not found"})

    both = await stack.http.post(
        CREATE,
        json={
            "batch_name": "x",
            "agent_id": str(foreign_agent),
            "workflow_id": str(uuid.uuid4()),
            "recipients": [{"phone_number": "+12025550150"}],
        },
        headers=owner.headers,
    )
    assert both.status_code == 422 and "exactly one of agent_id and workflow_id" in both.text

    stack.settings.max_campaign_recipients = 3
    too_many = await stack.http.post(
        CREATE,
        json={
            "batch_name": "x",
            "agent_id": str(foreign_agent),
            "recipients": [{"phone_number": n} for n in fictional_numbers(4)],
        },
        headers=owner.headers,
    )
    assert too_many.status_code == 422
    assert "too many recipients: 4 given, at most 3" in too_many.json()["detail"]

    # Another user's campaign answers exactly like one that does not exist.
    created = await stack.http.post(
        CREATE,
        json={
            "batch_name": "mine",
            "agent_id": str(foreign_agent),
            "recipients": [{"phone_number": "+12025550150"}],
            "options": {"start_at": "2099-01-01T00:00:00Z"},
        },
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    campaign_id = created.json()["campaign"]["id"]
    assert created.json()["campaign"]["state"] == "scheduled"
    for path in ("status", "pause", "resume", "cancel"):
        method = stack.http.get if path == "status" else stack.http.post
        theirs = await method(f"/api/v1/batch-call/{campaign_id}/{path}", headers=other.headers)
        missing = await method(f"/api/v1/batch-call/{uuid.uuid4()}/{path}", headers=other.headers)
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json() == missing.json()
    listing = (await stack.http.get("/api/v1/batch-call", headers=other.headers)).json()
    assert listing == {"items": [], "total": 0, "page": 1, "page_size": 50}
    listing = (await stack.http.get("/api/v1/batch-call", headers=owner.headers)).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == campaign_id
    await stack.http.post(f"/api/v1/batch-call/{campaign_id}/cancel", headers=owner.headers)
    await wait_until(finished(stack.engine, campaign_id), timeout=30, interval=0.2)


async def test_pause_resume_cancel_over_http(stack: Stack) -> None:
    account = make_account(stack.engine)
    agent_id = make_agent(stack.engine, account)
    resp = await stack.http.post(
        CREATE,
        json={
            "batch_name": "controlled",
            "agent_id": str(agent_id),
            "recipients": [{"phone_number": n} for n in fictional_numbers(40)],
            "options": {"calls_per_second": 2, "max_concurrency": 5},
        },
        headers=account.headers,
    )
    assert resp.status_code == 201, resp.text
    campaign_id = resp.json()["campaign"]["id"]
    base = f"/api/v1/batch-call/{campaign_id}"

    def started() -> int:
        with Session(stack.engine) as session:
            return session.exec(
                select(func.count())
                .select_from(CallSession)
                .where(CallSession.campaign_id == uuid.UUID(campaign_id))
            ).one()

    await wait_until(lambda: started() >= 2, timeout=30, interval=0.1)
    paused = await stack.http.post(f"{base}/pause", headers=account.headers)
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    conflict = await stack.http.post(f"{base}/pause", headers=account.headers)
    assert conflict.status_code == 200  # repeating a request is harmless
    resumed = await stack.http.post(f"{base}/resume", headers=account.headers)
    assert resumed.status_code == 200 and resumed.json()["state"] == "running"
    again = await stack.http.post(f"{base}/resume", headers=account.headers)
    assert again.status_code == 200
    before = started()
    await wait_until(lambda: started() > before, timeout=30, interval=0.1)

    canceled = await stack.http.post(f"{base}/cancel", headers=account.headers)
    assert canceled.status_code == 200 and canceled.json()["state"] == "canceled"
    await wait_until(finished(stack.engine, campaign_id), timeout=60, interval=0.2)
    status = (await stack.http.get(f"{base}/status", headers=account.headers)).json()
    counts = status["counts"]
    assert counts["canceled"] > 0, counts
    assert counts["not_started"] == counts["queued"] == counts["calling"] == 0
    assert counts["completed"] + counts["canceled"] == 40
    assert counts["completed"] == started()  # every call that started ran to its end
    assert status["finished_at"] is not None
    refused = await stack.http.post(f"{base}/resume", headers=account.headers)
    assert refused.status_code == 409 and "only a paused campaign" in refused.json()["detail"]
