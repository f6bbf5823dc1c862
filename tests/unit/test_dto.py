"""The workflow and activity payload types decode fast: real annotations, not strings."""

from __future__ import annotations

import dataclasses
import inspect
from types import ModuleType

import pytest

from contracts import calls as dto
from contracts import campaigns as campaign_dto


@pytest.mark.parametrize("module", [dto, campaign_dto])
def test_payload_dataclasses_have_evaluated_annotations(module: ModuleType) -> None:
    classes = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if dataclasses.is_dataclass(c) and c.__module__ == module.__name__
    ]
    assert classes
    for cls in classes:
        for name, hint in cls.__annotations__.items():
            assert not isinstance(hint, str), f"{cls.__name__}.{name} is annotated as a string"
