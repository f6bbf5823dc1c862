"""Temporal interceptors of the worker: the call's ids travel from a workflow's input to each of
its activities in a Temporal header, so activity log lines carry them (core/logs.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadConverter
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    StartActivityInput,
    StartLocalActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)
from temporalio.workflow import ActivityHandle

from core.logs import call_context

HEADER = "dialer-call-context"


class CallContextInterceptor(Interceptor):
    """Carries the call's ids from the workflow's input to its activities (a Temporal header,
    not encrypted: ids only), so activity log lines carry `request_id` too."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityIn(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _WorkflowIn


class _ActivityIn(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        ids: dict[str, Any] = {}
        header = input.headers.get(HEADER)
        if header is not None:
            ids = PayloadConverter.default.from_payload(header, dict) or {}
        with call_context(
            request_id=ids.get("request_id"), call_session_id=ids.get("call_session_id")
        ):
            return await super().execute_activity(input)


class _WorkflowIn(WorkflowInboundInterceptor):
    ids: dict[str, str] | None = None

    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_WorkflowOut(outbound, self))

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        call = input.args[0] if input.args else None
        request_id = getattr(call, "request_id", None)
        session_id = getattr(call, "call_session_id", None)
        if isinstance(request_id, str) and isinstance(session_id, str):
            self.ids = {"request_id": request_id, "call_session_id": session_id}
        return await super().execute_workflow(input)


class _WorkflowOut(WorkflowOutboundInterceptor):
    def __init__(self, next: WorkflowOutboundInterceptor, root: _WorkflowIn) -> None:
        super().__init__(next)
        self._root = root

    def _tag(self, headers: Mapping[str, Payload]) -> Mapping[str, Payload]:
        if self._root.ids is None:
            return headers
        return {**headers, HEADER: PayloadConverter.default.to_payload(self._root.ids)}

    def start_activity(self, input: StartActivityInput) -> ActivityHandle[Any]:
        input.headers = self._tag(input.headers)
        return super().start_activity(input)

    def start_local_activity(self, input: StartLocalActivityInput) -> ActivityHandle[Any]:
        input.headers = self._tag(input.headers)
        return super().start_local_activity(input)
