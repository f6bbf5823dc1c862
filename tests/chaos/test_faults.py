"""The seeded fault injector: reproducible, every kind occurs, off means off, and a lost answer
still leaves the call placed (so reconciliation has something to find)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from core.config import Settings
from telephony.base import Ambiguous, DialRequest, NotPlaced, ProviderCall
from telephony.faults import FAULTS, Fault, FaultInjector, FaultyProvider, with_faults
from worker import fault_injector


def request(attempt: int = 1, session: str | None = None) -> DialRequest:
    return DialRequest(
        call_session_id=session or str(uuid.uuid4()),
        request_id=str(uuid.uuid4()),
        attempt=attempt,
        to_number="+12025550100",
        from_number="+12025550199",
    )


class Carrier:
    name = "simulated"
    requires_media_stream = False

    def __init__(self) -> None:
        self.placed: list[str] = []

    async def create_call(self, req: DialRequest) -> ProviderCall:
        self.placed.append(req.attempt_tag)
        return ProviderCall(sid="SM1", status="queued")

    async def lookup_call(
        self,
        *,
        call_session_id: str,
        attempts: list[int],
        to_number: str = "",
        from_number: str = "",
        since: datetime | None = None,
    ) -> ProviderCall | None:
        return None

    async def fetch_call(self, sid: str) -> ProviderCall | None:
        return None

    async def hangup_call(self, sid: str, *, answered: bool, message: str | None = None) -> bool:
        return False


def test_same_seed_same_faults_and_every_kind_occurs() -> None:
    requests = [request(a) for a in range(1, 4) for _ in range(100)]
    first = [FaultInjector(seed=7, rate=0.5).fault_for(r) for r in requests]
    again = [FaultInjector(seed=7, rate=0.5).fault_for(r) for r in requests]
    other = [FaultInjector(seed=8, rate=0.5).fault_for(r) for r in requests]
    assert first == again
    assert first != other
    counts = Counter(first)
    assert set(counts) == {Fault.NONE, *FAULTS}
    assert 0.35 < counts[Fault.NONE] / len(first) < 0.65


def test_rate_zero_injects_nothing() -> None:
    injector = FaultInjector(seed=1, rate=0.0)
    assert {injector.fault_for(request()) for _ in range(200)} == {Fault.NONE}


def _request_meeting(fault: Fault, injector: FaultInjector) -> DialRequest:
    for _ in range(10_000):
        req = request()
        if injector.fault_for(req) == fault:
            return req
    raise AssertionError(f"no request meets {fault}")


@pytest.mark.parametrize(
    ("fault", "error", "placed"),
    [
        (Fault.SERVER_ERROR, Ambiguous, False),
        (Fault.RATE_LIMITED, NotPlaced, False),
        (Fault.LOST, Ambiguous, True),
        (Fault.LATENCY, None, True),
        (Fault.NONE, None, True),
    ],
)
async def test_each_fault_around_the_carrier(
    fault: Fault, error: type[Exception] | None, placed: bool
) -> None:
    injector = FaultInjector(seed=3, rate=0.8, spike_ms=1)
    carrier = Carrier()
    provider = FaultyProvider(carrier, injector)
    req = _request_meeting(fault, injector)
    if error is None:
        assert (await provider.create_call(req)).sid == "SM1"
    else:
        with pytest.raises(error):
            await provider.create_call(req)
    assert carrier.placed == ([req.attempt_tag] if placed else [])
    # Looking calls up is the carrier's own, undisturbed.
    assert await provider.lookup_call(call_session_id="x", attempts=[1]) is None


def test_off_unless_a_seed_is_set(tmp_path: Path) -> None:
    carrier = Carrier()
    plain = Settings(_env_file=None, data_dir=tmp_path)
    assert with_faults(carrier, fault_injector(plain)) is carrier
    seeded = Settings(_env_file=None, data_dir=tmp_path, simulated_fault_seed=5)
    assert isinstance(with_faults(carrier, fault_injector(seeded)), FaultyProvider)
