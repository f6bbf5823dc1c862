"""The demo agent: a media stream endpoint the API serves in development mode, so that
`make run` shows a call reach its agent with no agent of your own (`dialer run` points the demo
agent's media_stream_url and DIALER_MEDIA_STREAM_URL at it).

It speaks the agent's side of the media stream protocol (telephony/media_stream.py): it reads
`start` and logs what it received (the call's ids, and only the names of its variables: their
values may be personal), answers with a short tone and a mark, and hangs up after
HANG_UP_AFTER_SECONDS unless the callee hung up first. Not served in production: it has no
authentication, as an agent's endpoint needs none from the carrier."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from contracts.context import RESERVED_PARAMETERS
from core.logs import call_context
from telephony.media_stream import frames, tone

log = logging.getLogger("dialer.demo_agent")

PREFIX = "/demo/agent"
MEDIA_PATH = f"{PREFIX}/media"
# The demo agent hangs up this long after the stream started: shorter than the simulated
# callee's talk time (DIALER_SIMULATED_TALK_SECONDS, 8 s by default), so a demo call shows
# the agent ending it.
HANG_UP_AFTER_SECONDS = 4.0
# What it says: a 440 Hz tone, then a mark the carrier echoes once the tone has played.
GREETING_HERTZ = 440.0
GREETING_MILLISECONDS = 400
GREETING_MARK = "greeting"
# A connection that never sends `start` is closed after this long.
START_TIMEOUT_SECONDS = 10.0

router = APIRouter(prefix=PREFIX, tags=["demo"])


def demo_agent_url(host: str, port: int) -> str:
    """Where a worker on this machine reaches the demo agent of the API at host:port."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"  # listening everywhere: loopback is one of them
    elif ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{port}{MEDIA_PATH}"


async def _next_message(websocket: WebSocket, timeout: float) -> dict[str, Any] | None:
    """The next JSON message; None when the socket closed. TimeoutError past `timeout`."""
    while True:
        message = await asyncio.wait_for(websocket.receive(), timeout)
        if message["type"] == "websocket.disconnect":
            return None
        try:
            parsed = json.loads(message.get("text") or "")
        except ValueError:
            continue
        if isinstance(parsed, dict):
            return parsed


def _greeting(stream_sid: str) -> list[dict[str, Any]]:
    audio = tone(hertz=GREETING_HERTZ, milliseconds=GREETING_MILLISECONDS)
    messages: list[dict[str, Any]] = [
        {
            "event": "media",
            "streamSid": stream_sid,
            "media": {"payload": base64.b64encode(frame).decode("ascii")},
        }
        for frame in frames(audio)
    ]
    messages.append({"event": "mark", "streamSid": stream_sid, "mark": {"name": GREETING_MARK}})
    return messages


@router.websocket("/media")
async def demo_agent_media(websocket: WebSocket) -> None:
    """The demo agent's media stream: logs the call it got, plays a tone, hangs up."""
    await websocket.accept()
    loop = asyncio.get_running_loop()
    try:
        start: dict[str, Any] | None = None
        while start is None:
            message = await _next_message(websocket, START_TIMEOUT_SECONDS)
            if message is None:
                return
            if message.get("event") == "start":
                start = message.get("start")
                start = start if isinstance(start, dict) else {}
    except TimeoutError:
        log.info("demo agent: no start message within %.0fs; closing", START_TIMEOUT_SECONDS)
        await websocket.close(1008)
        return
    hang_up_at = loop.time() + HANG_UP_AFTER_SECONDS
    stream_sid = str(start.get("streamSid") or "")
    parameters = start.get("customParameters")
    parameters = parameters if isinstance(parameters, dict) else {}
    ids = {k: v for k, v in parameters.items() if k in RESERVED_PARAMETERS}
    variables = sorted(k for k in parameters if k not in RESERVED_PARAMETERS)
    with call_context(request_id=ids.get("request_id"), call_session_id=ids.get("call_session_id")):
        log.info(
            "demo agent: stream %s of call %s started; ids %s; variables %s",
            stream_sid,
            start.get("callSid"),
            ", ".join(f"{k}={v}" for k, v in ids.items()) or "none",
            ", ".join(variables) or "none",
        )
        for reply in _greeting(stream_sid):
            await websocket.send_text(json.dumps(reply))
        try:
            while (left := hang_up_at - loop.time()) > 0:
                message = await _next_message(websocket, left)
                if message is None:
                    log.info("demo agent: the stream closed")
                    return
                event = message.get("event")
                if event == "stop":
                    log.info("demo agent: the callee hung up (stop)")
                    return
                if event == "mark":
                    mark = message.get("mark")
                    name = mark.get("name") if isinstance(mark, dict) else None
                    log.info("demo agent: mark %s played", name)
        except TimeoutError:
            pass
        log.info("demo agent: hanging up after %.0fs", HANG_UP_AFTER_SECONDS)
        if websocket.client_state == WebSocketState.CONNECTED:
            await websocket.close(1000)
