"""Database activities of CreateCallWorkflow (run as local activities on the main worker)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from sqlalchemy.engine import Engine
from temporalio import activity

from store import calls
from telephony.registry import ProviderRegistry
from workflows.dto import (
    CreateCallInput,
    PersistSessionInput,
    PersistSessionResult,
    RecordAttemptInput,
    RecordOutcomeInput,
    ValidationResult,
)


class CallActivities:
    def __init__(self, engine: Engine, providers: ProviderRegistry, default_region: str) -> None:
        self._engine = engine
        self._providers = providers
        self._region = default_region

    @activity.defn(name="validate_call")
    async def validate_call(self, input: CreateCallInput) -> ValidationResult:
        result = await asyncio.to_thread(calls.validate_call, self._engine, input, self._region)
        if result.provider is not None:
            result = replace(result, provider=self._providers.name_for(result.provider))
        return result

    @activity.defn(name="persist_session")
    async def persist_session(self, input: PersistSessionInput) -> PersistSessionResult:
        return await asyncio.to_thread(calls.persist_session, self._engine, input)

    @activity.defn(name="record_attempt")
    async def record_attempt(self, input: RecordAttemptInput) -> None:
        await asyncio.to_thread(calls.record_attempt, self._engine, input)

    @activity.defn(name="record_outcome")
    async def record_outcome(self, input: RecordOutcomeInput) -> None:
        await asyncio.to_thread(calls.record_outcome, self._engine, input)
