"""The media stream protocol of Twilio Media Streams, as the simulated carrier speaks it to an
agent over a real WebSocket, and the audio helpers an agent needs to answer.

The carrier side (`stream_call`) is what Twilio does for `<Connect><Stream>`: it opens the
WebSocket to the agent's URL, sends `connected`, then `start` (the call's ids and variables
as `customParameters`), then the callee's audio as `media` frames of 20 ms of 8 kHz mu-law at
real-time pace, and `stop` when the callee hangs up. The agent's own messages (`media`,
`mark`, `clear`) are read and counted, and each `mark` is echoed once the agent's audio sent
before it has played, as Twilio does. The agent closing the socket ends the call. Network
failures never raise: they are the result's `end` and `detail`, in words fit for the call's
timeline (which the client reads, so no URL and no vendor name).

Message shapes follow Twilio's documentation of bidirectional streams: every value a string
except `mediaFormat`'s numbers, `tracks` only `inbound` (what the callee says)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

log = logging.getLogger(__name__)

ENCODING = "audio/x-mulaw"
SAMPLE_RATE = 8000
CHANNELS = 1
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000  # 160: one byte per mu-law sample
MULAW_SILENCE = 0xFF
PROTOCOL_VERSION = "1.0.0"
# The simulated carrier's account, in the place of Twilio's AC... account sid.
SIMULATED_ACCOUNT_SID = "AC" + "0" * 32
USER_AGENT = "Dialer-SimulatedCarrier/1.0"
# How long the agent's endpoint gets to accept the connection (TCP, TLS and the handshake);
# past it the call ends, as it would on a carrier whose stream cannot be set up.
CONNECT_TIMEOUT_SECONDS = 5.0
# How long the agent gets to answer our close frame once the callee hung up.
CLOSE_TIMEOUT_SECONDS = 2.0
# The agent's audio is queued for playback; more than this ahead of real time is not
# counted further ahead (keeps a runaway agent from pushing its marks into the far future).
MAX_QUEUED_AUDIO_SECONDS = 60.0


class StreamEnd(StrEnum):
    """How a media stream ended."""

    CALLEE_HUNG_UP = "callee_hung_up"  # the simulated talk time ran out: stop, then close
    AGENT_HUNG_UP = "agent_hung_up"  # the agent closed the socket normally
    DROPPED = "dropped"  # the connection broke, or the agent closed it with an error
    UNREACHABLE = "unreachable"  # refused, timed out, or the handshake failed
    HUNG_UP = "hung_up"  # ended through the carrier's API (a hang-up): stop, then close


@dataclass
class AgentTraffic:
    """What the agent sent back, counted."""

    media: int = 0  # media messages
    media_bytes: int = 0  # of mu-law audio, decoded
    marks: int = 0
    clears: int = 0
    marks_echoed: int = 0
    ignored: int = 0  # unreadable, unknown events, or another stream's streamSid

    def summary(self) -> str:
        return (
            f"the agent sent {self.media} media messages ({self.media_bytes} bytes of audio), "
            f"{self.marks} marks and {self.clears} clears"
        )


@dataclass(frozen=True)
class StreamResult:
    end: StreamEnd
    detail: str  # for the call's timeline
    stream_sid: str
    frames_sent: int = 0  # media frames of the callee's audio
    agent: AgentTraffic = field(default_factory=AgentTraffic)


# --- the messages the carrier sends ------------------------------------------------------


def connected_message() -> dict[str, Any]:
    return {"event": "connected", "protocol": "Call", "version": PROTOCOL_VERSION}


def start_message(
    *, sequence: int, stream_sid: str, call_sid: str, parameters: Mapping[str, str]
) -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": str(sequence),
        "start": {
            "accountSid": SIMULATED_ACCOUNT_SID,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": dict(parameters),
            "mediaFormat": {"encoding": ENCODING, "sampleRate": SAMPLE_RATE, "channels": CHANNELS},
        },
        "streamSid": stream_sid,
    }


def media_message(
    *, sequence: int, stream_sid: str, chunk: int, timestamp_ms: int, payload: bytes
) -> dict[str, Any]:
    return {
        "event": "media",
        "sequenceNumber": str(sequence),
        "media": {
            "track": "inbound",
            "chunk": str(chunk),
            "timestamp": str(timestamp_ms),
            "payload": base64.b64encode(payload).decode("ascii"),
        },
        "streamSid": stream_sid,
    }


def mark_message(*, sequence: int, stream_sid: str, name: str) -> dict[str, Any]:
    return {
        "event": "mark",
        "sequenceNumber": str(sequence),
        "streamSid": stream_sid,
        "mark": {"name": name},
    }


def stop_message(*, sequence: int, stream_sid: str, call_sid: str) -> dict[str, Any]:
    return {
        "event": "stop",
        "sequenceNumber": str(sequence),
        "streamSid": stream_sid,
        "stop": {"accountSid": SIMULATED_ACCOUNT_SID, "callSid": call_sid},
    }


# --- audio ------------------------------------------------------------------------------

_MULAW_BIAS = 0x84
_MULAW_CLIP = 32635


def mulaw_byte(sample: int) -> int:
    """One 16-bit linear PCM sample as G.711 mu-law."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), _MULAW_CLIP) + _MULAW_BIAS
    exponent = max(0, magnitude.bit_length() - 8)  # the segment: 0..7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def tone(*, hertz: float, milliseconds: int, amplitude: int = 6000) -> bytes:
    """A sine tone as 8 kHz mu-law, e.g. what an agent plays to say it is there."""
    count = SAMPLE_RATE * milliseconds // 1000
    step = 2 * math.pi * hertz / SAMPLE_RATE
    return bytes(mulaw_byte(round(amplitude * math.sin(step * n))) for n in range(count))


