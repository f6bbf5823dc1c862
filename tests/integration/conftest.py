"""Fixtures of the integration layer: stacks with other settings than the shared `stack`
fixture. Readers of the database and `create_call` are in tests/support."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.support.settings import settings_for
from tests.support.stack import Stack, StackFactory, open_stack


@pytest.fixture
def stack_factory(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, tmp_path: Path
) -> StackFactory:
    """Open a stack on the dev server with settings overrides (same database as `engine`)."""

    def factory(
        *, workers: bool = True, client: Client | None | Literal["dev"] = "dev", **overrides: Any
    ) -> AbstractAsyncContextManager[Stack]:
        settings = settings_for(tmp_path, database_url, **overrides)
        chosen = dev_env.client if isinstance(client, str) else client
        return open_stack(settings, engine, chosen, workers=workers)

    return factory
