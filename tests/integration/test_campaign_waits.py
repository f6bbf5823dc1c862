"""A campaign that starts no call says why and until when: in its status answer and in its
run's current details (the real dev server and worker, SQLite and PostgreSQL). A campaign
without start_at is `running` from its very first answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.api.sdk.v1 import WorkflowMetadata

from tests.integration.test_campaigns import CREATE, make_agent
from tests.support.accounts import make_account
from tests.support.stack import Stack
from tests.support.waiting import wait_until

NEW_YORK = ZoneInfo("America/New_York")  # the zone of every +1 202 number


def closed_window(now: datetime) -> tuple[dict[str, Any], datetime]:
    """A one-hour window of every day that is closed at `now` in New York, and when it opens
    next (UTC)."""
    local = now.astimezone(NEW_YORK)
    start_hour = 20 if local.hour < 12 else 2
    opens = local.replace(hour=start_hour, minute=0, second=0, microsecond=0)
    if opens <= local:
        opens += timedelta(days=1)
    window = {
        "start": f"{start_hour:02d}:00",
        "end": f"{start_hour + 1:02d}:00",
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "timezone": "America/New_York",
    }
    return window, opens.astimezone(UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_outside_its_calling_window_a_campaign_says_so_and_when_it_resumes(
    stack: Stack,
) -> None:
    account = make_account(stack.engine)
    agent_id = make_agent(stack.engine, account)
    window, opens = closed_window(datetime.now(UTC))
    created = await stack.http.post(
        CREATE,
        json={
            "batch_name": "evening calls",
            "agent_id": str(agent_id),
            "recipients": [{"phone_number": "+12025550150"}, {"phone_number": "+12025550151"}],
            "options": {"calling_window": window},
        },
        headers=account.headers,
    )
    assert created.status_code == 201, created.text
    campaign = created.json()["campaign"]
    assert campaign["state"] == "running"  # no start_at: never `scheduled` for a moment
    assert campaign["started_at"] is not None
    url = f"/api/v1/batch-call/{campaign['id']}/status"

    async def waiting() -> dict[str, Any] | None:
        answer: dict[str, Any] = (await stack.http.get(url, headers=account.headers)).json()
        return answer if answer["waiting_for"] else None

    status = await wait_until(waiting, timeout=30, interval=0.3)
    assert status["waiting_for"] == "calling_window", status
    assert abs(at(status["next_start_at"]) - opens) < timedelta(minutes=1), (status, opens)
    assert status["state"] == "running" and status["counts"]["not_started"] == 2

    # The run's current details (the UI's User Metadata tab) say the same.
    handle = stack.client.get_workflow_handle(campaign["id"])
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    until = opens.strftime("%Y-%m-%dT%H:%M")
    assert "waiting for calling_window until " + until in metadata.current_details, metadata
    await stack.http.post(f"/api/v1/batch-call/{campaign['id']}/cancel", headers=account.headers)


async def test_before_its_start_at_a_campaign_waits_for_it(stack: Stack) -> None:
    account = make_account(stack.engine)
    agent_id = make_agent(stack.engine, account)
    created = await stack.http.post(
        CREATE,
        json={
            "batch_name": "next year",
            "agent_id": str(agent_id),
            "recipients": [{"phone_number": "+12025550150"}],
            "options": {"start_at": "2099-01-01T00:00:00Z"},
        },
        headers=account.headers,
    )
    assert created.status_code == 201, created.text
    campaign = created.json()["campaign"]
    assert campaign["state"] == "scheduled"
    assert campaign["waiting_for"] == "start_at"
    assert at(campaign["next_start_at"]) == datetime(2099, 1, 1, tzinfo=UTC)
    status = (
        await stack.http.get(f"/api/v1/batch-call/{campaign['id']}/status", headers=account.headers)
    ).json()
    assert status["waiting_for"] == "start_at", status
    assert at(status["next_start_at"]) == datetime(2099, 1, 1, tzinfo=UTC)
    await stack.http.post(f"/api/v1/batch-call/{campaign['id']}/cancel", headers=account.headers)
