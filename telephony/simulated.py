"""A simulated carrier: no credentials, realistic latency, a durable ledger.

Magic destination numbers drive every path (see README). Behaviour depends only on the
number and the attempt, so it is the same after a worker crash; the ledger of placed calls is
durable and shared, like a real carrier's, so reconciliation and the one-dial-per-session
checks work across processes. The carrier keeps it through `SimulatedLedger`; the worker hands
it the database one (store/simulated_ledger.py).

An answered call whose request has a media stream URL is connected to it as Twilio connects
`<Connect><Stream>` (telephony/media_stream.py, over a real WebSocket): the stream, not the
timeline, then decides how the call ends (the callee hanging up after the talk time, the agent
hanging up first, a refused or dropped stream), and the ledger records that end."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from contracts import lifecycle as st
from contracts.lifecycle import CallStatus, StatusEvent, StatusSink
from telephony.base import Ambiguous, DialRequest, NotPlaced, ProviderCall, Rejected, attempt_tag
from telephony.media_stream import stream_call

log = logging.getLogger(__name__)

BUSY = "+12025550101"
NO_ANSWER = "+12025550102"
INVALID = "+12025550103"
TWO_TRANSIENT = "+12025550104"
AMBIGUOUS_ONCE = "+12025550105"
ALWAYS_TRANSIENT = "+12025550106"
RATE_LIMITED_ONCE = "+12025550107"
# Answering-machine detection (a call with machine_detection on): a machine answers, and its
# verdict comes MACHINE_VERDICT_SECONDS after the answer; a person answers and the verdict
# comes late (LATE_HUMAN_VERDICT_SECONDS); any other number: a person, HUMAN_VERDICT_SECONDS.
MACHINE = "+12025550108"
LATE_HUMAN = "+12025550109"
HUMAN_VERDICT_SECONDS = 0.5
MACHINE_VERDICT_SECONDS = 1.0
LATE_HUMAN_VERDICT_SECONDS = 4.0


def detection_for(to_number: str, machine_detection: str) -> tuple[float, str] | None:
    """(seconds after the answer, answered_by) of a call's machine-detection verdict."""
    if machine_detection == "off":
        return None
    if to_number == MACHINE:
        # DetectMessageEnd (leaving a message) waits for the beep; Enable says so at once.
        beep = machine_detection == "detect_and_leave_message"
        return MACHINE_VERDICT_SECONDS, "machine_end_beep" if beep else "machine_start"
    if to_number == LATE_HUMAN:
        return LATE_HUMAN_VERDICT_SECONDS, "human"
    return HUMAN_VERDICT_SECONDS, "human"


@dataclass(frozen=True)
class SimulatedTimeline:
    """When a simulated call moves on, in seconds after it was placed. A function of the
    number and the placing time only, so a status can be derived again from the ledger (the
    polling path after a lost callback or a worker crash)."""

    ring_seconds: float = 1.0
    answer_seconds: float = 3.0
    talk_seconds: float = 8.0

    def steps(self, to_number: str) -> list[tuple[float, CallStatus]]:
        ring = self.ring_seconds
        answer = ring + self.answer_seconds
        steps = [(0.0, CallStatus.INITIATED), (ring, CallStatus.RINGING)]
        if to_number == BUSY:
            return [*steps, (answer, CallStatus.BUSY)]
        if to_number == NO_ANSWER:
            return [*steps, (answer, CallStatus.NO_ANSWER)]
        return [
            *steps,
            (answer, CallStatus.ANSWERED),
            (answer + self.talk_seconds, CallStatus.COMPLETED),
        ]

    @property
    def duration_seconds(self) -> int:
        return round(self.talk_seconds)


