"""Users, API keys, caller lines and the demo account (used by the CLI and the tests)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from core.security import generate_key, hash_key
from store.db import session_scope
from store.models import Agent, ApiKey, Flow, LineMapping, PhoneNumber, User, utcnow


class NotFound(LookupError):
    pass


def create_user(*, engine: Engine, email: str) -> User:
    email = email.strip().lower()
    if "@" not in email:
        raise ValueError(f"not an email address: {email!r}")
    with session_scope(engine) as session:
        if session.exec(select(User).where(User.email == email)).first():
            raise ValueError(f"user {email} exists already")
        user = User(email=email)
        session.add(user)
    return user


def get_user(*, engine: Engine, email: str) -> User:
    with Session(engine) as session:
        user = session.exec(select(User).where(User.email == email.strip().lower())).first()
    if user is None:
        raise NotFound(f"no user with email {email}")
    return user


def create_key(*, engine: Engine, user: User, secret: str) -> str:
    """Create an API key and return it: the only time it exists outside a hash."""
    key, prefix = generate_key()
    with session_scope(engine) as session:
        session.add(ApiKey(user_id=user.id, prefix=prefix, key_hash=hash_key(key, secret)))
    return key


def revoke_keys(*, engine: Engine, user: User, prefix: str | None = None) -> int:
    with session_scope(engine) as session:
        query = select(ApiKey).where(ApiKey.user_id == user.id, col(ApiKey.revoked_at).is_(None))
        if prefix:
            query = query.where(ApiKey.prefix == prefix)
        keys = session.exec(query).all()
        for key in keys:
            key.revoked_at = utcnow()
            session.add(key)
    return len(keys)


def list_keys(*, engine: Engine, user: User) -> list[ApiKey]:
    """The user's keys, oldest first: prefixes and times only (the secret exists only hashed)."""
    with Session(engine) as session:
        return list(
            session.exec(
                select(ApiKey)
                .where(ApiKey.user_id == user.id)
                .order_by(col(ApiKey.created_at), col(ApiKey.id))
            ).all()
        )


def key_is_valid(*, engine: Engine, key: str, secret: str) -> bool:
    with Session(engine) as session:
        row = session.exec(select(ApiKey).where(ApiKey.key_hash == hash_key(key, secret))).first()
    return row is not None and row.revoked_at is None


def list_lines(
    *, engine: Engine, user_id: uuid.UUID | None = None
) -> list[tuple[PhoneNumber, str]]:
    """Every caller line (of one user, or of every account) with its user's email, oldest
    first."""
    query = select(PhoneNumber, User.email).join(User, col(User.id) == col(PhoneNumber.user_id))
    if user_id is not None:
        query = query.where(PhoneNumber.user_id == user_id)
    with Session(engine) as session:
        rows = session.exec(query.order_by(col(PhoneNumber.created_at), col(PhoneNumber.id)))
        return [(line, email) for line, email in rows.all()]


def confirm_line(*, engine: Engine, line_id: uuid.UUID, carrier: str) -> None:
    """Record that `carrier` confirmed the line's number as its account's own."""
    with session_scope(engine) as session:
        line = session.get(PhoneNumber, line_id)
        if line is None:
            raise NotFound(f"no line {line_id}")
        line.confirmed_by = carrier
        line.confirmed_at = utcnow()
        session.add(line)


@dataclass(frozen=True)
class Demo:
    user: User
    agent: Agent
    flow: Flow
    line: PhoneNumber


DEMO_EMAIL = "demo@dialer.local"
DEMO_LINE = "+12025550199"


def seed_demo(*, engine: Engine, agent_media_stream_url: str | None = None) -> Demo:
    """A demo user with an agent and a flow, both mapped to one active simulated line.
    Idempotent: running it again returns what is there. `agent_media_stream_url` (the demo
    agent the API serves, api/routes/demo_agent.py) becomes the agent's media stream unless
    it has one of another path: a URL of the user's own is kept, the demo agent's of an
    earlier run on another port is replaced."""
    with session_scope(engine) as session:
        user = session.exec(select(User).where(User.email == DEMO_EMAIL)).first()
        if user is None:
            user = User(email=DEMO_EMAIL)
            session.add(user)
            session.flush()
        line = session.exec(
            select(PhoneNumber).where(
                PhoneNumber.user_id == user.id, PhoneNumber.number == DEMO_LINE
            )
        ).first()
        if line is None:
            line = PhoneNumber(
                user_id=user.id, number=DEMO_LINE, owner_number=DEMO_LINE, label="demo line"
            )
            session.add(line)
        agent = session.exec(select(Agent).where(Agent.user_id == user.id)).first()
        if agent is None:
            agent = Agent(user_id=user.id, name="Demo agent")
            session.add(agent)
        if agent_media_stream_url and (
            agent.media_stream_url is None
            or urlsplit(agent.media_stream_url).path == urlsplit(agent_media_stream_url).path
        ):
            agent.media_stream_url = agent_media_stream_url
            session.add(agent)
        flow = session.exec(select(Flow).where(Flow.user_id == user.id)).first()
        if flow is None:
            flow = Flow(user_id=user.id, name="Demo workflow")
            session.add(flow)
        session.flush()
        for mapping in (
            LineMapping(user_id=user.id, phone_number_id=line.id, agent_id=agent.id),
            LineMapping(user_id=user.id, phone_number_id=line.id, flow_id=flow.id),
        ):
            column = LineMapping.agent_id if mapping.agent_id else LineMapping.flow_id
            value = mapping.agent_id or mapping.flow_id
            if session.exec(select(LineMapping).where(column == value)).first() is None:
                session.add(mapping)
    return Demo(user=user, agent=agent, flow=flow, line=line)
