"""The embedded stack's codec opens to the dev server's UI in this machine's browser only:
DIALER_CODEC_LOCAL_UI on, a loopback client, an Origin among the codec's CORS origins. Any
other request still needs the operator token, and production refuses the setting."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from api.app import create_app
from core.config import Settings

KEYS = "k1:" + base64.b64encode(os.urandom(32)).decode()
UI = "http://localhost:8233"
BODY: dict[str, list[object]] = {"payloads": []}


async def _decode(
    tmp_path: Path, *, local_ui: bool, client: str = "127.0.0.1", origin: str | None = UI
) -> int:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        payload_keys=SecretStr(KEYS),
        codec_auth_token=SecretStr("operator-token-for-tests"),
        codec_local_ui=local_ui,
        temporal_ui_port=8233,
    )
    app = create_app(settings)
    app.state.settings = settings  # what the lifespan does; the codec needs nothing else
    transport = httpx.ASGITransport(app=app, client=(client, 50000))
    headers = {"origin": origin} if origin else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as http:
        return (await http.post("/codec/decode", json=BODY, headers=headers)).status_code


async def test_the_local_ui_decodes_without_a_token(tmp_path: Path) -> None:
    assert await _decode(tmp_path, local_ui=True) == 200


@pytest.mark.parametrize(
    ("client", "origin"),
    [
        ("127.0.0.1", None),  # no browser origin: the CLI and scripts keep the token
        ("127.0.0.1", "http://evil.example"),  # another site's page
        ("10.1.2.3", UI),  # another machine, even claiming the UI's origin
    ],
)
async def test_anyone_else_still_needs_the_token(
    tmp_path: Path, client: str, origin: str | None
) -> None:
    assert await _decode(tmp_path, local_ui=True, client=client, origin=origin) == 401


async def test_without_the_setting_the_ui_needs_the_token(tmp_path: Path) -> None:
    assert await _decode(tmp_path, local_ui=False) == 401


def test_production_refuses_the_setting(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, env="production", data_dir=tmp_path, codec_local_ui=True)
    assert any("DIALER_CODEC_LOCAL_UI" in problem for problem in settings.problems())
