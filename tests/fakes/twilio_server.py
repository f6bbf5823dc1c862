"""A local Twilio-compatible REST server for the tests: enough of the 2010-04-01 Calls API for
the real `twilio` client to talk to it, with faults that can be injected per request.

- `POST /2010-04-01/Accounts/{sid}/Calls.json` (form-encoded, HTTP basic auth),
- `GET  /2010-04-01/Accounts/{sid}/Calls.json?To=&From=&Status=&StartTime>=` (newest first;
  as at Twilio, a queued call has no start time, so a StartTime filter leaves it out),
- `GET  /2010-04-01/Accounts/{sid}/Calls/{CallSid}.json`,
- `POST /2010-04-01/Accounts/{sid}/Calls/{CallSid}.json`: the call update (`Status=completed`
  or `canceled`, or `Twiml` that speaks and hangs up), recorded in `updates`; it ends the
  call, and a call already over answers 400 with code 21220, as Twilio does,
- errors in Twilio's JSON shape `{code, message, more_info, status}`,
- `failing_pages`: that many list answers name a next page whose fetch fails (HTTP 500), the
  paging error the SDK raises as a plain TwilioException,
- `GET /2010-04-01/Accounts/{sid}/IncomingPhoneNumbers.json?PhoneNumber=` and
  `GET /2010-04-01/Accounts/{sid}/OutgoingCallerIds.json?PhoneNumber=`: the account's numbers
  (`incoming_numbers`) and verified caller ids (`caller_ids`). As at Twilio, the incoming
  numbers' PhoneNumber filter matches part of a number too; `number_faults` answers the next
  number lookups with an error instead.

Like the real Twilio, a call's JSON does not carry its StatusCallback URL; the tests read
what was posted from `calls[sid].params`. `created` counts the calls the server placed: the
tests assert exactly one per session under every fault. What a call asked for at creation
(`TimeLimit`, `MachineDetection`, `AsyncAmd`, `AsyncAmdStatusCallback`, ...) is in its
`params` too."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API = "/2010-04-01/Accounts/"
# The number lists of an account, by resource, and the key of their items in a page.
NUMBER_LISTS = {
    "IncomingPhoneNumbers": "incoming_phone_numbers",
    "OutgoingCallerIds": "outgoing_caller_ids",
}


@dataclass
class Fault:
    """What to do with the next create request.

    kind: "error" (answer `status`/`code`, place nothing), "error_after_create" (place the
    call, then answer `status`/`code`, e.g. a 500), "timeout_after_create" (place the call,
    then answer only after `delay` seconds), "drop_after_create" (place the call, then close
    the connection without an answer)."""

    kind: str
    status: int = 400
    code: int | None = None
    message: str = "injected fault"
    delay: float = 2.0


@dataclass
class FakeCall:
    sid: str
    to: str
    from_: str
    status: str
    date_created: datetime
    params: dict[str, list[str]]
    end_time: datetime | None = None
    duration: int | None = None
    answered_by: str | None = None

    def json(self, account_sid: str) -> dict[str, Any]:
        def rfc2822(value: datetime | None) -> str | None:
            return format_datetime(value, usegmt=True) if value else None

        return {
            "sid": self.sid,
            "account_sid": account_sid,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "status": self.status,
            "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(self.end_time or self.date_created),
            # Like Twilio: a call still queued has not started.
            "start_time": None if self.status == "queued" else rfc2822(self.date_created),
            "end_time": rfc2822(self.end_time),
            "duration": str(self.duration) if self.duration is not None else None,
            "answered_by": self.answered_by,
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "uri": f"{API}{account_sid}/Calls/{self.sid}.json",
            "subresource_uris": {},
        }


@dataclass
class FakeTwilio:
    account_sid: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    calls: dict[str, FakeCall] = field(default_factory=dict)
    faults: deque[Fault] = field(default_factory=deque)
    created: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    # Every call update, in order: (CallSid, its form).
    updates: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    # List answers that name a next page which then fails to load, one per list request.
    failing_pages: int = 0
    # The account's IncomingPhoneNumbers and OutgoingCallerIds (E.164).
    incoming_numbers: set[str] = field(default_factory=set)
    caller_ids: set[str] = field(default_factory=set)
    # Errors ("error" faults) for the next number lookups, one per list request.
    number_faults: deque[Fault] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)  # typeshed allows bytes; an AF_INET server has a str
        return f"http://{host}:{port}"

    def inject(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def set_status(
        self, sid: str, status: str, duration: int | None = None, answered_by: str | None = None
    ) -> None:
        """Move a call on, as the carrier would (what GET Calls/{sid}.json then shows)."""
        with self.lock:
            call = self.calls[sid]
            call.status = status
            call.duration = duration
            call.answered_by = answered_by
            if status in {"completed", "busy", "no-answer", "canceled", "failed"}:
                call.end_time = datetime.now(UTC)

    def calls_for(self, call_session_id: str) -> list[FakeCall]:
        """Calls whose StatusCallback names this session."""
        return [
            c
            for c in self.calls.values()
            if f"call_session_id={call_session_id}" in c.params.get("StatusCallback", [""])[0]
        ]

    def start(self) -> FakeTwilio:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def place(self, form: dict[str, list[str]]) -> FakeCall:
        with self.lock:
            call = FakeCall(
                sid="CA" + secrets.token_hex(16),
                to=form["To"][0],
                from_=form["From"][0],
                status="queued",
                date_created=datetime.now(UTC).replace(microsecond=0),
                params=form,
            )
            self.calls[call.sid] = call
            self.created += 1
            return call


class _Handler(BaseHTTPRequestHandler):
    fake: FakeTwilio
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests read `fake.requests`

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: int | None, message: str) -> None:
        self._send(
            status,
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
        )

    def _authorized(self) -> bool:
        expected = f"{self.fake.account_sid}:{self.fake.auth_token}".encode()
        header = self.headers.get("Authorization", "")
        if header == "Basic " + base64.b64encode(expected).decode():
            return True
        self._error(401, 20003, "Authenticate")
        return False

    def _route(self) -> tuple[str, str | None] | None:
        path = urlsplit(self.path).path
        prefix = f"{API}{self.fake.account_sid}/Calls"
        if path == prefix + ".json":
            return "calls", None
        if path.startswith(prefix + "/") and path.endswith(".json"):
            return "call", path[len(prefix) + 1 : -len(".json")]
        return None

    def do_POST(self) -> None:
        self.fake.requests.append(("POST", self.path))
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
        if not self._authorized():
            return
        route = self._route()
        if route is not None and route[0] == "call":
            self._update(route[1] or "", form)
            return
        if route != ("calls", None):
            self._error(404, 20404, "The requested resource was not found")
            return
        fault = self.fake.faults.popleft() if self.fake.faults else None
        if fault and fault.kind == "error":
            self._error(fault.status, fault.code, fault.message)
            return
        if "To" not in form or "From" not in form:
            self._error(400, 21201 if "To" not in form else 21213, "To and From are required")
            return
        if "Url" not in form and "Twiml" not in form and "ApplicationSid" not in form:
            self._error(400, 21205, "Url, Twiml or ApplicationSid is required")
            return
        call = self.fake.place(form)
        if fault and fault.kind == "error_after_create":
            self._error(fault.status, fault.code, fault.message)
            return
        if fault and fault.kind == "timeout_after_create":
            time.sleep(fault.delay)
        if fault and fault.kind == "drop_after_create":
            self.close_connection = True
            self.connection.close()
            return
        self._send(201, call.json(self.fake.account_sid))

    def _update(self, sid: str, form: dict[str, list[str]]) -> None:
        """The call update: the call ends (`Twiml` is taken as spoken, then its Hangup)."""
        fake = self.fake
        with fake.lock:
            call = fake.calls.get(sid)
            over = call is not None and call.end_time is not None
        if call is None:
            self._error(404, 20404, "The requested resource was not found")
            return
        if over:
            self._error(400, 21220, "Call is not in-progress. Cannot redirect.")
            return
        status = form.get("Status", [""])[0]
        if not status and "Twiml" not in form:
            self._error(400, 21218, "Status, Url or Twiml is required")
            return
        fake.updates.append((sid, form))
        fake.set_status(sid, status or "completed", answered_by=call.answered_by)
        self._send(200, call.json(fake.account_sid))

    def do_GET(self) -> None:
        self.fake.requests.append(("GET", self.path))
        if not self._authorized():
            return
        path = urlsplit(self.path).path
        for kind in NUMBER_LISTS:
            if path == f"{API}{self.fake.account_sid}/{kind}.json":
                self._numbers(kind, parse_qs(urlsplit(self.path).query))
                return
        route = self._route()
        if route is None:
            self._error(404, 20404, "The requested resource was not found")
            return
        kind, sid = route
        if "PageToken" in parse_qs(urlsplit(self.path).query):
            self._error(500, 20500, "Internal Server Error")
            return
        if kind == "call":
            call = self.fake.calls.get(sid or "")
            if call is None:
                self._error(404, 20404, "The requested resource was not found")
                return
            self._send(200, call.json(self.fake.account_sid))
            return
        self._send(200, self._list(parse_qs(urlsplit(self.path).query)))

    def _numbers(self, kind: str, query: dict[str, list[str]]) -> None:
        fake = self.fake
        with fake.lock:
            fault = fake.number_faults.popleft() if fake.number_faults else None
        if fault is not None:
            self._error(fault.status, fault.code, fault.message)
            return
        wanted = query.get("PhoneNumber", [""])[0]
        if kind == "IncomingPhoneNumbers":
            # Twilio matches part of a number here ("+1202" finds every +1 202 number).
            numbers = sorted(n for n in fake.incoming_numbers if wanted in n)
        else:
            numbers = sorted(n for n in fake.caller_ids if not wanted or n == wanted)
        size = int(query.get("PageSize", ["50"])[0])
        uri = f"{API}{fake.account_sid}/{kind}.json"
        items = [
            {
                "sid": "PN" + secrets.token_hex(16),
                "account_sid": fake.account_sid,
                "friendly_name": number,
                "phone_number": number,
                "date_created": format_datetime(datetime.now(UTC), usegmt=True),
                "date_updated": format_datetime(datetime.now(UTC), usegmt=True),
                "uri": uri,
            }
            for number in numbers[:size]
        ]
        self._send(
            200,
            {
                NUMBER_LISTS[kind]: items,
                "first_page_uri": uri,
                "next_page_uri": None,
                "previous_page_uri": None,
                "page": 0,
                "page_size": size,
                "start": 0,
                "end": max(0, len(items) - 1),
                "uri": uri,
            },
        )

    def _list(self, query: dict[str, list[str]]) -> dict[str, Any]:
        since: date | None = None
        for key in ("StartTime>", "StartTime>=", "StartTime"):
            if key in query:
                since = date.fromisoformat(query[key][0][:10])
        found = [
            c
            for c in self.fake.calls.values()
            if ("To" not in query or c.to == query["To"][0])
            and ("From" not in query or c.from_ == query["From"][0])
            and ("Status" not in query or c.status == query["Status"][0])
            and (since is None or (c.status != "queued" and c.date_created.date() >= since))
        ]
        found.sort(key=lambda c: c.date_created, reverse=True)
        size = int(query.get("PageSize", ["50"])[0])
        uri = f"{API}{self.fake.account_sid}/Calls.json"
        next_page = None
        with self.fake.lock:
            if self.fake.failing_pages > 0:
                self.fake.failing_pages -= 1
                next_page = f"{uri}?PageSize={size}&Page=1&PageToken=PA{secrets.token_hex(8)}"
        return {
            "calls": [c.json(self.fake.account_sid) for c in found[:size]],
            "first_page_uri": uri,
            "next_page_uri": next_page,
            "previous_page_uri": None,
            "page": 0,
            "page_size": size,
            "start": 0,
            "end": max(0, min(size, len(found)) - 1),
            "uri": uri,
        }
