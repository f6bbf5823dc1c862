"""The user's caller lines, agents, flows (`workflow_id`), and the mappings between them."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from anyio import from_thread
from fastapi import APIRouter, HTTPException, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped
from sqlmodel import col, select

from api.deps import (
    AUTH_ERRORS,
    CurrentUser,
    LineConfirmerDep,
    Responses,
    SessionDep,
    SettingsDep,
)
from api.schemas import (
    AgentPublic,
    Detail,
    FlowPublic,
    MappingCreate,
    MappingPublic,
    NamedCreate,
    NamedUpdate,
    PhoneNumberCreate,
    PhoneNumberPublic,
    PhoneNumberUpdate,
)
from core.phone import InvalidNumber, normalize
from services.lines import CarrierUnavailable, NumberNotOwned
from store.models import Agent, Flow, LineMapping, PhoneNumber, utcnow

router = APIRouter(prefix="/api/v1", responses=AUTH_ERRORS)
NOT_FOUND: Responses = {404: {"model": Detail, "description": "Not found (or not yours)"}}

# TypeVars, not unions, so `session.get` and `select` give back the model passed in.
_Owned = TypeVar("_Owned", PhoneNumber, Agent, Flow)
_Named = TypeVar("_Named", Agent, Flow)


# A number is one account's line: another account's claim answers exactly like a duplicate
# of one's own, so a 409 tells nobody more than that the number is taken.
LINE_TAKEN = "this line exists already"
TAKEN: Responses = {409: {"model": Detail, "description": "The line exists already"}}


# A carrier that keeps an account of numbers (Twilio) confirms a line before it can dial.
NOT_CONFIRMED = (
    "number: not confirmed: it is neither an incoming number nor a verified caller id of the "
    "carrier account this service dials through (buy or verify it there first); nothing was "
    "changed"
)
CARRIER_DOWN = (
    "the carrier could not be asked whether the number is its account's own; nothing was "
    "changed: try again"
)
CONFIRM_ERRORS: Responses = {
    422: {"model": Detail, "description": "Unreadable, or not the carrier account's number"},
    503: {"model": Detail, "description": "The carrier could not be asked"},
}


def _taken(session: SessionDep, number: str, user_id: uuid.UUID) -> bool:
    """The number is a line already: another account's claim, or this account's own."""
    return (
        session.exec(
            select(PhoneNumber.id).where(
                (PhoneNumber.owner_number == number)
                | ((PhoneNumber.user_id == user_id) & (PhoneNumber.number == number))
            )
        ).first()
        is not None
    )


def _confirm(lines: LineConfirmerDep, session: SessionDep, number: str, label: str) -> str:
    """The carrier that confirmed `number` as its account's own, or the HTTP answer why not.
    The database connection goes back to the pool first: the carrier may take seconds."""
    session.close()
    try:
        return from_thread.run(lines.confirm, number, label)
    except NumberNotOwned as exc:
        raise HTTPException(422, NOT_CONFIRMED) from exc
    except CarrierUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, CARRIER_DOWN) from exc


def _claimed_elsewhere(session: SessionDep, number: str, user_id: uuid.UUID) -> bool:
    return (
        session.exec(
            select(PhoneNumber.id).where(
                PhoneNumber.owner_number == number, PhoneNumber.user_id != user_id
            )
        ).first()
        is not None
    )


def _owned(
    session: SessionDep, model: type[_Owned], id_: uuid.UUID, user_id: uuid.UUID, what: str
) -> _Owned:
    row = session.get(model, id_)
    if row is None or row.user_id != user_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")
    return row


@router.get("/phone", response_model=list[PhoneNumberPublic], tags=["lines"])
def list_lines(user: CurrentUser, session: SessionDep) -> list[PhoneNumber]:
    """The user's caller lines, oldest first (the default line is the first active one)."""
    return list(
        session.exec(
            select(PhoneNumber)
            .where(PhoneNumber.user_id == user.user_id)
            .order_by(col(PhoneNumber.created_at), col(PhoneNumber.id))
        ).all()
    )


