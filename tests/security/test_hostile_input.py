"""Hostile input over HTTP (issue 20): every reproduction answered with a 4xx and a JSON
`detail`, never a 500, never a broken workflow, never unbounded state. Also the inputs the
fuzzer found that a database refuses (PostgreSQL text cannot hold NUL). The real-process
cases (odd methods and the metrics, numbers in every log line) are in
test_hostile_processes.py."""

from __future__ import annotations

import base64
import os
import stat
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from contracts.campaigns import (
    MAX_CALLS_PER_SECOND,
    MIN_CALLS_PER_SECOND,
    CampaignInput,
    CampaignState,
    TickResult,
    pacing,
)
from core.ids import campaign_workflow_id
from infra.codec import ENCODING, KEY_ID_META, new_key_entry
from store.db import make_engine
from tests.support.accounts import Account, make_account
from tests.support.rows import session_row
from tests.support.settings import settings_for
from tests.support.stack import Stack, open_stack
from tests.support.waiting import wait_until
from workflows.campaign import PREP_LEAD, CampaignWorkflow, next_tick_at

CAMPAIGNS = "/api/v1/batch-call/create"
# Bodies that Python's json module reads but Dialer must refuse (422 with the reason).
DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE_JSON = {
    "nan": '{"name": NaN}',
    "infinity": '{"name": Infinity}',
    "minus-infinity": '{"name": -Infinity}',
    "float-overflow": '{"name": 1e400}',
    "huge-int": '{"name": ' + "9" * 5000 + "}",
    "deep-100000": '{"name": ' + DEEP + "}",
    "deep-40": '{"name": ' + "[" * 40 + "]" * 40 + "}",
}


def _json_operations() -> list[tuple[str, str]]:
    """Every operation of the OpenAPI document that takes a JSON body, path ids filled."""
    document = create_app(settings_for(Path("."), "sqlite://")).openapi()
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                filled = path.replace("{number}", "%2B12025550100")
                while "{" in filled:
                    start, end = filled.index("{"), filled.index("}")
                    filled = filled[:start] + str(uuid.uuid4()) + filled[end + 1 :]
                found.append((method.upper(), filled))
    return sorted(found)


JSON_OPERATIONS = _json_operations()


def _refused(resp: httpx.Response, status: int = 422) -> str:
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert detail, resp.text
    return str(detail)


@pytest.fixture
def account(stack: Stack) -> Account:
    return make_account(stack.engine)


async def _agent(stack: Stack, account: Account) -> str:
    resp = await stack.http.post(
        "/api/v1/agents", json={"name": "hostile agent"}, headers=account.headers
    )
    assert resp.status_code == 201, resp.text
    agent_id: str = resp.json()["id"]
    return agent_id


# --- 3, 4: NaN, Infinity, deep JSON and huge numbers, on every JSON route ---------------


def test_every_json_route_is_covered() -> None:
    # The generic refusal is tested on the document's own list, so a new route is in it.
    assert ("POST", "/api/v1/agents") in JSON_OPERATIONS
    assert ("POST", CAMPAIGNS) in JSON_OPERATIONS
    assert len(JSON_OPERATIONS) >= 8, JSON_OPERATIONS


