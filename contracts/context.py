"""A call's context: the variables its agent receives, the client's own metadata, and the
media stream that carries them to the agent.

The limits come from the carrier: a call's TwiML must stay under Twilio's 4,000 characters,
and it holds the stream URL, the call's ids and every variable as a `<Parameter>` element.
The budget below keeps the worst case (every limit reached, every character escaped) under
it: ids about 520 characters, the URL at most 1,000, the variables at most 2,000, the
document's own elements about 130. Pure functions only (the workflow imports this module)."""

# No `from __future__ import annotations`: see contracts/calls.py.
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr

VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# The names of the ids every stream carries: a variable cannot take one.
RESERVED_PARAMETERS = (
    "request_id",
    "call_session_id",
    "user_id",
    "agent_id",
    "workflow_id",
    "campaign_id",
)
MAX_VARIABLES = 32
MAX_VARIABLE_CHARS = 500  # a string value
MAX_VARIABLES_TWIML_CHARS = 2000  # all variables as <Parameter> elements, escaped
# Integers an agent's JSON reader can hold exactly (JavaScript's Number.MAX_SAFE_INTEGER).
MAX_SAFE_INTEGER = 2**53 - 1
MAX_METADATA_KEYS = 32
MAX_METADATA_KEY_CHARS = 40
MAX_METADATA_VALUE_CHARS = 500
MAX_MEDIA_STREAM_URL_CHARS = 1000  # as in TwiML: escaped, placeholders filled
URL_PLACEHOLDERS = ("{call_session_id}", "{request_id}")
_ID_CHARS = 36  # a UUID, what a placeholder becomes

Variables = dict[str, Any]  # str, int, float or bool values (variable_problem checks)


def parameter_value(value: Any) -> str:
    """A variable as a stream parameter (always a string): booleans `true` / `false`,
    numbers as JSON writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def parameter_cost(name: str, value: str) -> int:
    """Characters one stream parameter takes in the TwiML."""
    return len(f"<Parameter name={quoteattr(name)} value={quoteattr(value)} />")


def variables_problem(variables: Mapping[str, Any]) -> str | None:
    """Why these variables cannot be sent to an agent, naming the limit; None when they can."""
    if len(variables) > MAX_VARIABLES:
        return f"variables: at most {MAX_VARIABLES} per call (got {len(variables)})"
    cost = 0
    for name, value in variables.items():
        if not VARIABLE_NAME.fullmatch(name):
            return (
                f"variables: {name[:70]!r} is not a valid name "
                "(a letter or _, then letters, digits or _, at most 64 characters)"
            )
        if name in RESERVED_PARAMETERS:
            return f"variables: {name!r} is reserved (every stream carries it)"
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            if abs(value) > MAX_SAFE_INTEGER:
                return f"variables: {name} is beyond ±{MAX_SAFE_INTEGER} (send it as a string)"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return f"variables: {name} is not a finite number"
        elif isinstance(value, str):
            if len(value) > MAX_VARIABLE_CHARS:
                return f"variables: {name} is longer than {MAX_VARIABLE_CHARS} characters"
        else:
            return f"variables: {name} must be a string, a number or a boolean"
        cost += parameter_cost(name, parameter_value(value))
    if cost > MAX_VARIABLES_TWIML_CHARS:
        return (
            f"variables: together they take {cost} characters of the call's TwiML, at most "
            f"{MAX_VARIABLES_TWIML_CHARS} (each costs its name, its value escaped, and 30)"
        )
    return None


def merged_variables(campaign: Mapping[str, Any], recipient: Mapping[str, Any]) -> Variables:
    """A campaign recipient's call variables: its own over the campaign's; a null removes one."""
    merged = {**campaign, **recipient}
    return {name: value for name, value in merged.items() if value is not None}


def metadata_problem(metadata: Mapping[str, Any]) -> str | None:
    """Why this metadata cannot be stored, naming the limit; None when it can."""
    if len(metadata) > MAX_METADATA_KEYS:
        return f"metadata: at most {MAX_METADATA_KEYS} keys (got {len(metadata)})"
    for key, value in metadata.items():
        if not 1 <= len(key) <= MAX_METADATA_KEY_CHARS:
            return f"metadata: keys have 1 to {MAX_METADATA_KEY_CHARS} characters"
        if not isinstance(value, str):
            return f"metadata: {key[:40]!r} must be a string"
        if len(value) > MAX_METADATA_VALUE_CHARS:
            return f"metadata: {key[:40]!r} is longer than {MAX_METADATA_VALUE_CHARS} characters"
    return None


def media_stream_url_problem(url: str) -> str | None:
    """Why `url` cannot be an agent's media stream endpoint; None when it can."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        return f"media_stream_url cannot be read: {exc}"
    if parts.scheme not in ("ws", "wss"):
        return "media_stream_url must start with ws:// or wss://"
    if not parts.hostname:
        return "media_stream_url needs a host"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "media_stream_url must not hold spaces or control characters"
    rest = url
    for placeholder in URL_PLACEHOLDERS:
        rest = rest.replace(placeholder, "")
    if "{" in rest or "}" in rest:
        return "media_stream_url: the only placeholders are {call_session_id} and {request_id}"
    filled = fill_media_stream_url(url, "0" * _ID_CHARS, "0" * _ID_CHARS)
    if len(quoteattr(filled)) - 2 > MAX_MEDIA_STREAM_URL_CHARS:
        return (
            f"media_stream_url is longer than {MAX_MEDIA_STREAM_URL_CHARS} characters "
            "(counted with its placeholders filled and & escaped, as in TwiML)"
        )
    return None


def fill_media_stream_url(template: str, call_session_id: str, request_id: str) -> str:
    return template.replace("{call_session_id}", call_session_id).replace(
        "{request_id}", request_id
    )


def stream_parameters(
    *,
    request_id: str,
    call_session_id: str,
    user_id: str,
    agent_id: str | None,
    workflow_id: str | None,
    campaign_id: str | None,
    variables: Mapping[str, Any],
) -> dict[str, str]:
    """What the agent receives in the stream's `start.customParameters`: the call's ids (an
    id the call does not have is left out), then each variable under its own name."""
    ids = {
        "request_id": request_id,
        "call_session_id": call_session_id,
        "user_id": user_id,
        "agent_id": agent_id,
        "workflow_id": workflow_id,
        "campaign_id": campaign_id,
    }
    params = {name: value for name, value in ids.items() if value}
    params.update((name, parameter_value(value)) for name, value in variables.items())
    return params
