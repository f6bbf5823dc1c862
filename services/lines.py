"""A caller line confirmed at the carrier that dials it: whether its number is the account's own.

A carrier that keeps an account of numbers (Twilio: incoming numbers and verified caller ids)
is asked when a line is registered (`POST /api/v1/phone`) or confirmed again
(`POST /api/v1/phone/{id}/confirm`, `dialer lines confirm`); the simulated carrier confirms
every line. The carrier asked is the one that will dial the line: `carrier_names` is the rule
worker.py's `build_providers` configures its carriers by, and `carrier_for` is
`ProviderRegistry.name_for`. The API and the CLI ask here; the worker reads only the answer
recorded on the line (activities/calls.py)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from core.config import Settings
from telephony.base import TelephonyError, owns_number
from telephony.twilio import TwilioConfig, TwilioProvider

log = logging.getLogger(__name__)


class NumberNotOwned(Exception):
    """The carrier says the number is not one of its account's: the line cannot dial."""


class CarrierUnavailable(Exception):
    """The carrier could not be asked (unreachable, timed out, refused the credentials)."""


def twilio_config(settings: Settings) -> TwilioConfig:
    """Twilio's config from dialer settings; refuses a half-configured account."""
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
    if not settings.twilio_account_sid or not token:
        raise ValueError(
            "DIALER_TELEPHONY_PROVIDER=twilio needs DIALER_TWILIO_ACCOUNT_SID and "
            "DIALER_TWILIO_AUTH_TOKEN"
        )
    return TwilioConfig(
        account_sid=settings.twilio_account_sid,
        auth_token=token,
        api_base_url=settings.twilio_api_base_url,
        http_timeout_seconds=settings.twilio_http_timeout_seconds,
        public_base_url=settings.public_base_url,
        ring_timeout_seconds=settings.twilio_ring_timeout_seconds,
        machine_detection=settings.twilio_machine_detection,
    )


def carrier_names(settings: Settings) -> list[str]:
    """The carriers the worker configures: the simulated one only as the default; Twilio as
    the default, or beside the simulated one when its credentials are set."""
    names = ["simulated"] if settings.telephony_provider == "simulated" else []
    if settings.telephony_provider == "twilio" or (
        settings.twilio_account_sid and settings.twilio_auth_token
    ):
        names.append("twilio")
    return names


class LineConfirmer:
    """Asks the carrier that will dial a line whether its number is the account's own."""

    def __init__(self, carriers: Mapping[str, object | None], default: str) -> None:
        if default not in carriers:
            raise ValueError(f"default provider {default!r} is not configured")
        self._carriers = dict(carriers)
        self.default = default

    @classmethod
    def from_settings(cls, settings: Settings) -> LineConfirmer:
        # Only Twilio is asked anything: the simulated carrier (None here) confirms every line.
        carriers: dict[str, object | None] = {
            name: TwilioProvider(twilio_config(settings)) if name == "twilio" else None
            for name in carrier_names(settings)
        }
        return cls(carriers, settings.telephony_provider)

    def carrier_for(self, label: str | None) -> str:
        """The carrier that dials a line with this label (ProviderRegistry.name_for)."""
        return label if label is not None and label in self._carriers else self.default

    async def confirm(self, number: str, label: str | None) -> str:
        """The name of the carrier that confirmed `number` as its account's own; raises
        NumberNotOwned or CarrierUnavailable."""
        name = self.carrier_for(label)
        try:
            owned = await owns_number(self._carriers[name], number)
        except TelephonyError as exc:
            log.warning("could not confirm a line at %s: %s", name, exc.message)
            raise CarrierUnavailable(name) from exc
        if not owned:
            raise NumberNotOwned(name)
        return name
