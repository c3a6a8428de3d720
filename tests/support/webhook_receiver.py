"""A webhook receiver for tests: a local HTTP server that records every POST and answers
with a status code the test sets (failing first, then 200, …).

    with WebhookReceiver(fail_first=3) as receiver:
        ... --webhook-url receiver.url ...
        wait_for(lambda: receiver.delivered(), ...)
        event = OpenAI(...).webhooks.unwrap(d.body, d.headers, secret=SECRET)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int  # the status code the receiver gave


class WebhookReceiver:
    """Answers `fail_code` to the first `fail_first` POSTs (or to all while `failing`), 200
    after; `answer_headers` go with every answer (e.g. a redirect's Location)."""

    def __init__(
        self,
        *,
        fail_first: int = 0,
        failing: bool = False,
        fail_code: int = 500,
        answer_headers: dict[str, str] | None = None,
    ) -> None:
        self.fail_first = fail_first
        self.failing = failing
        self.fail_code = fail_code
        self.answer_headers = answer_headers or {}
        self._deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/batches"

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def delivered(self) -> list[Delivery]:
        """The POSTs answered 2xx."""
        return [d for d in self.deliveries() if 200 <= d.answered < 300]

    def _answer_for_next(self) -> int:
        with self._lock:
            failed = sum(1 for d in self._deliveries if d.answered == self.fail_code)
        return self.fail_code if self.failing or failed < self.fail_first else 200

    def _record(self, delivery: Delivery) -> None:
        with self._lock:
            self._deliveries.append(delivery)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                code = receiver._answer_for_next()
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._record(Delivery(self.path, headers, body, code))
                self.send_response(code)
                for name, value in receiver.answer_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                return None

        return Handler

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
