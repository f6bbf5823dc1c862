"""The one interface every telephony provider implements, and the errors it may raise.

The error classes carry the only distinction that matters for safety: did the request
provably not take effect (NotPlaced: dialing again is safe), was it refused for good
(Rejected), or is the outcome unknown (Ambiguous: reconcile before any new attempt)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class DialRequest:
    call_session_id: str
    request_id: str
    attempt: int
    to_number: str
    from_number: str
    # Where the answered call's audio goes, and the parameters the agent receives with it
    # (the call's ids and variables: contracts/context.py). No URL: no media stream.
    media_stream_url: str | None = None
    stream_parameters: dict[str, str] = field(default_factory=dict)
    # The carrier ends the call itself this long after the answer (Twilio TimeLimit); the
    # workflow enforces it too, for carriers that cannot.
    max_duration_seconds: int | None = None
    # A contracts.calls.MachineDetection value: "off" or how to detect a machine.
    machine_detection: str = "off"
    # The attempt's deadline (Unix time): after it the workflow counts the attempt as timed
    # out, may find it not placed and dial again, so a request that reaches the carrier later
    # must not act. The dial checks it right before sending; a carrier that can refuse a
    # stale request (the simulated one) checks it again on arrival.
    send_by: float | None = None

    @property
    def attempt_tag(self) -> str:
        """Identifies this attempt at the provider, so a lost response can be found again."""
        return attempt_tag(self.call_session_id, self.attempt)


def attempt_tag(call_session_id: str, attempt: int) -> str:
    return f"{call_session_id}.{attempt}"


@dataclass(frozen=True)
class ProviderCall:
    sid: str
    status: str
    to_number: str | None = None
    from_number: str | None = None
    created_at: datetime | None = None
    # Known once the call moved on (fetch_call); None while it has not.
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration_seconds: int | None = None
    answered_by: str | None = None


class TelephonyError(Exception):
    """`message` is Dialer's own account of what happened, in neutral words ("the carrier
    refused the request"): it can reach API clients as a call's failure_reason, so it never
    names the vendor nor repeats the vendor's text. `provider_message` is the provider's own
    words (its error text), for operators: the call's timeline, the logs and the workflow
    history; the provider leaves its own name out of it, because the timeline is public too.
    `code` is the provider's error code (`provider_error_code`)."""

    def __init__(
        self, message: str, code: str | None = None, *, provider_message: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.provider_message = provider_message


class NotPlaced(TelephonyError):
    """The provider provably did not act on the request (connection refused, 429, ...)."""

    def __init__(
        self,
        message: str,
        code: str | None = None,
        retry_after: float = 0.0,
        *,
        provider_message: str | None = None,
    ) -> None:
        super().__init__(message, code, provider_message=provider_message)
        self.retry_after = retry_after


class Rejected(TelephonyError):
    """A permanent refusal: retrying cannot succeed."""


class Ambiguous(TelephonyError):
    """The request may have taken effect (timeout after sending, 5xx)."""


class TelephonyProvider(Protocol):
    name: str
    # True for a carrier that connects an answered call to a media stream and has nothing
    # else to play: a call with no stream URL must not be dialed through it.
    requires_media_stream: bool

    async def create_call(self, request: DialRequest) -> ProviderCall: ...

    async def lookup_call(
        self,
        *,
        call_session_id: str,
        attempts: list[int],
        to_number: str,
        from_number: str,
        since: datetime | None = None,
    ) -> ProviderCall | None:
        """Find a call placed by one of `attempts` of this session (the first of them was
        made at or after `since`), or None."""
        ...

    async def fetch_call(self, sid: str) -> ProviderCall | None: ...

    async def hangup_call(self, sid: str, *, answered: bool, message: str | None = None) -> bool:
        """End the call `sid` (Twilio's call update): canceled before it is answered,
        completed after; with `message`, spoken first (a voicemail). True if it was live,
        False if it had ended already; raises TelephonyError when the carrier cannot be
        asked (the activity retries)."""
        ...


@runtime_checkable
class NumberOwnership(Protocol):
    """A carrier that keeps an account of the numbers a call may come from (Twilio: the
    account's incoming numbers and verified caller ids). A line it dials must be confirmed
    as one of them first (services/lines.py at registration, activities/calls.py before the
    dial). A carrier without this method (the simulated one) confirms every line."""

    async def owns_number(self, number: str) -> bool:
        """Whether `number` (E.164) is the account's own; raises TelephonyError when the
        carrier cannot be asked."""
        ...


def confirms_lines(provider: object) -> bool:
    """True for a carrier whose lines must be confirmed as the account's own before a dial."""
    return isinstance(provider, NumberOwnership)


async def owns_number(provider: object, number: str) -> bool:
    """The carrier's answer for `number`; a carrier that keeps no account of numbers (the
    simulated one) confirms every line."""
    if isinstance(provider, NumberOwnership):
        return await provider.owns_number(number)
    return True
