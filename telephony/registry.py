"""Which provider dials a line."""

from __future__ import annotations

from telephony.base import TelephonyProvider


class ProviderRegistry:
    def __init__(self, providers: dict[str, TelephonyProvider], default: str) -> None:
        if default not in providers:
            raise ValueError(f"default provider {default!r} is not configured")
        self._providers = providers
        self.default = default

    def name_for(self, line_label: str | None) -> str:
        """A line that names a configured provider uses it; any other line uses the default."""
        return line_label if line_label in self._providers else self.default

    def get(self, name: str) -> TelephonyProvider:
        return self._providers[self.name_for(name)]
