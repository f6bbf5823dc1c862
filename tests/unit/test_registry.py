"""telephony.registry: which provider dials a line."""

from __future__ import annotations

from datetime import datetime

import pytest

from telephony.base import DialRequest, ProviderCall
from telephony.registry import ProviderRegistry


class FakeProvider:
    """A provider by name only: the registry never dials."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requires_media_stream = False

    async def create_call(self, request: DialRequest) -> ProviderCall:
        raise NotImplementedError

    async def lookup_call(
        self,
        *,
        call_session_id: str,
        attempts: list[int],
        to_number: str,
        from_number: str,
        since: datetime | None = None,
    ) -> ProviderCall | None:
        raise NotImplementedError

    async def fetch_call(self, sid: str) -> ProviderCall | None:
        raise NotImplementedError

    async def hangup_call(self, sid: str, *, answered: bool, message: str | None = None) -> bool:
        raise NotImplementedError


@pytest.fixture
def registry() -> ProviderRegistry:
    return ProviderRegistry(
        {"simulated": FakeProvider("simulated"), "twilio": FakeProvider("twilio")},
        default="simulated",
    )


def test_a_line_naming_a_configured_provider_uses_it(registry: ProviderRegistry) -> None:
    assert registry.name_for("twilio") == "twilio"
    assert registry.name_for("simulated") == "simulated"


@pytest.mark.parametrize("label", [None, "", "vonage", "Twilio", "twilio "])
def test_any_other_line_uses_the_default(registry: ProviderRegistry, label: str | None) -> None:
    assert registry.name_for(label) == "simulated"


def test_get_returns_the_named_provider_or_the_default(registry: ProviderRegistry) -> None:
    assert registry.get("twilio").name == "twilio"
    assert registry.get("simulated").name == "simulated"
    assert registry.get("unknown").name == "simulated"


def test_default_is_exposed() -> None:
    reg = ProviderRegistry({"twilio": FakeProvider("twilio")}, default="twilio")
    assert reg.default == "twilio"
    assert reg.name_for(None) == "twilio"


@pytest.mark.parametrize("default", ["twilio", "", "Simulated"])
def test_a_default_that_is_not_configured_is_refused(default: str) -> None:
    with pytest.raises(ValueError, match="not configured"):
        ProviderRegistry({"simulated": FakeProvider("simulated")}, default=default)


def test_an_empty_registry_is_refused() -> None:
    with pytest.raises(ValueError):
        ProviderRegistry({}, default="simulated")
