"""A campaign's call options and each recipient's result over HTTP on the dev server, SQLite and
PostgreSQL: machine_detection reaches the calls, the machine-answer number ends its recipient
`voicemail` (counted, redialed as a redial outcome), the recipients page with its filters, the
CSV export with its neutralised cells, and another user's campaign looking missing."""

from __future__ import annotations

import csv
import io
import uuid

from sqlmodel import Session, select

from core.ids import campaign_call_ids
from store.models import CallSession, CampaignRecipient
from telephony.simulated import BUSY, MACHINE
from tests.integration.test_campaigns import CREATE, finished, make_agent
from tests.support.accounts import make_account
from tests.support.stack import Stack, StackFactory
from tests.support.waiting import wait_until

HUMAN = "+12025550100"
FORMULA = '=HYPERLINK("http://evil.example","x")'


async def test_options_voicemail_recipients_and_csv(stack_factory: StackFactory) -> None:
    # Calls that talk past the simulated machine verdict (1 s after the answer).
    async with stack_factory(simulated_talk_seconds=2.5) as stack:
        await _options_voicemail_recipients_and_csv(stack)


async def _options_voicemail_recipients_and_csv(stack: Stack) -> None:
    account = make_account(stack.engine)
    agent_id = make_agent(stack.engine, account)
    options = {
        "calls_per_second": 20,
        "max_concurrency": 10,
        "max_duration_seconds": 120,
        "machine_detection": "detect_and_hang_up",
        "redial": {"outcomes": ["voicemail"], "max_attempts": 2, "delay_seconds": 0},
    }
    resp = await stack.http.post(
        CREATE,
        json={
            "batch_name": "machines",
            "agent_id": str(agent_id),
            "recipients": [
                {"phone_number": HUMAN, "external_id": "human-1"},
                {"phone_number": MACHINE, "external_id": FORMULA},
                {"phone_number": BUSY, "external_id": "@busy"},
            ],
            "options": options,
        },
        headers=account.headers,
    )
    assert resp.status_code == 201, resp.text
    campaign = resp.json()["campaign"]
    campaign_id = campaign["id"]
    shown = campaign["options"]
    assert (shown["max_duration_seconds"], shown["machine_detection"]) == (
        120,
        "detect_and_hang_up",
    )
    assert shown["voicemail_message"] is None
    assert shown["redial"]["outcomes"] == ["voicemail"]
    await wait_until(finished(stack.engine, campaign_id), timeout=240, interval=0.5)

    base = f"/api/v1/batch-call/{campaign_id}"
    status = (await stack.http.get(f"{base}/status", headers=account.headers)).json()
    counts = status["counts"]
    assert (counts["completed"], counts["voicemail"], counts["busy"]) == (1, 1, 1), counts
    assert status["options"]["machine_detection"] == "detect_and_hang_up"

    # The options reached every call: the machine's two (the voicemail redialed once).
    cid = uuid.UUID(campaign_id)
    with Session(stack.engine) as session:
        machine = session.exec(
            select(CampaignRecipient).where(
                CampaignRecipient.campaign_id == cid, CampaignRecipient.row_number == 2
            )
        ).one()
        assert (machine.state, machine.attempts) == ("voicemail", 2)
        machine_calls = [campaign_call_ids(cid, machine.id, n)[0] for n in (1, 2)]
        for call_id in machine_calls:
            call = session.get(CallSession, uuid.UUID(call_id))
            assert call is not None
            assert (call.machine_detection, call.max_duration_seconds) == (
                "detect_and_hang_up",
                120,
            )
            assert (call.answered_by, call.ended_reason) == ("machine_start", "voicemail")

    # The page: every recipient in row order, each attempt's call id and outcome.
    page = (await stack.http.get(f"{base}/recipients", headers=account.headers)).json()
    assert page["total"] == 3
    by_row = {r["row_number"]: r for r in page["items"]}
    assert [r["external_id"] for r in page["items"]] == ["human-1", FORMULA, "@busy"]
    assert (by_row[1]["state"], by_row[1]["outcome"], by_row[1]["attempts"]) == (
        "completed",
        "completed",
        1,
    )
    assert [c["call_session_id"] for c in by_row[2]["calls"]] == machine_calls
    assert [c["outcome"] for c in by_row[2]["calls"]] == ["voicemail", "voicemail"]
    assert by_row[2]["calls"][0]["answered_by"] == "machine_start"
    assert (by_row[3]["state"], by_row[3]["outcome"]) == ("busy", "busy")

    async def rows(query: str) -> list[int]:
        resp = await stack.http.get(f"{base}/recipients?{query}", headers=account.headers)
        assert resp.status_code == 200, resp.text
        return [r["row_number"] for r in resp.json()["items"]]

    assert await rows("state=voicemail") == [2]
    assert await rows("outcome=completed") == [1]
    assert await rows("outcome=busy&state=busy") == [3]
    assert await rows("outcome=no_answer") == []
    assert await rows("page=2&page_size=2") == [3]
    bad = await stack.http.get(f"{base}/recipients?state=nope", headers=account.headers)
    assert bad.status_code == 422

    # The CSV: the same rows, formulas neutralised, a plain phone number left as it is.
    resp = await stack.http.get(f"{base}/recipients.csv", headers=account.headers)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(resp.text)))
    assert [r["phone_number"] for r in table] == [HUMAN, MACHINE, BUSY]
    assert table[1]["external_id"] == "'" + FORMULA
    assert table[2]["external_id"] == "'@busy"
    assert (table[1]["state"], table[1]["attempts"]) == ("voicemail", "2")
    assert [table[1]["call_1_session_id"], table[1]["call_2_session_id"]] == machine_calls
    assert (table[1]["call_2_outcome"], table[0]["call_2_outcome"]) == ("voicemail", "")
    only = await stack.http.get(f"{base}/recipients.csv?outcome=busy", headers=account.headers)
    assert [r["row_number"] for r in csv.DictReader(io.StringIO(only.text))] == ["3"]

    # Another user's campaign is a missing one, on both routes.
    other = make_account(stack.engine)
    for path in ("recipients", "recipients.csv"):
        foreign = await stack.http.get(f"{base}/{path}", headers=other.headers)
        missing = await stack.http.get(
            f"/api/v1/batch-call/{uuid.uuid4()}/{path}", headers=other.headers
        )
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json()
