"""The simulated carrier speaks the media stream protocol (telephony/media_stream.py) to an
agent: real WebSocket servers on 127.0.0.1 as the agent, nothing of the socket mocked."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from http import HTTPStatus
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from websockets.asyncio.server import ServerConnection

from contracts.lifecycle import CallStatus, StatusEvent, is_final
from store.simulated_ledger import DatabaseLedger
from telephony.base import DialRequest
from telephony.media_stream import (
    FRAME_BYTES,
    MULAW_SILENCE,
    StreamEnd,
    frames,
    mulaw_byte,
    stream_call,
    tone,
)
from telephony.simulated import SimulatedProvider, SimulatedTimeline
from tests.support.media_agent import media_agent, unused_url
from tests.support.waiting import wait_until

FROM = "+12025550199"
PARAMETERS = {
    "request_id": "0b9d2a4e-1111-4222-8333-444455556666",
    "call_session_id": "7c0e9b1a-3333-4444-8555-666677778888",
    "user_id": "5d1f6a2e-2222-4333-8444-555566667777",
    "first_name": "Ada",
    "vip": "true",
}


def at_once(talk_seconds: float) -> SimulatedTimeline:
    """Answered as soon as it is placed, then `talk_seconds` before the callee hangs up."""
    return SimulatedTimeline(ring_seconds=0, answer_seconds=0, talk_seconds=talk_seconds)


def request(url: str | None, to: str = "+12025550100") -> DialRequest:
    return DialRequest(
        call_session_id=str(uuid.uuid4()),
        request_id=str(uuid.uuid4()),
        attempt=1,
        to_number=to,
        from_number=FROM,
        media_stream_url=url,
        stream_parameters=PARAMETERS,
    )


class Calls:
    """The carrier's status deliveries, and a wait for the final one."""

    def __init__(self) -> None:
        self.events: list[StatusEvent] = []
        self.ended = asyncio.Event()

    async def __call__(self, events: Sequence[StatusEvent]) -> None:
        self.events.extend(events)
        if any(is_final(e.status) for e in events):
            self.ended.set()

    async def final(self, timeout: float = 15.0) -> StatusEvent:
        await asyncio.wait_for(self.ended.wait(), timeout)
        return self.events[-1]


def carrier(engine: Engine, timeline: SimulatedTimeline, sink: Calls | None) -> SimulatedProvider:
    return SimulatedProvider(
        DatabaseLedger(engine), latency_ms=0, timeline=timeline, status_sink=sink
    )