@router.post(
    "/phone",
    response_model=PhoneNumberPublic,
    status_code=201,
    responses={**TAKEN, **CONFIRM_ERRORS},
    tags=["lines"],
)
def create_line(
    body: PhoneNumberCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    lines: LineConfirmerDep,
) -> PhoneNumber:
    """Add a caller line, once the carrier that dials it confirms the number is its account's
    own (Twilio: an incoming number or a verified caller id)."""
    try:
        number = normalize(body.number, settings.default_region)
    except InvalidNumber as exc:
        raise HTTPException(422, f"number: {exc}") from exc
    # Taken before the carrier is asked: a 409 says no more than that, whoever holds it.
    if _taken(session, number, user.user_id):
        raise HTTPException(409, LINE_TAKEN)
    confirmed_by = _confirm(lines, session, number, body.provider)
    line = PhoneNumber(
        user_id=user.user_id,
        number=number,
        owner_number=number,
        provider=body.provider,
        label=body.label,
        active=body.active,
        confirmed_by=confirmed_by,
        confirmed_at=utcnow(),
    )
    session.add(line)
    try:
        session.commit()
    except IntegrityError as exc:
        # Its own duplicate, or another account's claim that won a race with this one.
        session.rollback()
        raise HTTPException(409, LINE_TAKEN) from exc
    return line


@router.patch(
    "/phone/{phone_number_id}",
    response_model=PhoneNumberPublic,
    responses={**NOT_FOUND, **TAKEN},
    tags=["lines"],
)
def update_line(
    phone_number_id: uuid.UUID, body: PhoneNumberUpdate, user: CurrentUser, session: SessionDep
) -> PhoneNumber:
    """Activate or deactivate a line, or relabel it."""
    line = _owned(session, PhoneNumber, phone_number_id, user.user_id, "phone number")
    if body.active and line.owner_number is None:
        # A line without its claim (one migration 0007 found on a second account, or one
        # made outside the API) claims its number when activated, if nobody else has.
        if _claimed_elsewhere(session, line.number, user.user_id):
            raise HTTPException(409, LINE_TAKEN)
        line.owner_number = line.number
    if body.active is not None:
        line.active = body.active
    if body.label is not None:
        line.label = body.label
    session.add(line)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise HTTPException(409, LINE_TAKEN) from exc
    return line


@router.post(
    "/phone/{phone_number_id}/confirm",
    response_model=PhoneNumberPublic,
    responses={**NOT_FOUND, **CONFIRM_ERRORS},
    tags=["lines"],
)
def confirm_line(
    phone_number_id: uuid.UUID, user: CurrentUser, session: SessionDep, lines: LineConfirmerDep
) -> PhoneNumber:
    """Ask the carrier that dials the line again whether its number is the account's own (a
    line added before the check, or after a change of carrier); a refusal changes nothing."""
    line = _owned(session, PhoneNumber, phone_number_id, user.user_id, "phone number")
    line.confirmed_by = _confirm(lines, session, line.number, line.provider)
    line.confirmed_at = utcnow()
    session.add(line)
    session.commit()
    return line


@router.post(
    "/phone/mapping",
    response_model=MappingPublic,
    status_code=201,
    responses=NOT_FOUND,
    tags=["lines"],
)
def map_line(body: MappingCreate, user: CurrentUser, session: SessionDep) -> MappingPublic:
    """Map an agent or a workflow (exactly one) to a line; replaces its previous mapping."""
    _owned(session, PhoneNumber, body.phone_number_id, user.user_id, "phone number")
    if body.agent_id:
        _owned(session, Agent, body.agent_id, user.user_id, "agent")
        existing = session.exec(
            select(LineMapping).where(LineMapping.agent_id == body.agent_id)
        ).first()
    else:
        assert body.workflow_id is not None
        _owned(session, Flow, body.workflow_id, user.user_id, "workflow")
        existing = session.exec(
            select(LineMapping).where(LineMapping.flow_id == body.workflow_id)
        ).first()
    mapping = existing or LineMapping(
        user_id=user.user_id,
        phone_number_id=body.phone_number_id,
        agent_id=body.agent_id,
        flow_id=body.workflow_id,
    )
    mapping.phone_number_id = body.phone_number_id
    session.add(mapping)
    session.commit()
    return MappingPublic(
        id=mapping.id,
        phone_number_id=mapping.phone_number_id,
        agent_id=mapping.agent_id,
        workflow_id=mapping.flow_id,
        created_at=mapping.created_at,
    )


