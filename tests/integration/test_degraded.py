"""When the workers or Temporal itself are not there: `pending` with ids once the wait budget
runs out (the call proceeds when a worker shows up), and `orchestrator_unavailable` recorded
in the database when Temporal cannot be reached at all. Never a 500."""

from __future__ import annotations

import socket

from temporalio.testing import WorkflowEnvironment

from tests.support.accounts import make_account
from tests.support.rows import dial_count, session_row, sessions_of, terminal_row
from tests.support.stack import StackFactory, create_call, running_workers
from tests.support.waiting import wait_until


def closed_port() -> int:
    """A local port nothing listens on (bound once to pick it, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]  # typeshed: the address of any family is Any
        return port


async def test_pending_when_nobody_polls_then_proceeds_with_a_worker(
    stack_factory: StackFactory, dev_env: WorkflowEnvironment
) -> None:
    # The task queues of these settings are fresh: no worker polls them yet.
    async with stack_factory(workers=False, create_call_wait_seconds=0.5) as stack:
        account = make_account(stack.engine)
        key = "pending-1"
        resp = await create_call(stack, account.headers, "+12025550100", idempotency_key=key)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["status"] == "pending"
        assert body["request_id"] and body["call_session_id"]
        assert body["user_id"] == str(account.user.id)
        assert body["target_number"] == "+12025550100"
        sid = body["call_session_id"]

        # Asking again (wait=dialed) while nobody polls: still pending, same ids, nothing new.
        again = await create_call(
            stack, account.headers, "+12025550100", wait="dialed", idempotency_key=key
        )
        assert again.status_code == 200
        assert again.json()["status"] == "pending"
        assert again.json()["call_session_id"] == sid
        assert again.json()["request_id"] == body["request_id"]
        # Other parameters under the key: 409, although the run has not stored its row yet.
        conflict = await create_call(stack, account.headers, "+12025550101", idempotency_key=key)
        assert conflict.status_code == 409, conflict.text
        assert session_row(stack.engine, sid) is None  # nothing ran yet

        # The workflow was started durably: a worker coming up finishes it, with one dial.
        async with running_workers(dev_env.client, stack.settings, stack.engine):
            row = await wait_until(terminal_row(stack.engine, sid), timeout=30)
            assert row.status == "success" and row.telephony_leg_id
            assert dial_count(stack.engine, sid) == 1
            final = await create_call(
                stack, account.headers, "+12025550100", wait="dialed", idempotency_key=key
            )
            assert final.json()["status"] == "success"
            assert final.json()["telephony_leg_id"] == row.telephony_leg_id
        assert len(sessions_of(stack.engine, account.user.id)) == 1
        assert dial_count(stack.engine, sid) == 1


async def test_orchestrator_unavailable_is_recorded_not_a_500(stack_factory: StackFactory) -> None:
    port = closed_port()
    async with stack_factory(
        workers=False, client=None, temporal_address=f"127.0.0.1:{port}"
    ) as stack:
        account = make_account(stack.engine)
        answers = []
        for wait, key in (("accepted", None), ("dialed", None), ("accepted", "down-1")):
            resp = await create_call(
                stack, account.headers, "+12025550100", wait=wait, idempotency_key=key
            )
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["status"] == "failed"
            assert body["failure_code"] == "orchestrator_unavailable"
            assert body["failure_reason"]
            assert body["request_id"] and body["call_session_id"]
            assert body["target_number"] == "+12025550100"
            row = session_row(stack.engine, body["call_session_id"])
            assert row is not None
            assert (row.status, row.failure_code) == ("failed", "orchestrator_unavailable")
            assert dial_count(stack.engine, row.id) == 0
            answers.append(body)
        # A replay with the same key reports the recorded failure, it does not start anything.
        replay = await create_call(stack, account.headers, "+12025550100", idempotency_key="down-1")
        assert replay.status_code == 200
        assert replay.json() == answers[-1]
        assert len(sessions_of(stack.engine, account.user.id)) == 3

        # Bad input is still refused the same way while Temporal is down.
        assert (await stack.http.post("/api/call/create_call")).status_code == 401
        ready = await stack.http.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["temporal"] is False
        assert (await stack.http.get("/health")).status_code == 200