@pytest.mark.parametrize("body", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
async def test_hostile_json_is_422_on_every_json_route(
    stack: Stack, account: Account, body: str
) -> None:
    headers = {**account.headers, "content-type": "application/json"}
    for method, path in JSON_OPERATIONS:
        resp = await stack.http.request(method, path, content=body, headers=headers)
        detail = _refused(resp)
        assert "the JSON body cannot be accepted" in detail, (method, path, detail)
    # Nothing was written.
    assert (await stack.http.get("/api/v1/agents", headers=account.headers)).json() == []


async def test_hostile_json_without_a_content_type_is_refused_too(
    stack: Stack, account: Account
) -> None:
    # FastAPI reads a body without a content type as JSON.
    resp = await stack.http.post(
        "/api/v1/agents", content=HOSTILE_JSON["nan"], headers=account.headers
    )
    _refused(resp)


async def test_nan_in_a_nested_field_of_campaign_create(stack: Stack, account: Account) -> None:
    agent_id = await _agent(stack, account)
    body = (
        f'{{"batch_name": "b", "agent_id": "{agent_id}", '
        '"recipients": [{"phone_number": "+12025550100"}], "options": {"calls_per_second": NaN}}'
    )
    resp = await stack.http.post(
        CAMPAIGNS, content=body, headers={**account.headers, "content-type": "application/json"}
    )
    assert "NaN is not a JSON number" in _refused(resp)


async def test_deep_json_and_huge_integers_in_campaign_create(
    stack: Stack, account: Account
) -> None:
    agent_id = await _agent(stack, account)
    headers = {**account.headers, "content-type": "application/json"}
    base = f'{{"agent_id": "{agent_id}", "recipients": [{{"phone_number": "+12025550100"}}]'
    deep_name = base + ', "batch_name": ' + DEEP + "}"
    huge = base + ', "batch_name": "b", "options": {"max_concurrency": ' + "7" * 5000 + "}}"
    for body in (deep_name, huge):
        _refused(await stack.http.post(CAMPAIGNS, content=body, headers=headers))
    listed = await stack.http.get("/api/v1/batch-call", headers=account.headers)
    assert listed.json()["total"] == 0


@pytest.mark.parametrize(
    "options",
    [
        '{"calls_per_second": NaN}',
        '{"calls_per_second": Infinity}',
        '{"max_concurrency": ' + "7" * 5000 + "}",
        '{"calls_per_second": ' + "[" * 50_000 + "]" * 50_000 + "}",
    ],
    ids=["nan", "infinity", "huge-int", "deep"],
)
async def test_hostile_json_in_the_options_form_field(
    stack: Stack, account: Account, options: str
) -> None:
    agent_id = await _agent(stack, account)
    resp = await stack.http.post(
        CAMPAIGNS,
        data={"batch_name": "b", "agent_id": agent_id, "options": options},
        files={"file": ("r.csv", b"phone_number\n+12025550100\n", "text/csv")},
        headers=account.headers,
    )
    assert "options cannot be accepted" in _refused(resp)


# --- 5: extreme datetimes ----------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"since": "9999-12-31T23:59:59-23:59"},
        {"until": "0001-01-01T00:00:00+23:59"},
        {"since": "0001-01-01T00:00:00+23:59", "until": "9999-12-31T23:59:59-23:59"},
    ],
)
async def test_extreme_datetimes_in_call_analytics(
    stack: Stack, account: Account, params: dict[str, str]
) -> None:
    resp = await stack.http.get("/api/v1/call-analytics", params=params, headers=account.headers)
    assert "outside the years 1 to 9999" in _refused(resp)


