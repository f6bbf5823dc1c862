"""Logging of every Dialer process: text or JSON lines, each line about a call carrying its
`request_id` and `call_session_id`, phone numbers masked to their last 4 digits.

Where the ids come from: the API binds them when create_call computes them (a contextvar, so the
access log line of that request has them too); in the worker an interceptor carries them from
the workflow's input to each of its activities in a Temporal header; workflow and activity
loggers of the SDK add the workflow id, which is the call_session_id."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

from core.config import Settings
from core.phone import mask

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_session_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "call_session_id", default=None
)

CALL_WORKFLOW = "CreateCallWorkflow"


def bind_call(*, request_id: str | None, call_session_id: str | None) -> None:
    """Tag every later log line of this task (and the tasks it starts) with the call's ids."""
    _request_id.set(request_id)
    _session_id.set(call_session_id)


@contextmanager
def call_context(*, request_id: str | None, call_session_id: str | None) -> Iterator[None]:
    tokens = (_request_id.set(request_id), _session_id.set(call_session_id))
    try:
        yield
    finally:
        _request_id.reset(tokens[0])
        _session_id.reset(tokens[1])


# Kept as they are: ids, timestamps and addresses are digit runs too, but never phone numbers.
_KEEP = (
    r"(?P<keep>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:[.,]\d+)?)?"
    r"|\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?)"
)
# A number as people and URLs write it: +1 202-555-0100, (202) 555 0100, %2B12025550100.
# In a query string a space may be `+` or `%20`, parentheses `%28` and `%29`.
_PHONE = r"(?P<phone>(?:\+|%2[Bb])?(?:\(|%28)?\d(?:[\d\s().+\-]|%20|%2[Dd]|%28|%29)*\d)"
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_SCAN = re.compile(rf"(?<![\w.]){_KEEP}|(?<![\w-]){_PHONE}")
MIN_DIGITS = 8


def _mask_match(match: re.Match[str]) -> str:
    phone = match.group("phone")
    if phone is None:
        return match.group(0)
    plain = _ESCAPE.sub(" ", phone)  # the digits of `%28` are not digits of the number
    if sum(c.isdigit() for c in plain) < MIN_DIGITS:
        return phone
    return mask(plain)


def redact(text: str) -> str:
    """Mask every phone number in `text` to its last 4 digits."""
    return _SCAN.sub(_mask_match, text)


def _ids_from_sdk(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """The workflow id of a record made by the SDK's workflow or activity logger."""
    for attr in ("temporal_workflow", "temporal_activity"):
        info = getattr(record, attr, None)
        if isinstance(info, Mapping) and info.get("workflow_type") == CALL_WORKFLOW:
            return None, info.get("workflow_id")
    return None, None


class CallContextFilter(logging.Filter):
    """Adds `request_id` and `call_session_id` to every record that can know them."""

    def filter(self, record: logging.LogRecord) -> bool:
        sdk_request, sdk_session = _ids_from_sdk(record)
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id.get() or sdk_request
        if getattr(record, "call_session_id", None) is None:
            record.call_session_id = _session_id.get() or sdk_session
        return True


class RedactFilter(logging.Filter):
    """Renders the message once and masks phone numbers in it (and in the traceback), whatever
    logger made it: ours, uvicorn's access log (query strings), a provider SDK."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# uvicorn's `color_message` repeats the message with terminal escapes.
_SKIP = {"request_id", "call_session_id", "temporal_workflow", "temporal_activity", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "call_session_id"):
            if getattr(record, key, None):
                out[key] = getattr(record, key)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _SKIP and not key.startswith("_"):
                out[key] = redact(value) if isinstance(value, str) else _plain(value)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str)


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return redact(str(value))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [
            f"{key}={getattr(record, key)}"
            for key in ("request_id", "call_session_id")
            if getattr(record, key, None)
        ]
        return f"{line} [{' '.join(ids)}]" if ids else line


# Loggers that would print request details (URLs, bodies, headers) at INFO.
_QUIET = ("httpx", "httpcore", "twilio.http_client", "urllib3")


def make_handler(fmt: str, stream: IO[str] | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(CallContextFilter())
    handler.addFilter(RedactFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    return handler


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """Replace the root handlers with one that tags, masks and formats every record."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = make_handler(settings.log_format, stream)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # uvicorn's own handlers would print unmasked lines: send its records to ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return handler