def _named_list(
    session: SessionDep, model: type[_Named], user_id: uuid.UUID, column: Mapped[uuid.UUID | None]
) -> list[dict[str, Any]]:
    rows = session.exec(
        select(model, LineMapping.phone_number_id)
        .outerjoin(LineMapping, column == model.id)
        .where(model.user_id == user_id)
        .order_by(col(model.created_at), col(model.id))
    ).all()
    return [_named_public(r, line) for r, line in rows]


def _named_public(row: Agent | Flow, line: uuid.UUID | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "media_stream_url": row.media_stream_url,
        "created_at": row.created_at,
        "phone_number_id": line,
    }


def _update_named(
    session: SessionDep,
    model: type[_Named],
    id_: uuid.UUID,
    body: NamedUpdate,
    user_id: uuid.UUID,
    what: str,
    column: Mapped[uuid.UUID | None],
) -> dict[str, Any]:
    """Change the fields the body names; `media_stream_url: null` removes the URL. The calls
    it changes are the ones validated after: a call already dialing keeps its URL."""
    row = _owned(session, model, id_, user_id, what)
    given = body.model_dump(exclude_unset=True)
    if given.get("name", "") is None:
        raise HTTPException(422, "name cannot be null")
    for field, value in given.items():
        setattr(row, field, value)
    session.add(row)
    session.commit()
    line = session.exec(select(LineMapping.phone_number_id).where(column == row.id)).first()
    return _named_public(row, line)


@router.get("/agents", response_model=list[AgentPublic], tags=["agents"])
def list_agents(user: CurrentUser, session: SessionDep) -> list[dict[str, Any]]:
    """The user's agents, each with its mapped line and media stream URL."""
    return _named_list(session, Agent, user.user_id, col(LineMapping.agent_id))


@router.post("/agents", response_model=AgentPublic, status_code=201, tags=["agents"])
def create_agent(body: NamedCreate, user: CurrentUser, session: SessionDep) -> Agent:
    """Create an agent, with the WebSocket its calls are streamed to."""
    agent = Agent(user_id=user.user_id, name=body.name, media_stream_url=body.media_stream_url)
    session.add(agent)
    session.commit()
    return agent


@router.patch(
    "/agents/{agent_id}", response_model=AgentPublic, responses=NOT_FOUND, tags=["agents"]
)
def update_agent(
    agent_id: uuid.UUID, body: NamedUpdate, user: CurrentUser, session: SessionDep
) -> dict[str, Any]:
    """Rename an agent or change its media stream URL."""
    return _update_named(
        session, Agent, agent_id, body, user.user_id, "agent", col(LineMapping.agent_id)
    )


@router.get("/workflows", response_model=list[FlowPublic], tags=["workflows"])
def list_flows(user: CurrentUser, session: SessionDep) -> list[dict[str, Any]]:
    """The user's conversation workflows, each with its mapped line and media stream URL."""
    return _named_list(session, Flow, user.user_id, col(LineMapping.flow_id))


@router.post("/workflows", response_model=FlowPublic, status_code=201, tags=["workflows"])
def create_flow(body: NamedCreate, user: CurrentUser, session: SessionDep) -> Flow:
    """Create a conversation workflow (the `workflow_id` of create_call)."""
    flow = Flow(user_id=user.user_id, name=body.name, media_stream_url=body.media_stream_url)
    session.add(flow)
    session.commit()
    return flow


@router.patch(
    "/workflows/{workflow_id}",
    response_model=FlowPublic,
    responses=NOT_FOUND,
    tags=["workflows"],
)
def update_flow(
    workflow_id: uuid.UUID, body: NamedUpdate, user: CurrentUser, session: SessionDep
) -> dict[str, Any]:
    """Rename a conversation workflow or change its media stream URL."""
    return _update_named(
        session, Flow, workflow_id, body, user.user_id, "workflow", col(LineMapping.flow_id)
    )