async def test_the_extreme_datetimes_that_have_a_utc_form_are_read(
    stack: Stack, account: Account
) -> None:
    resp = await stack.http.get(
        "/api/v1/call-analytics",
        params={"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z"},
        headers=account.headers,
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("start_at", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"])
async def test_extreme_start_at_in_campaign_create(
    stack: Stack, account: Account, start_at: str
) -> None:
    agent_id = await _agent(stack, account)
    resp = await stack.http.post(
        CAMPAIGNS,
        json={
            "batch_name": "b",
            "agent_id": agent_id,
            "recipients": [{"phone_number": "+12025550100"}],
            "options": {"start_at": start_at},
        },
        headers=account.headers,
    )
    assert "outside the years 1 to 9999" in _refused(resp)
    form = await stack.http.post(
        CAMPAIGNS,
        data={"batch_name": "b", "agent_id": agent_id, "options": f'{{"start_at": "{start_at}"}}'},
        files={"file": ("r.csv", b"phone_number\n+12025550100\n", "text/csv")},
        headers=account.headers,
    )
    _refused(form)


# --- 6: a tiny calls_per_second ----------------------------------------------------------


@pytest.mark.parametrize("rate", [1e-300, 5e-324, 1e-13, 0.0009, 0, -1, 100.5])
async def test_rates_outside_the_documented_range_are_refused(
    stack: Stack, account: Account, rate: float
) -> None:
    agent_id = await _agent(stack, account)
    resp = await stack.http.post(
        CAMPAIGNS,
        json={
            "batch_name": "b",
            "agent_id": agent_id,
            "recipients": [{"phone_number": "+12025550100"}],
            "options": {"calls_per_second": rate},
        },
        headers=account.headers,
    )
    detail = _refused(resp)
    assert "calls_per_second" in detail
    assert str(MIN_CALLS_PER_SECOND) in detail or str(int(MAX_CALLS_PER_SECOND)) in detail


def _no_failed_task(events: list[Any]) -> None:
    failed = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert failed == [], failed


async def test_a_campaign_at_the_minimum_rate_runs_without_a_failed_workflow_task(
    stack: Stack, account: Account
) -> None:
    agent_id = await _agent(stack, account)
    resp = await stack.http.post(
        CAMPAIGNS,
        json={
            "batch_name": "slowest",
            "agent_id": agent_id,
            "recipients": [{"phone_number": "+12025550100"}, {"phone_number": "+12025550110"}],
            "options": {"calls_per_second": MIN_CALLS_PER_SECOND},
        },
        headers=account.headers,
    )
    assert resp.status_code == 201, resp.text
    campaign_id = resp.json()["campaign"]["id"]
    status_url = f"/api/v1/batch-call/{campaign_id}/status"

    async def first_call_ended() -> bool:
        page = await stack.http.get(
            "/api/v1/call-analytics", params={"campaign_id": campaign_id}, headers=account.headers
        )
        assert page.status_code == 200, page.text
        return [c["call_status"] for c in page.json()["items"]] == ["completed"]

    await wait_until(first_call_ended, timeout=60, interval=0.5)
    # The second call waits for its slot, 1,040 s later: the workflow sleeps (its next tick,
    # which also brings the first recipient's state up to date, is then), it does not fail.
    status = (await stack.http.get(status_url, headers=account.headers)).json()
    assert status["counts"]["not_started"] == 1, status
    handle = stack.client.get_workflow_handle(campaign_workflow_id(campaign_id))
    _no_failed_task([e async for e in handle.fetch_history_events()])
    cancel = await stack.http.post(
        f"/api/v1/batch-call/{campaign_id}/cancel", headers=account.headers
    )
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["state"] == "canceled"
    # The run applies it at its next tick, after the pacing sleep (workflows/campaign.py
    # _respect_pacing); meanwhile the signal woke it without a failed task either.
    _no_failed_task([e async for e in handle.fetch_history_events()])


WALL = st.floats(min_value=1.6e9, max_value=4.1e9)  # Unix times of 2020 to 2099
RATES = st.floats(min_value=MIN_CALLS_PER_SECOND, max_value=MAX_CALLS_PER_SECOND)


@settings(max_examples=500, deadline=None)
@given(
    rate=RATES,
    last_slot=WALL,
    ahead=st.floats(min_value=-3600, max_value=3600),
    due=st.booleans(),
    in_flight=st.integers(0, 1000),
)
def test_the_workflow_pacing_arithmetic_holds_over_the_accepted_range(
    rate: float, last_slot: float, ahead: float, due: bool, in_flight: int
) -> None:
    """The arithmetic CampaignWorkflow does with a rate (workflows/campaign.py): the batch of a
    tick, the next tick's instant, the delay to it; finite and positive for every rate the API
    accepts, so no input can fail a workflow task."""
    pace = pacing(rate)
    assert 1 <= pace.batch <= 600
    assert 0 < pace.spacing <= 1.04 / MIN_CALLS_PER_SECOND + 1e-6
    not_before = next_tick_at(last_slot, rate)
    assert not_before.tzinfo is not None
    workflow = CampaignWorkflow(CampaignInput(campaign_id="c"))
    workflow._not_before = not_before
    now = datetime.fromtimestamp(last_slot, UTC) + timedelta(seconds=ahead)
    result = TickResult(
        state=CampaignState.RUNNING,
        in_flight=in_flight,
        due=int(due),
        max_concurrency=1000,
        calls_per_second=rate,
        last_start_wall=last_slot,
    )
    delay = workflow._next_delay(result, now)
    assert timedelta(0) < delay <= timedelta(seconds=pace.spacing) + PREP_LEAD + timedelta(hours=1)


@given(rate=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(0.0)))
def test_pacing_holds_any_stored_rate_within_the_range(rate: float) -> None:
    # Rows written before the minimum existed (1e-300 was accepted) still pace finitely.
    pace = pacing(rate)
    assert 1.04 / MAX_CALLS_PER_SECOND <= pace.spacing * pace.group or pace.group > 1
    assert pace.spacing <= 1.04 / MIN_CALLS_PER_SECOND + 1e-6
    next_tick_at(2e9, rate)


# --- 7: the codec endpoint and malformed payloads ----------------------------------------


@pytest.fixture
async def codec_stack(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    url = f"sqlite:///{tmp_path / 'dialer.db'}"
    token = "operator-" + uuid.uuid4().hex + uuid.uuid4().hex
    cfg = settings_for(tmp_path, url, payload_keys=new_key_entry("k1"), codec_auth_token=token)
    engine = make_engine(url)
    async with open_stack(cfg, engine, None, workers=False) as stack:
        yield stack.http, token
    engine.dispose()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("key_id", "data"),
    [(b"k1", b"short"), (b"k1", b""), (b"\xff\xfe", b"\x00" * 40), (b"k1", b"\x00" * 40)],
    ids=["short-nonce", "empty-data", "non-utf8-key-id", "forged"],
)
async def test_malformed_encrypted_payloads_answer_400(
    codec_stack: tuple[httpx.AsyncClient, str], key_id: bytes, data: bytes
) -> None:
    http, token = codec_stack
    payload: dict[str, Any] = {"metadata": {"encoding": _b64(ENCODING), KEY_ID_META: _b64(key_id)}}
    if data:
        payload["data"] = _b64(data)
    resp = await http.post(
        "/codec/decode",
        json={"payloads": [payload]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert "payloads cannot be decrypted" in _refused(resp, 400)


# --- 8: failed authentication throttled per client address -------------------------------


async def test_failed_authentication_is_throttled_per_client_address(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'dialer.db'}"
    from store.migrate import upgrade

    upgrade(url)
    cfg = settings_for(tmp_path, url, auth_failure_burst=5, auth_failures_per_minute=6)
    engine = make_engine(url)
    account = make_account(engine)
    async with open_stack(cfg, engine, None, workers=False) as stack:
        bad = {"x-api-key": "dk_00000000_" + "x" * 40}
        answers = [(await stack.http.get("/api/v1/me", headers=bad)).status_code for _ in range(8)]
        assert answers[:5] == [401] * 5 and answers[5:] == [429] * 3, answers
        throttled = await stack.http.get("/api/v1/me", headers=bad)
        assert int(throttled.headers["Retry-After"]) >= 1
        assert "too many failed authentication" in _refused(throttled, 429)
        # The address is refused before any key is looked at, a valid one included...
        _refused(await stack.http.get("/api/v1/me", headers=account.headers), 429)
        # ...while another address is not affected.
        app = stack.http._transport.app  # type: ignore[attr-defined]
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("192.0.2.7", 40000)),
            base_url="http://dialer",
        )
        async with other:
            assert (await other.get("/api/v1/me", headers=account.headers)).status_code == 200
    engine.dispose()


# --- 9: the smaller ones ------------------------------------------------------------------


async def test_no_redirect_to_a_forged_host(stack: Stack, account: Account) -> None:
    resp = await stack.http.get("/api/v1/me/", headers={**account.headers, "Host": "evil.example"})
    assert resp.status_code == 404, resp.text
    assert "location" not in resp.headers


async def test_security_headers(stack: Stack, account: Account) -> None:
    me = await stack.http.get("/api/v1/me", headers=account.headers)
    assert me.headers["x-content-type-options"] == "nosniff"
    assert me.headers["cache-control"] == "no-store"
    refused = await stack.http.get("/api/v1/me")
    assert refused.status_code == 401
    assert refused.headers["cache-control"] == "no-store"
    health = await stack.http.get("/health")
    assert health.headers["x-content-type-options"] == "nosniff"
    assert "cache-control" not in health.headers


def test_the_sqlite_database_and_its_wal_are_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "dialer.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x TEXT)"))
        conn.execute(text("INSERT INTO t VALUES ('+12025550100')"))
        files = [path, path.with_name("dialer.db-wal"), path.with_name("dialer.db-shm")]
        assert all(f.exists() for f in files)
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    engine.dispose()
    # A database made world-readable before is tightened when it is opened.
    os.chmod(path, 0o644)
    make_engine(f"sqlite:///{path}").dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