def frames(audio: bytes) -> list[bytes]:
    """Audio cut into 20 ms frames (the last one padded with silence)."""
    out = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
    if out and len(out[-1]) < FRAME_BYTES:
        out[-1] = out[-1] + bytes([MULAW_SILENCE]) * (FRAME_BYTES - len(out[-1]))
    return out


# --- the carrier's side of one call ------------------------------------------------------


def unreachable_reason(exc: BaseException) -> str:
    """Why the agent's endpoint could not be reached, in a few words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "its host name could not be resolved"
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_SECONDS:g} s"
    if isinstance(exc, InvalidStatus):
        return f"the WebSocket handshake was answered with HTTP {exc.response.status_code}"
    if isinstance(exc, InvalidURI):
        return "the URL is not a WebSocket URL"
    if isinstance(exc, InvalidHandshake):
        return f"the WebSocket handshake failed ({exc})"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


_AGENT_HUNG_UP_DETAIL = "the agent hung up (it closed the media stream)"


def _closed_reason(exc: ConnectionClosed) -> tuple[StreamEnd, str]:
    if isinstance(exc, ConnectionClosedOK):
        return StreamEnd.AGENT_HUNG_UP, _AGENT_HUNG_UP_DETAIL
    if exc.rcvd is None:
        return StreamEnd.DROPPED, "the agent's media stream dropped (no close frame)"
    said = f": {exc.rcvd.reason}" if exc.rcvd.reason else ""
    return (
        StreamEnd.DROPPED,
        f"the agent closed the media stream with an error (code {exc.rcvd.code}{said})",
    )


class _Stream:
    """One open stream: the sequence numbers, the agent's playback clock and its marks."""

    def __init__(self, ws: ClientConnection, stream_sid: str, call_sid: str) -> None:
        self.ws = ws
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.sequence = 0
        self.agent = AgentTraffic()
        self._loop = asyncio.get_running_loop()
        # When the agent's queued audio will have played; its marks wait for it.
        self._played_at = 0.0
        self._marks: list[tuple[float, str]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message, separators=(",", ":")))

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    async def receive(self) -> None:
        """Read the agent's messages until the socket closes (raises ConnectionClosedError
        on an error close or a broken connection, returns on a normal close)."""
        async for raw in self.ws:
            self._take(raw)

    def _take(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
            event = message.get("event")
            if message.get("streamSid") != self.stream_sid:
                event = None
        except (ValueError, AttributeError):
            event = None
        now = self._loop.time()
        if event == "media":
            try:
                audio = base64.b64decode(message["media"]["payload"], validate=True)
            except (KeyError, TypeError, binascii.Error):
                self.agent.ignored += 1
                return
            self.agent.media += 1
            self.agent.media_bytes += len(audio)
            start = max(now, self._played_at)
            self._played_at = min(start + len(audio) / SAMPLE_RATE, now + MAX_QUEUED_AUDIO_SECONDS)
        elif event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                self.agent.ignored += 1
                return
            self.agent.marks += 1
            self._marks.append((max(now, self._played_at), name))
        elif event == "clear":
            # The queued audio is dropped; its marks come back at once (as Twilio does).
            self.agent.clears += 1
            self._played_at = now
            self._marks = [(now, name) for _, name in self._marks]
        else:
            self.agent.ignored += 1

    async def echo_due_marks(self) -> None:
        now = self._loop.time()
        due = [name for at, name in self._marks if at <= now]
        if not due:
            return
        self._marks = [(at, name) for at, name in self._marks if at > now]
        for name in due:
            await self.send(
                mark_message(sequence=self.next_sequence(), stream_sid=self.stream_sid, name=name)
            )
            self.agent.marks_echoed += 1


async def stream_call(
    url: str,
    *,
    call_sid: str,
    parameters: Mapping[str, str],
    talk_seconds: float,
    callee_audio: bytes = b"",
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    hang_up: asyncio.Event | None = None,
) -> StreamResult:
    """Connect an answered call to the agent at `url` until the callee hangs up after
    `talk_seconds` (counted from now, the answer) or the agent closes the stream. The callee
    says `callee_audio` (mu-law), then silence. Never raises for what the network or the
    agent does: that is the result."""
    loop = asyncio.get_running_loop()
    hang_up_at = loop.time() + talk_seconds
    stream_sid = "MZ" + secrets.token_hex(16)
    try:
        ws = await connect(
            url,
            open_timeout=connect_timeout,
            close_timeout=CLOSE_TIMEOUT_SECONDS,
            compression=None,
            proxy=None,
            user_agent_header=USER_AGENT,
        )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ValueError) as exc:
        reason = unreachable_reason(exc)
        return StreamResult(
            StreamEnd.UNREACHABLE,
            f"the agent's media stream could not be reached: {reason}",
            stream_sid,
        )
    stream = _Stream(ws, stream_sid, call_sid)
    receiver = loop.create_task(stream.receive())
    # Set by the carrier's hang-up (SimulatedProvider.hangup_call): the call ends now.
    ended = hang_up or asyncio.Event()
    hung_up = loop.create_task(ended.wait())
    frames_sent = 0
    try:
        await stream.send(connected_message())
        await stream.send(
            start_message(
                sequence=stream.next_sequence(),
                stream_sid=stream_sid,
                call_sid=call_sid,
                parameters=parameters,
            )
        )
        began = loop.time()
        audio = frames(callee_audio)
        silence = bytes([MULAW_SILENCE]) * FRAME_BYTES
        while True:
            # Frame n is due n * 20 ms after the first: a late tick catches up, no drift.
            due = began + frames_sent * FRAME_MS / 1000
            wait = min(due, hang_up_at) - loop.time()
            if wait > 0:
                await asyncio.wait({receiver, hung_up}, timeout=wait)
            if receiver.done():
                break
            await stream.echo_due_marks()
            if ended.is_set() or loop.time() >= hang_up_at:
                await stream.send(
                    stop_message(
                        sequence=stream.next_sequence(), stream_sid=stream_sid, call_sid=call_sid
                    )
                )
                await ws.close()
                receiver.cancel()
                if ended.is_set():
                    return StreamResult(
                        StreamEnd.HUNG_UP,
                        f"the call was hung up at the carrier; {stream.agent.summary()}",
                        stream_sid,
                        frames_sent,
                        stream.agent,
                    )
                return StreamResult(
                    StreamEnd.CALLEE_HUNG_UP,
                    f"the callee hung up; {stream.agent.summary()}",
                    stream_sid,
                    frames_sent,
                    stream.agent,
                )
            if loop.time() >= due:
                payload = audio[frames_sent] if frames_sent < len(audio) else silence
                frames_sent += 1
                await stream.send(
                    media_message(
                        sequence=stream.next_sequence(),
                        stream_sid=stream_sid,
                        chunk=frames_sent,
                        timestamp_ms=round((due - began) * 1000),
                        payload=payload,
                    )
                )
    except ConnectionClosed:
        pass  # the socket closed under a send: the receiver says how
    finally:
        hung_up.cancel()
        if not receiver.done():
            # Closed under a send (the receiver is about to learn it too), or an error of
            # our own: the receiver gets the close timeout to say how the socket ended.
            await asyncio.wait({receiver}, timeout=CLOSE_TIMEOUT_SECONDS)
            receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        await ws.close()
    error = None if receiver.cancelled() else receiver.exception()
    if isinstance(error, ConnectionClosed):
        end, detail = _closed_reason(error)
    elif error is not None or receiver.cancelled():
        name = type(error).__name__ if error is not None else "no close"
        end, detail = StreamEnd.DROPPED, f"the agent's media stream failed ({name})"
    else:  # the socket closed normally, and not by us
        end, detail = StreamEnd.AGENT_HUNG_UP, _AGENT_HUNG_UP_DETAIL
    return StreamResult(
        end, f"{detail}; {stream.agent.summary()}", stream_sid, frames_sent, stream.agent
    )
