"""The demo agent's wiring: served in development only, its URL, and `dialer run` pointing the
demo account at it. Its behaviour over a real socket is in tests/e2e/test_demo_agent.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from starlette.routing import NoMatchFound

from api.app import create_app
from api.routes.demo_agent import MEDIA_PATH, demo_agent_url
from core.config import Settings
from dialer.stack import demo_agent_env
from store import crud
from store.models import Agent


def _demo_agent_path(settings: Settings) -> str | None:
    try:
        return create_app(settings).url_path_for("demo_agent_media")
    except NoMatchFound:
        return None


def test_the_demo_agent_is_served_in_development_only(tmp_path: Path) -> None:
    development = Settings(_env_file=None, data_dir=tmp_path)
    production = Settings(_env_file=None, data_dir=tmp_path, env="production")
    assert _demo_agent_path(development) == MEDIA_PATH
    assert _demo_agent_path(production) is None


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "ws://127.0.0.1:8000/demo/agent/media"),
        ("0.0.0.0", "ws://127.0.0.1:8000/demo/agent/media"),
        ("::", "ws://127.0.0.1:8000/demo/agent/media"),
        ("::1", "ws://[::1]:8000/demo/agent/media"),
        ("dialer.internal", "ws://dialer.internal:8000/demo/agent/media"),
    ],
)
def test_the_demo_agent_url_is_where_a_local_worker_reaches_the_api(host: str, url: str) -> None:
    assert demo_agent_url(host, 8000) == url


def test_dialer_run_defaults_the_media_stream_to_the_demo_agent(tmp_path: Path) -> None:
    dev = Settings(_env_file=None, data_dir=tmp_path, api_port=8100)
    assert demo_agent_env(dev) == {
        "DIALER_MEDIA_STREAM_URL": "ws://127.0.0.1:8100/demo/agent/media"
    }
    # A URL of your own wins; production has no demo agent.
    own = Settings(_env_file=None, data_dir=tmp_path, media_stream_url="wss://agent.example/m")
    assert demo_agent_env(own) == {}
    assert demo_agent_env(Settings(_env_file=None, data_dir=tmp_path, env="production")) == {}


def _demo_agent_url(engine: Engine) -> str | None:
    with Session(engine) as session:
        (agent,) = session.exec(select(Agent)).all()
        return agent.media_stream_url


def test_seeding_gives_the_demo_agent_its_url_and_keeps_one_of_your_own(engine: Engine) -> None:
    crud.seed_demo(engine=engine)
    assert _demo_agent_url(engine) is None
    first = demo_agent_url("127.0.0.1", 8000)
    crud.seed_demo(engine=engine, agent_media_stream_url=first)
    assert _demo_agent_url(engine) == first
    # Another run on another port: the demo agent's URL follows it.
    moved = demo_agent_url("127.0.0.1", 8100)
    crud.seed_demo(engine=engine, agent_media_stream_url=moved)
    assert _demo_agent_url(engine) == moved
    # A URL you gave the demo agent yourself stays.
    with Session(engine) as session:
        (agent,) = session.exec(select(Agent)).all()
        agent.media_stream_url = "wss://agent.example/media"
        session.add(agent)
        session.commit()
    crud.seed_demo(engine=engine, agent_media_stream_url=first)
    assert _demo_agent_url(engine) == "wss://agent.example/media"