BAD_TEXT = ["Bob\u202egnp.exe", "a\u2066b", "line\nbreak", "bell\x07", "a\u200fb", "nul\x00"]


@pytest.mark.parametrize("value", BAD_TEXT, ids=[repr(v) for v in BAD_TEXT])
async def test_control_and_bidi_characters_are_refused_in_names_and_labels(
    stack: Stack, account: Account, value: str
) -> None:
    h = account.headers
    agent_id = await _agent(stack, account)
    for path, body in [
        ("/api/v1/agents", {"name": value}),
        ("/api/v1/workflows", {"name": value}),
        ("/api/v1/phone", {"number": "+12025550198", "label": value}),
        ("/api/v1/suppressions", {"phone_number": "+12025550197", "reason": value}),
        (
            CAMPAIGNS,
            {"batch_name": value, "agent_id": agent_id, "recipients": [{"phone_number": "+1"}]},
        ),
        (
            CAMPAIGNS,
            {
                "batch_name": "b",
                "agent_id": agent_id,
                "recipients": [{"phone_number": "+12025550100", "external_id": value}],
            },
        ),
    ]:
        resp = await stack.http.post(path, json=body, headers=h)
        assert "bidirectional formatting character" in _refused(resp), (path, resp.text)
    line = (await stack.http.get("/api/v1/phone", headers=h)).json()[0]
    patched = await stack.http.patch(
        f"/api/v1/phone/{line['id']}", json={"label": value}, headers=h
    )
    _refused(patched)
    renamed = await stack.http.patch(f"/api/v1/agents/{agent_id}", json={"name": value}, headers=h)
    assert renamed.status_code in (405, 422), renamed.text
    names = [a["name"] for a in (await stack.http.get("/api/v1/agents", headers=h)).json()]
    assert names == ["hostile agent"]