class LedgerEntry(Protocol):
    """A call the simulated carrier placed, as its ledger keeps it."""

    @property
    def sid(self) -> str: ...
    @property
    def to_number(self) -> str: ...
    @property
    def from_number(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...  # aware, UTC
    # Set by `finish` when the call ended otherwise than its timeline says (its media
    # stream): then these, not the timeline, are the call's end.
    @property
    def ended_at(self) -> datetime | None: ...
    @property
    def duration_seconds(self) -> int | None: ...


class SimulatedLedger(Protocol):
    """Where the simulated carrier writes down every call it placed. Blocking calls: the
    carrier runs them in a thread."""

    def record(
        self,
        *,
        sid: str,
        call_session_id: str,
        attempt_tag: str,
        to_number: str,
        from_number: str,
        placed_at: datetime,
    ) -> LedgerEntry: ...

    def first_placed(self, attempt_tags: Sequence[str]) -> LedgerEntry | None:
        """The oldest call placed by one of these attempts, or None."""
        ...

    def get(self, sid: str) -> LedgerEntry | None: ...

    def count(self, call_session_id: str) -> int:
        """How many calls were placed for the session."""
        ...

    def finish(
        self, *, sid: str, status: CallStatus, ended_at: datetime, duration_seconds: int | None
    ) -> None:
        """Write down how a call ended (the first end written stays)."""
        ...


class SimulatedProvider:
    name = "simulated"
    # Without a stream URL a simulated call still has its talk time (SimulatedTimeline).
    requires_media_stream = False

    def __init__(
        self,
        ledger: SimulatedLedger,
        latency_ms: int = 150,
        *,
        timeline: SimulatedTimeline | None = None,
        status_sink: StatusSink | None = None,
    ) -> None:
        self._ledger = ledger
        self._latency = latency_ms / 1000
        self._timeline = timeline or SimulatedTimeline()
        # Without a sink the carrier sends no callbacks: calls are followed by polling.
        self._sink = status_sink
        self._emitting: set[asyncio.Task[None]] = set()
        # The calls this process is carrying on (their timeline, stream, detection): a
        # hang-up sets the call's event, and all three stop.
        self._hangups: dict[str, asyncio.Event] = {}
        self._sessions: dict[str, str] = {}  # sid -> call_session_id, for the hang-up's report

    async def create_call(self, request: DialRequest) -> ProviderCall:
        # The request reaches the carrier `latency` after it was sent, whatever happens to the
        # sender meanwhile (a worker stopped mid-request does not delay a packet on the wire).
        arrives = datetime.now(UTC) + timedelta(seconds=self._latency)
        if self._latency:
            await asyncio.sleep(self._latency)
        to, attempt = request.to_number, request.attempt
        if to == INVALID:
            raise Rejected("The 'To' number is not a valid phone number.", code="21211")
        if to == ALWAYS_TRANSIENT or (to == TWO_TRANSIENT and attempt <= 2):
            raise NotPlaced("connection refused by the carrier gateway", code="connect")
        if to == RATE_LIMITED_ONCE and attempt == 1:
            raise NotPlaced("Too Many Requests", code="20429", retry_after=1.0)
        # Placed when the request reaches the carrier, not when a worker thread is free to
        # write the ledger (a busy thread pool would blur a campaign's pacing).
        call = await asyncio.to_thread(self._place, request, arrives)
        await self._follow(request, call)
        if to == AMBIGUOUS_ONCE and attempt == 1:
            # The carrier placed the call, but its answer never reaches us.
            raise Ambiguous("timed out waiting for the carrier's response")
        return call

    def _place(self, request: DialRequest, at: datetime) -> ProviderCall:
        # A request the sender held past its attempt's deadline (a worker stopped between
        # sending and this write) is refused, as a carrier honoring a request's expiry would:
        # the workflow has given the attempt up, and its retry may be on its way.
        if request.send_by is not None and datetime.now(UTC).timestamp() > request.send_by:
            raise NotPlaced("the request reached the carrier after its deadline", code="expired")
        row = self._ledger.record(
            sid="SM" + secrets.token_hex(16),
            call_session_id=request.call_session_id,
            attempt_tag=request.attempt_tag,
            to_number=request.to_number,
            from_number=request.from_number,
            placed_at=at,
        )
        return ProviderCall(
            sid=row.sid, status=row.status, to_number=row.to_number, created_at=row.created_at
        )

    async def _follow(self, request: DialRequest, call: ProviderCall) -> None:
        """Report the call's lifecycle like a carrier's status callbacks, and connect the
        answered call to its media stream when the request has one. What is due at once (at
        least `initiated`) is delivered before the dial returns, as a carrier's first
        callback can beat its API response: the workflow then learns it together with the
        dial's result, in one workflow task. The rest follows in the background."""
        if call.to_number is None or call.created_at is None:
            return
        steps = self._timeline.steps(call.to_number)
        answer = next((at for at, status in steps if status == CallStatus.ANSWERED), None)
        media_url = request.media_stream_url if answer is not None else None
        if media_url:
            # The stream decides when and how the call ends, not the timeline.
            steps = [step for step in steps if not st.is_final(step[1])]
        elif self._sink is None:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        now = [step for step in steps if step[0] <= 0]
        await self._deliver(request.call_session_id, call.sid, call.created_at, now)
        later = steps[len(now) :]
        if later or media_url:
            self._hangups[call.sid] = asyncio.Event()
            self._sessions[call.sid] = request.call_session_id
            task = loop.create_task(self._carry_on(request, call, later, started, answer))
            self._emitting.add(task)
            task.add_done_callback(self._emitting.discard)
            task.add_done_callback(lambda _: self._forget(call.sid))
            verdict = detection_for(call.to_number, request.machine_detection)
            if verdict is not None and answer is not None:
                at, answered_by = answer + verdict[0], verdict[1]
                detect = loop.create_task(
                    self._detect(request.call_session_id, call.sid, started + at, answered_by)
                )
                self._emitting.add(detect)
                detect.add_done_callback(self._emitting.discard)

    def _forget(self, sid: str) -> None:
        self._hangups.pop(sid, None)
        self._sessions.pop(sid, None)

    async def _detect(self, call_session_id: str, sid: str, at: float, answered_by: str) -> None:
        """Answering-machine detection's verdict, as Twilio's AsyncAmd callback brings it:
        about an answered call, after the answer (unless the call ended first)."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(at - loop.time(), 0))
        hang_up = self._hangups.get(sid)
        if hang_up is None or hang_up.is_set():
            return
        event = StatusEvent(
            call_session_id=call_session_id,
            sid=sid,
            status=CallStatus.ANSWERED,
            occurred_at=datetime.now(UTC),
            answered_by=answered_by,
        )
        await self._send([event])

    async def _carry_on(
        self,
        request: DialRequest,
        call: ProviderCall,
        steps: list[tuple[float, CallStatus]],
        started: float,
        answer: float | None,
    ) -> None:
        assert call.created_at is not None
        await self._emit(request.call_session_id, call.sid, call.created_at, steps, started)
        if request.media_stream_url and answer is not None:
            answered_at = call.created_at + timedelta(seconds=answer)
            await self._stream(request, request.media_stream_url, call.sid, answered_at)

    async def _stream(
        self, request: DialRequest, url: str, sid: str, answered_at: datetime
    ) -> None:
        """The answered call on its agent's media stream until one side hangs up (the
        callee after the talk time); then its end in the ledger, so that fetch_call reports
        it, and as the call's last status, with how it ended for the timeline. The call is
        `completed` however the stream ended, as with Twilio when a stream ends and no TwiML
        follows (a refused stream too: the callee had answered)."""
        try:
            hang_up = self._hangups.get(sid)
            result = await stream_call(
                url,
                call_sid=sid,
                parameters=request.stream_parameters,
                talk_seconds=self._timeline.talk_seconds,
                hang_up=hang_up,
            )
            if hang_up is not None and hang_up.is_set():
                return  # hangup_call recorded the end and reported it
            detail = result.detail
            log.info(
                "simulated call %s: media stream %s ended: %s (%d frames sent)",
                sid,
                result.stream_sid,
                result.end,
                result.frames_sent,
            )
        except Exception:
            log.exception("simulated call %s: the media stream failed", sid)
            detail = "the simulated carrier's media stream failed"
        ended_at = max(datetime.now(UTC), answered_at)
        duration = round((ended_at - answered_at).total_seconds())
        try:
            await asyncio.to_thread(
                self._ledger.finish,
                sid=sid,
                status=CallStatus.COMPLETED,
                ended_at=ended_at,
                duration_seconds=duration,
            )
        except Exception:
            # Polling then reports the timeline's end; the callback below still goes out.
            log.warning("simulated call %s: its end was not recorded", sid, exc_info=True)
        event = StatusEvent(
            call_session_id=request.call_session_id,
            sid=sid,
            status=CallStatus.COMPLETED,
            occurred_at=ended_at,
            duration_seconds=duration,
            detail=detail,
        )
        await self._send([event])

    async def _emit(
        self,
        call_session_id: str,
        sid: str,
        placed: datetime,
        steps: list[tuple[float, CallStatus]],
        started: float,
    ) -> None:
        """Each status at its time on the timeline, counted from `started` (the loop's clock
        at placement, before the first delivery); the ones due together go out as one
        delivery, as a real carrier would batch them."""
        loop = asyncio.get_running_loop()
        while steps:
            delay = steps[0][0] - (loop.time() - started)
            if delay > 0:
                await asyncio.sleep(delay)
            hang_up = self._hangups.get(sid)
            if hang_up is not None and hang_up.is_set():
                return  # hung up: hangup_call reported the end
            elapsed = loop.time() - started
            due = [step for step in steps if step[0] <= elapsed]
            steps = steps[len(due) :]
            await self._deliver(call_session_id, sid, placed, due)

    async def _deliver(
        self, call_session_id: str, sid: str, placed: datetime, due: list[tuple[float, CallStatus]]
    ) -> None:
        if not due:
            return
        await self._send(
            [
                StatusEvent(
                    call_session_id=call_session_id,
                    sid=sid,
                    status=status,
                    occurred_at=placed + timedelta(seconds=offset),
                    duration_seconds=self._timeline.duration_seconds
                    if status == CallStatus.COMPLETED
                    else None,
                )
                for offset, status in due
            ]
        )

    async def _send(self, events: list[StatusEvent]) -> None:
        if self._sink is None:
            return  # no callbacks: the workflow polls fetch_call
        try:
            await self._sink(events)
        except Exception:
            # A lost callback, as with a real carrier: the workflow polls fetch_call.
            log.warning("simulated status callback failed", exc_info=True)

    def _derive(self, row: LedgerEntry) -> ProviderCall:
        """The call's status now, from when it was placed (see SimulatedTimeline)."""
        placed = row.created_at
        elapsed = (datetime.now(UTC) - placed).total_seconds()
        status, answered_at, ended_at, duration = CallStatus.INITIATED, None, None, None
        for offset, step in self._timeline.steps(row.to_number):
            if offset > elapsed:
                break
            status = step
            if step == CallStatus.ANSWERED:
                answered_at = placed + timedelta(seconds=offset)
            if st.is_final(step):
                ended_at = placed + timedelta(seconds=offset)
                if step == CallStatus.COMPLETED:
                    duration = self._timeline.duration_seconds
        if row.ended_at is not None:
            # The carrier's own record of the end (its media stream), not the timeline's.
            status = st.normalize_status(row.status) or CallStatus.COMPLETED
            ended_at, duration = row.ended_at, row.duration_seconds
            if answered_at is not None and answered_at > row.ended_at:
                answered_at = None  # hung up before it was answered
        return ProviderCall(
            sid=row.sid,
            status=status,
            to_number=row.to_number,
            from_number=row.from_number,
            created_at=placed,
            answered_at=answered_at,
            ended_at=ended_at,
            duration_seconds=duration,
        )

    async def lookup_call(
        self,
        *,
        call_session_id: str,
        attempts: list[int],
        to_number: str,
        from_number: str,
        since: datetime | None = None,
    ) -> ProviderCall | None:
        tags = [attempt_tag(call_session_id, a) for a in attempts]

        def find() -> ProviderCall | None:
            row = self._ledger.first_placed(tags)
            if row is None:
                return None
            return ProviderCall(sid=row.sid, status=row.status, to_number=row.to_number)

        return await asyncio.to_thread(find)

    async def fetch_call(self, sid: str) -> ProviderCall | None:
        def get() -> ProviderCall | None:
            row = self._ledger.get(sid)
            return None if row is None else self._derive(row)

        return await asyncio.to_thread(get)

    async def hangup_call(self, sid: str, *, answered: bool, message: str | None = None) -> bool:
        """End the call as Twilio's call update does: canceled before the answer, completed
        after (its duration from the answer); its media stream gets `stop`; the message, if
        any, is taken as spoken. The end goes to the ledger, and to the status sink when this
        process placed the call (else the workflow's poll finds it in the ledger)."""
        row = await asyncio.to_thread(self._ledger.get, sid)
        if row is None:
            return False
        current = self._derive(row)
        if st.is_final(current.status):
            return False
        hang_up = self._hangups.get(sid)
        if hang_up is not None:
            hang_up.set()
        now = datetime.now(UTC)
        if current.answered_at is not None:
            status = CallStatus.COMPLETED
            duration: int | None = round((now - current.answered_at).total_seconds())
        else:
            status, duration = CallStatus.CANCELED, None
        await asyncio.to_thread(
            self._ledger.finish, sid=sid, status=status, ended_at=now, duration_seconds=duration
        )
        detail = "hung up at the carrier's API"
        if message:
            detail += f" after speaking a {len(message)}-character message"
        session_id = self._sessions.get(sid)
        if session_id is not None:
            event = StatusEvent(
                call_session_id=session_id,
                sid=sid,
                status=status,
                occurred_at=now,
                duration_seconds=duration,
                detail=detail,
            )
            await self._send([event])
        return True

    def dial_count(self, call_session_id: str) -> int:
        """How many calls this carrier placed for a session (tests assert it is at most 1)."""
        return self._ledger.count(call_session_id)
