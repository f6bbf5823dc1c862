"""Tenant isolation, generated from the app's route table: for every route that takes an id
(path parameter, or query parameter named `id`/`*_id`), another user's id behaves exactly like
a missing one: same status, same body once the id itself is blanked out.

COVERAGE maps each (method, path, parameter) to a check that creates the object as its owner
and probes it as another user. A new id-taking route without an entry fails
`test_every_id_taking_route_is_covered`: add the entry with the route."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from api.app import create_app
from store.db import session_scope
from store.models import (
    Agent,
    Flow,
    PhoneNumber,
    SuppressedNumber,
    WebhookDelivery,
    WebhookEndpoint,
)
from tests.support.accounts import Account, make_account
from tests.support.settings import settings_for
from tests.support.stack import Stack

# Fields that differ between any two requests whatever the ids (fresh uuids, clocks).
VOLATILE = {"request_id", "call_session_id", "created_at", "updated_at"}


def id_parameters() -> set[tuple[str, str, str]]:
    """(method, path, parameter) for every id-taking parameter of every route of the app,
    read from the route table as the app publishes it (its OpenAPI document, which FastAPI
    builds from every included route and its dependencies)."""
    document = create_app(settings_for(Path("."), "sqlite://")).openapi()
    found: set[tuple[str, str, str]] = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for param in operation.get("parameters", []):
                name, where = param["name"], param["in"]
                if where == "path" or (where == "query" and (name == "id" or name.endswith("_id"))):
                    found.add((method.upper(), path, name))
    return found


@dataclass
class Probe:
    stack: Stack
    owner: Account
    intruder: Account

    async def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.intruder.headers, **kwargs.pop("headers", {})}
        return await self.stack.http.request(method, url, headers=headers, **kwargs)

    async def same_as_missing(
        self,
        method: str,
        url_for: Callable[[str], str],
        foreign_id: str,
        *,
        params_for: Callable[[str], dict[str, Any]] | None = None,
        json_for: Callable[[str], Any] | None = None,
        **fixed: Any,
    ) -> httpx.Response:
        missing_id = _missing_like(foreign_id)
        answers = []
        for value in (foreign_id, missing_id):
            kwargs: dict[str, Any] = dict(fixed)
            if params_for:
                kwargs["params"] = params_for(value)
            if json_for:
                kwargs["json"] = json_for(value)
            answers.append(await self.send(method, url_for(value), **kwargs))
        foreign, missing = answers
        assert foreign.status_code == missing.status_code, (foreign.text, missing.text)
        assert _blank(foreign, foreign_id) == _blank(missing, missing_id)
        return foreign


def _missing_like(value: str) -> str:
    try:
        uuid.UUID(value)
    except ValueError:
        return "+12025550177"  # a number that nobody put on a list
    return str(uuid.uuid4())


def _blank(response: httpx.Response, value: str) -> Any:
    text = response.text.replace(value, "<ID>")
    try:
        body = json.loads(text) if text else None
    except ValueError:
        return text
    if isinstance(body, dict):
        return {k: ("<V>" if k in VOLATILE else v) for k, v in body.items()}
    return body


Check = Callable[[Probe], Awaitable[None]]


async def _owner_call(probe: Probe) -> dict[str, Any]:
    resp = await probe.stack.http.post(
        "/api/call/create_call",
        params={"phoneNumber": "+12025550100"},
        headers=probe.owner.headers,
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _owned(probe: Probe, model: type[Agent | Flow]) -> str:
    with session_scope(probe.stack.engine) as session:
        row = model(user_id=probe.owner.user.id, name="owner's")
        session.add(row)
        session.flush()
        return str(row.id)


def _owner_line(probe: Probe) -> str:
    with Session(probe.stack.engine) as session:
        from sqlmodel import select

        line = session.exec(
            select(PhoneNumber).where(PhoneNumber.user_id == probe.owner.user.id)
        ).first()
        assert line is not None
        return str(line.id)


def _create_call_with(param: str, make_id: Callable[[Probe], str]) -> Check:
    async def check(probe: Probe) -> None:
        foreign = make_id(probe)
        resp = await probe.same_as_missing(
            "POST",
            lambda _: "/api/call/create_call",
            foreign,
            params_for=lambda v: {"phoneNumber": "+12025550100", param: v},
        )
        assert resp.json()["status"] == "failed"
        assert resp.json()["failure_code"].endswith("_not_found")

    return check


def _analytics_by(field: str) -> Check:
    async def check(probe: Probe) -> None:
        owned = await _owner_call(probe)
        mine = await probe.stack.http.get(
            "/api/v1/call-analytics", params={field: owned[field]}, headers=probe.owner.headers
        )
        assert mine.status_code == 200
        resp = await probe.same_as_missing(
            "GET", lambda _: "/api/v1/call-analytics", owned[field], params_for=lambda v: {field: v}
        )
        assert resp.status_code == 404

    return check


async def _analytics_by_campaign(probe: Probe) -> None:
    owned = await _owner_call(probe)
    campaign = str(uuid.uuid4())
    with session_scope(probe.stack.engine) as session:
        from store.models import CallSession

        row = session.get(CallSession, uuid.UUID(owned["call_session_id"]))
        assert row is not None
        row.campaign_id = uuid.UUID(campaign)
        session.add(row)
    resp = await probe.same_as_missing(
        "GET",
        lambda _: "/api/v1/call-analytics",
        campaign,
        params_for=lambda v: {"campaign_id": v},
    )
    assert resp.json()["total"] == 0


async def _analytics_by_external_id(probe: Probe) -> None:
    external_id = f"order-{uuid.uuid4()}"
    resp = await probe.stack.http.post(
        "/api/call/create_call",
        params={"phoneNumber": "+12025550100"},
        json={"metadata": {"external_id": external_id}},
        headers=probe.owner.headers,
    )
    assert resp.status_code == 200, resp.text
    params_for: Callable[[str], dict[str, Any]] = lambda v: {"external_id": v}  # noqa: E731
    mine = await probe.stack.http.get(
        "/api/v1/call-analytics", params=params_for(external_id), headers=probe.owner.headers
    )
    assert mine.json()["total"] == 1, mine.text
    resp = await probe.same_as_missing(
        "GET", lambda _: "/api/v1/call-analytics", external_id, params_for=params_for
    )
    assert resp.json()["total"] == 0


def _control_call(action: str) -> Check:
    """Another user's cancel or hang-up of a scheduled call: a 404 like a missing call's,
    and the call is still scheduled."""

    async def check(probe: Probe) -> None:
        at = datetime.now(UTC) + timedelta(hours=1)
        resp = await probe.stack.http.post(
            "/api/call/create_call",
            params={"phoneNumber": "+12025550100"},
            json={"scheduled_at": at.isoformat()},
            headers=probe.owner.headers,
        )
        assert resp.status_code == 200, resp.text
        sid = resp.json()["call_session_id"]
        resp = await probe.same_as_missing("POST", lambda v: f"/api/v1/calls/{v}/{action}", sid)
        assert resp.status_code == 404
        with Session(probe.stack.engine) as session:
            from store.models import CallSession

            row = session.get(CallSession, uuid.UUID(sid))
            assert row is not None and row.ended_reason is None, "another user ended it"
        mine = await probe.stack.http.post(
            "/api/v1/calls/" + sid + "/cancel", headers=probe.owner.headers
        )
        assert mine.status_code == 200 and mine.json()["outcome"] == "canceled", mine.text

    return check


async def _patch_line(probe: Probe) -> None:
    line = _owner_line(probe)
    resp = await probe.same_as_missing(
        "PATCH", lambda v: f"/api/v1/phone/{v}", line, json_for=lambda _: {"active": False}
    )
    assert resp.status_code == 404
    with Session(probe.stack.engine) as session:
        row = session.get(PhoneNumber, uuid.UUID(line))
        assert row is not None and row.active, "another user's request changed the line"


async def _confirm_line(probe: Probe) -> None:
    line = _owner_line(probe)
    with session_scope(probe.stack.engine) as session:
        row = session.get(PhoneNumber, uuid.UUID(line))
        assert row is not None
        row.confirmed_by = None  # so that a confirmation by the intruder would show
    resp = await probe.same_as_missing("POST", lambda v: f"/api/v1/phone/{v}/confirm", line)
    assert resp.status_code == 404
    with Session(probe.stack.engine) as session:
        found = session.get(PhoneNumber, uuid.UUID(line))
        assert found is not None and found.confirmed_by is None, "another user confirmed it"


def _patch_named(model: type[Agent | Flow], path: str) -> Check:
    async def check(probe: Probe) -> None:
        owned = _owned(probe, model)
        resp = await probe.same_as_missing(
            "PATCH",
            lambda v: f"{path}/{v}",
            owned,
            json_for=lambda _: {"name": "taken", "media_stream_url": "wss://intruder.test/"},
        )
        assert resp.status_code == 404
        with Session(probe.stack.engine) as session:
            row = session.get(model, uuid.UUID(owned))
            assert isinstance(row, model)
            assert row.name == "owner's" and row.media_stream_url is None

    return check


WEBHOOKS = "/api/v1/webhooks"


async def _owner_webhook(probe: Probe) -> dict[str, Any]:
    resp = await probe.stack.http.post(
        WEBHOOKS, json={"url": "http://127.0.0.1:9/hook"}, headers=probe.owner.headers
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _webhook_route(method: str, suffix: str = "", json_body: Any = None) -> Check:
    """Another user's endpoint id on a webhook route: like a missing one, and the owner's
    endpoint is left as it was (not changed, deleted or given a new secret)."""

    async def check(probe: Probe) -> None:
        owned = await _owner_webhook(probe)
        endpoint_id = uuid.UUID(owned["id"])
        with Session(probe.stack.engine) as session:
            before = session.get(WebhookEndpoint, endpoint_id)
            assert before is not None
            sealed = before.secret
        extra = {"json_for": lambda _: json_body} if json_body is not None else {}
        resp = await probe.same_as_missing(
            method, lambda v: f"{WEBHOOKS}/{v}{suffix}", owned["id"], **extra
        )
        assert resp.status_code == 404
        after = await probe.stack.http.get(f"{WEBHOOKS}/{owned['id']}", headers=probe.owner.headers)
        assert after.status_code == 200
        assert {k: after.json()[k] for k in ("url", "enabled", "events")} == {
            k: owned[k] for k in ("url", "enabled", "events")
        }
        with Session(probe.stack.engine) as session:
            row = session.get(WebhookEndpoint, endpoint_id)
            assert row is not None and row.secret == sealed, "the secret was rotated"

    return check


async def _redeliver_foreign_delivery(probe: Probe) -> None:
    """The intruder's own endpoint with the owner's delivery id: like a missing delivery."""
    owned = await _owner_webhook(probe)
    delivery = WebhookDelivery(
        endpoint_id=uuid.UUID(owned["id"]),
        user_id=probe.owner.user.id,
        event_id=f"evt_{uuid.uuid4().hex}",
        event_type="call.ended",
        stream=f"call:{uuid.uuid4()}",
        sequence=1,
        payload="{}",
        state="failed",
    )
    with session_scope(probe.stack.engine) as session:
        session.add(delivery)
    mine = await probe.send("POST", WEBHOOKS, json={"url": "http://127.0.0.1:9/mine"})
    assert mine.status_code == 201, mine.text
    resp = await probe.same_as_missing(
        "POST",
        lambda v: f"{WEBHOOKS}/{mine.json()['id']}/deliveries/{v}/redeliver",
        str(delivery.id),
    )
    assert resp.status_code == 404
    with Session(probe.stack.engine) as session:
        row = session.get(WebhookDelivery, delivery.id)
        assert row is not None and row.state == "failed", "another user's request redelivered it"


async def _delete_suppression(probe: Probe) -> None:
    number = "+12025550108"
    with session_scope(probe.stack.engine) as session:
        session.add(SuppressedNumber(user_id=probe.owner.user.id, number=number))
    resp = await probe.same_as_missing("DELETE", lambda v: f"/api/v1/suppressions/{v}", number)
    assert resp.status_code == 404
    listed = await probe.stack.http.get("/api/v1/suppressions", headers=probe.owner.headers)
    assert [s["phone_number"] for s in listed.json()] == [number], "the owner's entry is gone"


def _mapping_with(field: str) -> Check:
    """Body ids of POST /phone/mapping (not generated from the route table: bodies are
    schemas, not parameters; listed because a mapping is where foreign ids would link)."""

    async def check(probe: Probe) -> None:
        intruder_line = await probe.stack.http.post(
            "/api/v1/phone", json={"number": "+12025550198"}, headers=probe.intruder.headers
        )
        assert intruder_line.status_code == 201, intruder_line.text
        agent = await probe.stack.http.post(
            "/api/v1/agents", json={"name": "mine"}, headers=probe.intruder.headers
        )
        own = {"phone_number_id": intruder_line.json()["id"], "agent_id": agent.json()["id"]}
        foreign = {
            "phone_number_id": _owner_line(probe),
            "agent_id": _owned(probe, Agent),
            "workflow_id": _owned(probe, Flow),
        }[field]

        def body(v: str) -> dict[str, Any]:
            b = dict(own)
            if field == "workflow_id":
                b.pop("agent_id")
            b[field] = v
            return b

        resp = await probe.same_as_missing(
            "POST", lambda _: "/api/v1/phone/mapping", foreign, json_for=body
        )
        assert resp.status_code == 404

    return check


async def _owner_campaign(probe: Probe) -> str:
    resp = await probe.stack.http.post(
        "/api/v1/batch-call/create",
        json={
            "batch_name": "owner's",
            "agent_id": _owned(probe, Agent),
            "recipients": [{"phone_number": "+12025550100"}],
            # Not due for a long time: the campaign stays put while it is probed.
            "options": {"start_at": "2099-01-01T00:00:00Z"},
        },
        headers=probe.owner.headers,
    )
    assert resp.status_code == 201, resp.text
    campaign_id: str = resp.json()["campaign"]["id"]
    return campaign_id


def _campaign_route(method: str, action: str) -> Check:
    async def check(probe: Probe) -> None:
        campaign = await _owner_campaign(probe)
        resp = await probe.same_as_missing(
            method, lambda v: f"/api/v1/batch-call/{v}/{action}", campaign
        )
        assert resp.status_code == 404
        mine = await probe.stack.http.get(
            f"/api/v1/batch-call/{campaign}/status", headers=probe.owner.headers
        )
        assert mine.status_code == 200
        assert mine.json()["state"] not in ("canceled", "paused"), "another user changed it"

    return check


async def _campaign_for_foreign_agent(probe: Probe) -> None:
    resp = await probe.same_as_missing(
        "POST",
        lambda _: "/api/v1/batch-call/create",
        _owned(probe, Agent),
        json_for=lambda v: {
            "batch_name": "intruder's",
            "agent_id": v,
            "recipients": [{"phone_number": "+12025550100"}],
        },
    )
    assert resp.status_code == 404


async def _provider_callback(probe: Probe) -> None:
    """The webhook is not behind API keys but behind the provider's signature: without it,
    an existing session and a made-up one get the same refusal (no existence leak)."""
    owned = await _owner_call(probe)
    for headers in ({}, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}):
        resp = await probe.same_as_missing(
            "POST",
            lambda v: f"/telephony/twilio/status?call_session_id={v}&attempt={v}.1",
            owned["call_session_id"],
            data={"CallSid": "CA00", "CallStatus": "completed"},
            headers=headers,
        )
        assert resp.status_code == 403


COVERAGE: dict[tuple[str, str, str], Check] = {
    ("POST", "/telephony/twilio/status", "call_session_id"): _provider_callback,
    ("GET", "/api/v1/batch-call/{campaign_id}/status", "campaign_id"): _campaign_route(
        "GET", "status"
    ),
    **{
        ("POST", f"/api/v1/batch-call/{{campaign_id}}/{action}", "campaign_id"): _campaign_route(
            "POST", action
        )
        for action in ("pause", "resume", "cancel")
    },
    **{
        ("GET", f"/api/v1/batch-call/{{campaign_id}}/{what}", "campaign_id"): _campaign_route(
            "GET", what
        )
        for what in ("recipients", "recipients.csv")
    },
    ("POST", "/api/call/create_call", "agent_id"): _create_call_with(
        "agent_id", lambda p: _owned(p, Agent)
    ),
    ("POST", "/api/call/create_call", "workflow_id"): _create_call_with(
        "workflow_id", lambda p: _owned(p, Flow)
    ),
    ("POST", "/api/call/create_call", "phone_number_id"): _create_call_with(
        "phone_number_id", _owner_line
    ),
    ("GET", "/api/v1/call-analytics", "request_id"): _analytics_by("request_id"),
    ("GET", "/api/v1/call-analytics", "call_session_id"): _analytics_by("call_session_id"),
    ("GET", "/api/v1/call-analytics", "campaign_id"): _analytics_by_campaign,
    ("GET", "/api/v1/call-analytics", "external_id"): _analytics_by_external_id,
    **{
        ("POST", f"/api/v1/calls/{{call_session_id}}/{action}", "call_session_id"): _control_call(
            action
        )
        for action in ("cancel", "hangup")
    },
    ("PATCH", "/api/v1/phone/{phone_number_id}", "phone_number_id"): _patch_line,
    ("POST", "/api/v1/phone/{phone_number_id}/confirm", "phone_number_id"): _confirm_line,
    ("PATCH", "/api/v1/agents/{agent_id}", "agent_id"): _patch_named(Agent, "/api/v1/agents"),
    ("GET", "/api/v1/webhooks/{webhook_id}", "webhook_id"): _webhook_route("GET"),
    ("PATCH", "/api/v1/webhooks/{webhook_id}", "webhook_id"): _webhook_route(
        "PATCH", json_body={"url": "http://127.0.0.1:9/intruder", "enabled": False}
    ),
    ("DELETE", "/api/v1/webhooks/{webhook_id}", "webhook_id"): _webhook_route("DELETE"),
    ("POST", "/api/v1/webhooks/{webhook_id}/rotate-secret", "webhook_id"): _webhook_route(
        "POST", "/rotate-secret"
    ),
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries", "webhook_id"): _webhook_route(
        "GET", "/deliveries"
    ),
    (
        "POST",
        "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
        "webhook_id",
    ): _webhook_route("POST", f"/deliveries/{uuid.uuid4()}/redeliver"),
    (
        "POST",
        "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
        "delivery_id",
    ): _redeliver_foreign_delivery,
    ("PATCH", "/api/v1/workflows/{workflow_id}", "workflow_id"): _patch_named(
        Flow, "/api/v1/workflows"
    ),
    ("DELETE", "/api/v1/suppressions/{number}", "number"): _delete_suppression,
}
BODY_COVERAGE: dict[tuple[str, str, str], Check] = {
    **{
        ("POST", "/api/v1/phone/mapping", f"body.{field}"): _mapping_with(field)
        for field in ("phone_number_id", "agent_id", "workflow_id")
    },
    ("POST", "/api/v1/batch-call/create", "body.agent_id"): _campaign_for_foreign_agent,
}


def test_every_id_taking_route_is_covered() -> None:
    routes = id_parameters()
    missing = sorted(routes - COVERAGE.keys())
    assert not missing, f"id-taking routes without a tenant-isolation check: {missing}"
    stale = sorted(COVERAGE.keys() - routes)
    assert not stale, f"checks for routes that no longer exist: {stale}"


@pytest.mark.parametrize("route", sorted({**COVERAGE, **BODY_COVERAGE}), ids=lambda r: " ".join(r))
async def test_foreign_id_behaves_like_missing(stack: Stack, route: tuple[str, str, str]) -> None:
    probe = Probe(
        stack=stack, owner=make_account(stack.engine), intruder=make_account(stack.engine)
    )
    await {**COVERAGE, **BODY_COVERAGE}[route](probe)
