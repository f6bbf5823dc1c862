"""The Temporal UI as a control room: summary, details, current details and search attributes
of a finished and of a running call, and the README's operator-guide queries, run through the
client (what the UI's search box sends) and through `temporal workflow list --query`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle
from temporalio.common import TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.testing import WorkflowEnvironment

from contracts.calls import CreateCallInput, DialPolicy
from dialer.binaries import temporal_cli
from store.db import make_engine
from tests.support.accounts import make_account
from tests.support.settings import settings_for
from tests.support.stack import Stack, create_call, open_stack, running_workers
from tests.support.waiting import wait_until
from workflows.create_call import CreateCallWorkflow, search_attributes_for, summary_for

# The operator guide of the README, verbatim but for the placeholders.
FAILED_TODAY = (
    "WorkflowType = 'CreateCallWorkflow' AND DialerUserId = '{user}' "
    "AND DialerCallStatus = 'failed' AND StartTime >= '{today}'"
)
ONE_CAMPAIGN = "DialerCampaignId = '{campaign}'"
# A failed call is a Failed run (workflows/create_call.py _finish): the UI's status, at a glance.
FAILED_RUNS = "WorkflowType = 'CreateCallWorkflow' AND ExecutionStatus = 'Failed'"
USERS_FAILED_RUNS = FAILED_RUNS + " AND DialerUserId = '{user}'"
ONE_USER = "WorkflowType = 'CreateCallWorkflow' AND DialerUserId = '{user}'"
CAMPAIGN_CALLS = "WorkflowType = 'CreateCallWorkflow' AND DialerCampaignId = '{campaign}'"
STUCK_DIALING = (
    "WorkflowType = 'CreateCallWorkflow' AND ExecutionStatus = 'Running' "
    "AND DialerCallStatus = 'dialing' AND StartTime < '{cutoff}'"
)


@pytest.fixture
async def ops_stack(
    dev_env: WorkflowEnvironment, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    """API and the call worker, but no dial worker: every call stops at 'dialing attempt 1',
    as calls do when the dial workers are down (the "stuck dialing" of the guide)."""
    engine = make_engine(sqlite_url)
    settings = settings_for(tmp_path, sqlite_url)
    async with (
        running_workers(dev_env.client, settings, engine, dial=False),
        open_stack(settings, engine, dev_env.client, workers=False) as stack,
    ):
        yield stack
    engine.dispose()


async def _attributes(handle: WorkflowHandle[Any, Any]) -> dict[str, str]:
    desc = await handle.describe()
    return {p.key.name: str(p.value) for p in desc.typed_search_attributes.search_attributes}


async def _current_details(handle: WorkflowHandle[Any, Any]) -> str:
    meta: WorkflowMetadata
    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return meta.current_details


async def _ids(client: Client, query: str) -> list[str]:
    return sorted([wf.id async for wf in client.list_workflows(query)])


def _cli_ids(env: WorkflowEnvironment, query: str) -> list[str]:
    """The same query through the `temporal` CLI, as an operator types it."""
    out = subprocess.run(
        [
            temporal_cli(),
            "workflow",
            "list",
            "--address",
            env.client.service_client.config.target_host,
            "--namespace",
            env.client.namespace,
            "--query",
            query,
            "--output",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return sorted(row["execution"]["workflowId"] for row in rows)


async def _both_find(env: WorkflowEnvironment, query: str, expected: list[str]) -> None:
    """Visibility is eventually consistent: wait (bounded) until the client finds exactly the
    expected runs, then the CLI must find the same."""
    expected = sorted(expected)

    async def found() -> bool:
        return await _ids(env.client, query) == expected

    await wait_until(found, timeout=20)
    assert await asyncio.to_thread(_cli_ids, env, query) == expected


async def test_finished_call_has_summary_details_and_final_attributes(stack: Stack) -> None:
    account = make_account(stack.engine)
    body = (await create_call(stack, account.headers, "+12025550100", wait="dialed")).json()
    handle = stack.client.get_workflow_handle(body["call_session_id"])
    await asyncio.wait_for(handle.result(), 60)

    desc = await handle.describe()
    summary, details = await desc.static_summary(), await desc.static_details()
    assert summary and str(account.user.id)[:8] in summary
    assert details and f"**user_id**: {account.user.id}" in details
    assert f"**request_id**: {body['request_id']}" in details
    attributes = await _attributes(handle)
    assert attributes["DialerUserId"] == str(account.user.id)
    assert attributes["DialerRequestId"] == body["request_id"]
    assert attributes["DialerProvider"] == "simulated"
    assert attributes["DialerCallStatus"] == "completed"
    assert (await _current_details(handle)).startswith("completed")

    history = await handle.fetch_history()
    activity_summaries = [
        await stack.client.data_converter.decode([e.user_metadata.summary], [str])
        for e in history.events
        if e.HasField("user_metadata") and e.user_metadata.HasField("summary")
    ]
    assert [["dial attempt 1 of 5"]] == [s for s in activity_summaries if "dial attempt" in s[0]]


async def test_running_call_shows_where_it_is(ops_stack: Stack) -> None:
    account = make_account(ops_stack.engine)
    body = (await create_call(ops_stack, account.headers, "+12025550100")).json()
    assert body["status"] == "success"
    handle = ops_stack.client.get_workflow_handle(body["call_session_id"])

    async def dialing() -> bool:
        return (await _attributes(handle)).get("DialerCallStatus") == "dialing"

    await wait_until(dialing, timeout=15)
    attempts = ops_stack.settings.dial_max_attempts
    assert await _current_details(handle) == f"dialing attempt 1 of {attempts}"
    desc = await handle.describe()
    assert desc.status is not None and desc.status.name == "RUNNING"
    assert await desc.static_summary()
    await handle.terminate("test over")


async def test_operator_guide_queries_find_the_expected_runs(
    ops_stack: Stack, stack: Stack, dev_env: WorkflowEnvironment
) -> None:
    account = make_account(stack.engine)
    ok = (await create_call(stack, account.headers, "+12025550100", wait="dialed")).json()
    failed = (await create_call(stack, account.headers, "+12025550103", wait="dialed")).json()
    assert (ok["status"], failed["status"]) == ("success", "failed")
    today = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")
    query = FAILED_TODAY.format(user=account.user.id, today=today)
    await _both_find(dev_env, query, [failed["call_session_id"]])
    query = USERS_FAILED_RUNS.format(user=account.user.id)
    await _both_find(dev_env, query, [failed["call_session_id"]])
    assert failed["call_session_id"] in await _ids(dev_env.client, FAILED_RUNS)
    assert ok["call_session_id"] not in await _ids(dev_env.client, FAILED_RUNS)
    both = sorted([ok["call_session_id"], failed["call_session_id"]])
    await _both_find(dev_env, ONE_USER.format(user=account.user.id), both)

    # Stuck dialing: a call on the stack without dial workers, older than the cutoff.
    stuck_account = make_account(ops_stack.engine)
    stuck = (await create_call(ops_stack, stuck_account.headers, "+12025550100")).json()
    handle = ops_stack.client.get_workflow_handle(stuck["call_session_id"])

    async def dialing() -> bool:
        return (await _attributes(handle)).get("DialerCallStatus") == "dialing"

    await wait_until(dialing, timeout=15)
    cutoff = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stuck_query = STUCK_DIALING.format(cutoff=cutoff)
    runs = await wait_until(
        lambda: _contains(ops_stack.client, stuck_query, stuck["call_session_id"]), timeout=20
    )
    assert runs
    assert stuck["call_session_id"] in await asyncio.to_thread(_cli_ids, dev_env, stuck_query)
    # The finished calls of the other stack are not stuck.
    assert ok["call_session_id"] not in await _ids(dev_env.client, stuck_query)
    await handle.terminate("test over")

    # One campaign: every call started for it, whatever became of them.
    campaign = str(uuid.uuid4())
    started = [await _start_campaign_call(stack, account.user.id, campaign) for _ in range(2)]
    await _both_find(dev_env, ONE_CAMPAIGN.format(campaign=campaign), started)
    await _both_find(dev_env, CAMPAIGN_CALLS.format(campaign=campaign), started)


async def _contains(client: Client, query: str, workflow_id: str) -> bool:
    return workflow_id in await _ids(client, query)


async def _start_campaign_call(stack: Stack, user_id: Any, campaign_id: str) -> str:
    """A call as the campaign launcher starts it: campaign id in the input, the search
    attributes and the details."""
    call = CreateCallInput(
        call_session_id=str(uuid.uuid4()),
        request_id=str(uuid.uuid4()),
        user_id=str(user_id),
        phone_number="+12025550100",
        request_hash="campaign",
        campaign_id=campaign_id,
        policy=DialPolicy(task_queue=stack.settings.dial_task_queue),
    )
    summary, details = summary_for(call)
    assert f"**campaign_id**: {campaign_id}" in details
    await stack.client.start_workflow(
        CreateCallWorkflow.run,
        call,
        id=call.call_session_id,
        task_queue=stack.settings.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(search_attributes_for(call)),
        static_summary=summary,
        static_details=details,
    )
    return call.call_session_id
