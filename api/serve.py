"""Serving the API with a graceful shutdown that a load balancer can follow.

On the first SIGTERM (or SIGINT) the process keeps serving but `/ready` answers 503 for
DIALER_SHUTDOWN_DRAIN_SECONDS, so the balancer takes it out of rotation before anything is
refused. Then uvicorn closes the listening socket (new connections are refused), lets
in-flight requests finish within DIALER_API_GRACEFUL_SHUTDOWN_SECONDS, runs the lifespan
shutdown and the process exits 0. A second signal skips the rest of the drain; a third one
abandons in-flight requests."""

from __future__ import annotations

import logging
import threading
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("dialer.api")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_seconds: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_seconds = drain_seconds
        self._draining = False
        app.state.shutting_down = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Deliberately not recorded in uvicorn's captured signals: uvicorn re-raises those
        # after a clean shutdown, and the process would die of the signal instead of exit 0.
        if self._draining:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True
            return
        self._draining = True
        self._app.state.shutting_down = True
        log.info("shutting down: not ready for %.1fs, then draining", self._drain_seconds)
        timer = threading.Timer(self._drain_seconds, self._stop_accepting)
        timer.daemon = True
        timer.start()

    def _stop_accepting(self) -> None:
        # Read by uvicorn's main loop on its next tick (every 0.1 s).
        self.should_exit = True


def serve(app: FastAPI, *, drain_seconds: float, **uvicorn_options: Any) -> None:
    """Like `uvicorn.run(app, **uvicorn_options)`, with the drain described above."""
    config = uvicorn.Config(app, **uvicorn_options)
    DrainingServer(config, app, drain_seconds).run()
