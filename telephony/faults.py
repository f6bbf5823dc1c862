"""A seeded fault injector for the simulated carrier (off by default), so the chaos scenarios
can show that provider trouble never loses a session nor calls anyone twice.

Each attempt's fate depends only on the seed and the attempt tag (`<session>.<attempt>`), so a
run is reproducible and a retried activity meets the same fault as the first try."""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from telephony.base import Ambiguous, DialRequest, NotPlaced, ProviderCall, TelephonyProvider


class Fault(StrEnum):
    NONE = "none"
    LATENCY = "latency"  # a slow answer (below the dial timeout), then a normal one
    SERVER_ERROR = "5xx"  # HTTP 5xx before anything was placed: ambiguous to the caller
    RATE_LIMITED = "429"  # provably not placed: dialing again later is safe
    LOST = "lost"  # the call is placed, but the answer never arrives


FAULTS = (Fault.LATENCY, Fault.SERVER_ERROR, Fault.RATE_LIMITED, Fault.LOST)


@dataclass(frozen=True)
class FaultInjector:
    seed: int
    rate: float = 0.3  # share of attempts that meet a fault
    spike_ms: int = 1500

    def fault_for(self, request: DialRequest) -> Fault:
        digest = hashlib.sha256(f"{self.seed}:{request.attempt_tag}".encode()).digest()
        rng = random.Random(digest)
        if rng.random() >= self.rate:
            return Fault.NONE
        return rng.choice(FAULTS)

    async def before_placing(self, request: DialRequest) -> Fault:
        """Raise or delay as the fault says; return it so the caller can apply LOST after."""
        fault = self.fault_for(request)
        if fault == Fault.LATENCY:
            await asyncio.sleep(self.spike_ms / 1000)
        elif fault == Fault.SERVER_ERROR:
            raise Ambiguous("HTTP 503 from the carrier (injected)", code="503")
        elif fault == Fault.RATE_LIMITED:
            raise NotPlaced("Too Many Requests (injected)", code="20429", retry_after=0.5)
        return fault

    @staticmethod
    def after_placing(fault: Fault) -> None:
        if fault == Fault.LOST:
            raise Ambiguous("timed out waiting for the carrier's response (injected)")


class FaultyProvider:
    """Wraps a provider (the simulated carrier) and injects the seeded faults around it."""

    def __init__(self, inner: TelephonyProvider, faults: FaultInjector) -> None:
        self._inner = inner
        self._faults = faults
        self.name = inner.name
        self.requires_media_stream = inner.requires_media_stream

    async def create_call(self, request: DialRequest) -> ProviderCall:
        fault = await self._faults.before_placing(request)
        call = await self._inner.create_call(request)
        self._faults.after_placing(fault)
        return call

    def __getattr__(self, name: str) -> Any:
        # Everything else (lookup_call, fetch_call, the ledger counts) is the carrier's own:
        # the injector only ever disturbs placing a call.
        return getattr(self._inner, name)


def with_faults(provider: TelephonyProvider, faults: FaultInjector | None) -> TelephonyProvider:
    """The provider itself, or wrapped in the injector when there is one (worker.py builds it
    from the DIALER_SIMULATED_FAULT_* settings)."""
    if faults is None:
        return provider
    return FaultyProvider(provider, faults)
