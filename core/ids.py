"""The ids of a call, and the fingerprint of what it asks for.

Every id of a call that could be asked for twice is derived, never drawn at random: the same
(user, Idempotency-Key) or the same (campaign, recipient, attempt) always maps to the same
workflow id, so a retried request or a restarted campaign can never start a second workflow,
and the workflow id policies (services/calls.py) make sure it is never started again."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

# Namespaces for ids derived from (user, Idempotency-Key).
_SESSION_NS = uuid.UUID("6f1c8a52-5d0e-4a0b-9a55-0d6b3c1f2e01")
_REQUEST_NS = uuid.UUID("6f1c8a52-5d0e-4a0b-9a55-0d6b3c1f2e02")
# Namespaces for ids derived from (campaign, recipient, attempt).
_CAMPAIGN_CALL_NS = uuid.UUID("0b7d6c1e-3f4a-4c2d-8e9f-a1b2c3d4e501")
_CAMPAIGN_REQUEST_NS = uuid.UUID("0b7d6c1e-3f4a-4c2d-8e9f-a1b2c3d4e502")


def call_ids(user_id: uuid.UUID | str, idempotency_key: str | None) -> tuple[uuid.UUID, uuid.UUID]:
    """(call_session_id, request_id) of a create_call request: random without a key."""
    if idempotency_key is None:
        return uuid.uuid4(), uuid.uuid4()
    name = f"{user_id}:{idempotency_key}"
    return uuid.uuid5(_SESSION_NS, name), uuid.uuid5(_REQUEST_NS, name)


def campaign_call_ids(
    campaign_id: uuid.UUID, recipient_id: uuid.UUID, attempt: int
) -> tuple[str, str]:
    """(call_session_id, request_id) of one attempt at one campaign recipient."""
    name = f"{campaign_id}:{recipient_id}:{attempt}"
    return str(uuid.uuid5(_CAMPAIGN_CALL_NS, name)), str(uuid.uuid5(_CAMPAIGN_REQUEST_NS, name))


def campaign_workflow_id(campaign_id: uuid.UUID | str) -> str:
    return str(campaign_id)


def request_fingerprint(
    number: str,
    agent_id: uuid.UUID | str | None,
    flow_id: uuid.UUID | str | None,
    phone_number_id: uuid.UUID | str | None,
    variables: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """What a call asks for, as a hash: a repeated Idempotency-Key with another fingerprint is
    a different request (409). `number` is normalized where it can be. A call without
    variables or metadata hashes as it did before they existed, so a key used before an
    upgrade still matches its retry after it."""
    parts: list[Any] = [str(p) if p else None for p in (number, agent_id, flow_id, phone_number_id)]
    if variables or metadata:
        parts.append({"variables": dict(variables or {}), "metadata": dict(metadata or {})})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