async def test_names_in_any_script_are_kept(stack: Stack, account: Account) -> None:
    for name in (
        "Zoë 山田 محمد",
        "क्षत्रिय",
        "👩‍👩‍👧 family",
    ):  # ZWJ and virama are not bidi controls
        resp = await stack.http.post("/api/v1/agents", json={"name": name}, headers=account.headers)
        assert resp.status_code == 201, resp.text
        assert resp.json()["name"] == name


@pytest.mark.parametrize("zone", ["posixrules", "localtime", "right/UTC", "posix/UTC", "../UTC"])
async def test_only_iana_zone_names_are_campaign_time_zones(
    stack: Stack, account: Account, zone: str
) -> None:
    agent_id = await _agent(stack, account)
    body = {
        "batch_name": "b",
        "agent_id": agent_id,
        "recipients": [{"phone_number": "+12025550100"}],
        "options": {"calling_window": {"timezone": zone}},
    }
    resp = await stack.http.post(CAMPAIGNS, json=body, headers=account.headers)
    assert "unknown time zone" in _refused(resp)
    body["options"] = {"calling_window": {"timezone": "America/New_York"}}
    ok = await stack.http.post(CAMPAIGNS, json=body, headers=account.headers)
    assert ok.status_code == 201, ok.text


# --- found by the fuzzer earlier ----------------------------------------------------------


async def test_nul_in_a_name_is_refused_and_nothing_is_written(stack: Stack) -> None:
    account = make_account(stack.engine)
    resp = await stack.http.post("/api/v1/agents", json={"name": "a\x00b"}, headers=account.headers)
    # Refused as a control character before any database sees it (PostgreSQL cannot store it).
    assert "U+0000" in _refused(resp)
    listed = await stack.http.get("/api/v1/agents", headers=account.headers)
    assert listed.json() == []


async def test_nul_in_the_phone_number_is_recorded_as_invalid(stack: Stack) -> None:
    account = make_account(stack.engine)
    resp = await stack.http.post(
        "/api/call/create_call",
        params={"phoneNumber": "+1202555\x000100"},
        headers=account.headers,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "failed"
    assert body["failure_code"] == "invalid_number"
    row = await wait_until(lambda: session_row(stack.engine, body["call_session_id"]))
    assert row.status == "failed"
    assert "\x00" not in row.requested_number