async def test_the_agent_gets_connected_start_media_at_pace_and_stop(engine: Engine) -> None:
    calls = Calls()
    async with media_agent() as agent:
        placed = await carrier(engine, at_once(1.0), calls).create_call(request(agent.url))
        call = await agent.call()
        final = await calls.final()

    events = call.events()
    assert events[:2] == ["connected", "start"] and events[-1] == "stop"
    assert set(events[2:-1]) == {"media"}
    assert call.of("connected")[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = call.start
    assert start["callSid"] == placed.sid
    assert start["customParameters"] == PARAMETERS
    assert start["tracks"] == ["inbound"]
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    stream_sid = start["streamSid"]
    assert stream_sid.startswith("MZ")
    # Every message after `connected` carries the stream and the next sequence number.
    later = [m for _, m in call.messages[1:]]
    assert [m["sequenceNumber"] for m in later] == [str(n) for n in range(1, len(later) + 1)]
    assert {m["streamSid"] for m in later} == {stream_sid}
    assert call.of("stop")[0]["stop"]["callSid"] == placed.sid

    # 20 ms frames of 160 mu-law bytes, numbered, stamped, at real-time pace.
    media = [(t, m["media"]) for t, m in call.messages if m["event"] == "media"]
    assert 40 <= len(media) <= 52  # one second of audio
    assert [m["chunk"] for _, m in media] == [str(n) for n in range(1, len(media) + 1)]
    assert [int(m["timestamp"]) for _, m in media] == [20 * n for n in range(len(media))]
    assert all(m["track"] == "inbound" for _, m in media)
    assert all(len(base64.b64decode(m["payload"])) == FRAME_BYTES for _, m in media)
    spread = media[-1][0] - media[0][0]
    assert 45 <= (len(media) - 1) / spread <= 55  # frames per second, as received

    assert call.close_code == 1000  # closed by the carrier, after stop
    assert final.status == CallStatus.COMPLETED and final.duration_seconds == 1
    assert final.detail is not None and final.detail.startswith("the callee hung up")
    # The call's statuses up to the answer came from the timeline, the end from the stream.
    assert [e.status for e in calls.events] == ["initiated", "ringing", "answered", "completed"]


async def test_the_agent_hanging_up_first_ends_the_call_with_its_real_duration(
    engine: Engine,
) -> None:
    async def hang_up(ws: ServerConnection, _: dict[str, Any]) -> None:
        await asyncio.sleep(1.2)
        await ws.close()

    calls = Calls()
    provider = carrier(engine, at_once(30.0), calls)
    async with media_agent(hang_up) as agent:
        placed = await provider.create_call(request(agent.url))
        call = await agent.call()
        final = await calls.final()

    assert "stop" not in call.events()  # the agent ended it: no stop from the carrier
    assert final.status == CallStatus.COMPLETED and final.duration_seconds == 1
    assert final.detail is not None and final.detail.startswith("the agent hung up")
    answered = next(e for e in calls.events if e.status == CallStatus.ANSWERED)
    assert answered.occurred_at is not None and final.occurred_at is not None
    assert 1.0 <= (final.occurred_at - answered.occurred_at).total_seconds() < 3.0
    # The ledger agrees, so the polling path reports the same end.
    fetched = await provider.fetch_call(placed.sid)
    assert fetched is not None
    assert (fetched.status, fetched.ended_at, fetched.duration_seconds) == (
        CallStatus.COMPLETED,
        final.occurred_at,
        1,
    )
    assert fetched.answered_at == answered.occurred_at


async def test_a_refused_endpoint_ends_the_call_with_the_reason(engine: Engine) -> None:
    calls = Calls()
    provider = carrier(engine, at_once(30.0), calls)
    placed = await provider.create_call(request(unused_url()))
    final = await calls.final(5.0)
    assert final.status == CallStatus.COMPLETED and final.duration_seconds == 0
    assert final.detail == "the agent's media stream could not be reached: connection refused"
    fetched = await provider.fetch_call(placed.sid)
    assert fetched is not None and fetched.status == CallStatus.COMPLETED
    assert fetched.duration_seconds == 0


async def test_a_handshake_refused_by_the_endpoint_ends_the_call(engine: Engine) -> None:
    calls = Calls()
    async with media_agent(refuse_with=HTTPStatus.NOT_FOUND) as agent:
        await carrier(engine, at_once(30.0), calls).create_call(request(agent.url))
        final = await calls.final(5.0)
    assert final.detail == (
        "the agent's media stream could not be reached: "
        "the WebSocket handshake was answered with HTTP 404"
    )


async def test_a_dropped_agent_ends_the_call(engine: Engine) -> None:
    async def drop(ws: ServerConnection, _: dict[str, Any]) -> None:
        await asyncio.sleep(0.3)
        ws.transport.abort()  # gone, no close frame

    calls = Calls()
    async with media_agent(drop) as agent:
        await carrier(engine, at_once(30.0), calls).create_call(request(agent.url))
        final = await calls.final(5.0)
    assert final.status == CallStatus.COMPLETED and final.duration_seconds == 0
    assert final.detail is not None
    assert final.detail.startswith("the agent's media stream dropped (no close frame)")


async def test_an_error_close_by_the_agent_is_named(engine: Engine) -> None:
    async def fail(ws: ServerConnection, _: dict[str, Any]) -> None:
        await ws.close(1011, "model overloaded")

    calls = Calls()
    async with media_agent(fail) as agent:
        await carrier(engine, at_once(30.0), calls).create_call(request(agent.url))
        final = await calls.final(5.0)
    assert final.detail is not None and final.detail.startswith(
        "the agent closed the media stream with an error (code 1011: model overloaded)"
    )


async def test_without_callbacks_the_stream_runs_and_polling_reports_its_end(
    engine: Engine,
) -> None:
    async def hang_up(ws: ServerConnection, _: dict[str, Any]) -> None:
        await asyncio.sleep(0.2)
        await ws.close()

    provider = carrier(engine, at_once(30.0), None)
    async with media_agent(hang_up) as agent:
        placed = await provider.create_call(request(agent.url))
        call = await agent.call()

    async def ended() -> datetime | None:
        fetched = await provider.fetch_call(placed.sid)
        return fetched.ended_at if fetched else None

    await wait_until(ended, timeout=5)
    fetched = await provider.fetch_call(placed.sid)
    assert fetched is not None and fetched.status == CallStatus.COMPLETED
    assert fetched.duration_seconds == 0  # 0.2 s, in whole seconds
    assert call.start["customParameters"] == PARAMETERS


@pytest.mark.parametrize("to", ["+12025550101", "+12025550102"])
async def test_a_call_nobody_answers_never_opens_the_stream(engine: Engine, to: str) -> None:
    calls = Calls()
    async with media_agent() as agent:
        await carrier(engine, at_once(0.1), calls).create_call(request(agent.url, to))
        final = await calls.final(5.0)
        await asyncio.sleep(0.2)  # a connection would have been made by now
        assert agent.calls == []
    assert final.status in (CallStatus.BUSY, CallStatus.NO_ANSWER) and final.detail is None


async def test_without_a_url_the_call_follows_its_timeline(engine: Engine) -> None:
    calls = Calls()
    await carrier(engine, at_once(0.2), calls).create_call(request(None))
    final = await calls.final(5.0)
    assert final.status == CallStatus.COMPLETED and final.detail is None
    assert final.duration_seconds == 0  # SimulatedTimeline.duration_seconds of 0.2 s


async def test_the_agents_media_marks_and_clears_are_counted_and_marks_echoed() -> None:
    """A mark comes back once the agent's audio before it has played (200 ms here); a clear
    drops the queued audio and sends its marks back at once."""
    greeting = frames(tone(hertz=440, milliseconds=200))
    echoes: list[tuple[float, str]] = []

    async def talk(ws: ServerConnection, start: dict[str, Any]) -> None:
        sid = start["streamSid"]
        loop = asyncio.get_running_loop()

        async def send(message: dict[str, Any]) -> None:
            await ws.send(json.dumps({**message, "streamSid": sid}))

        sent = loop.time()
        for frame in greeting:
            payload = base64.b64encode(frame).decode()
            await send({"event": "media", "media": {"payload": payload}})
        await send({"event": "mark", "mark": {"name": "greeting"}})
        await asyncio.sleep(0.5)
        await send(
            {"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 8000).decode()}}
        )
        await send({"event": "mark", "mark": {"name": "long"}})
        cleared = loop.time()
        await send({"event": "clear"})
        await send({"event": "nonsense"})
        await send({"event": "mark", "mark": "not an object"})
        await ws.send("not json")
        echoes.extend([(sent, "sent"), (cleared, "cleared")])

    async with media_agent(talk) as agent:
        result = await stream_call(
            agent.url, call_sid="SMtest", parameters={"request_id": "r"}, talk_seconds=1.5
        )
        call = await agent.call()

    assert result.end == StreamEnd.CALLEE_HUNG_UP
    assert (result.agent.media, result.agent.media_bytes) == (11, 1600 + 8000)
    assert (result.agent.marks, result.agent.clears, result.agent.marks_echoed) == (2, 1, 2)
    assert result.agent.ignored == 3
    assert "the agent sent 11 media messages" in result.detail
    marks = [(t, m["mark"]["name"]) for t, m in call.messages if m["event"] == "mark"]
    assert [name for _, name in marks] == ["greeting", "long"]
    (sent, _), (cleared, _) = echoes
    assert 0.18 <= marks[0][0] - sent < 0.45  # after its 200 ms of audio played
    assert marks[1][0] - cleared < 0.2  # at once after the clear, not after 1 s of audio


def test_mulaw_of_silence_and_of_a_tone() -> None:
    assert mulaw_byte(0) == MULAW_SILENCE
    assert (mulaw_byte(32767), mulaw_byte(-32768)) == (0x80, 0x00)
    audio = tone(hertz=440, milliseconds=300)
    assert len(audio) == 2400 and len(set(audio)) > 20
    cut = frames(audio[:-10])
    assert len(cut) == 15 and all(len(f) == FRAME_BYTES for f in cut)
    assert cut[-1][-10:] == bytes([MULAW_SILENCE]) * 10
