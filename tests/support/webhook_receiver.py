"""A customer's webhook receiver as a real process, for the end-to-end tests and `make chaos`:

    python -m tests.support.webhook_receiver --port 8080 --log requests.jsonl \
        [--fail-first N] [--delay SECONDS] [--status CODE]

Every POST is appended to the log as one JSON line (path, headers, body, when, the status it
answered), before it is answered, so a reader sees every attempt. It answers `--status`
(default 204) after `--delay` seconds; the first N attempts of each `webhook-id` get a 500.
Only the standard library: nothing of Dialer's, so it verifies nothing itself (the tests do,
with the standardwebhooks library)."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def read_log(path: Path) -> list[dict[str, Any]]:
    """The attempts logged so far (a line being written is left for the next read)."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--status", type=int, default=204)
    args = parser.parse_args()
    lock = threading.Lock()
    attempts: Counter[str] = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length).decode()
            msg_id = self.headers.get("webhook-id") or ""
            with lock:
                attempts[msg_id] += 1
                status = 500 if attempts[msg_id] <= args.fail_first else args.status
                entry = {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                    "at": time.time(),
                    "status": status,
                }
                with args.log.open("a") as log:
                    log.write(json.dumps(entry) + "\n")
            if args.delay:
                time.sleep(args.delay)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *values: Any) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
