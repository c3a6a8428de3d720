"""A small HTTP file server on 127.0.0.1 in a thread, with misbehaving routes."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FileServer:
    url: str
    files: dict[str, bytes]
    hits: Counter[str] = field(default_factory=Counter)
    headers: list[dict[str, str]] = field(default_factory=list)


@contextmanager
def serve_files(files: dict[str, bytes]) -> Iterator[FileServer]:
    """Routes: /f/<name> (a file), /big-declared, /big-streamed, /503, /404, /429."""
    state = FileServer(url="", files=files)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            state.hits[path] += 1
            state.headers.append({k.lower(): v for k, v in self.headers.items()})
            if path.startswith("/f/") and path[3:] in state.files:
                body = state.files[path[3:]]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif path == "/big-declared":
                self.send_response(200)
                self.send_header("Content-Length", str(10_000_000))
                self.end_headers()
                self.wfile.write(b"x" * 1000)
            elif path == "/big-streamed":  # no Content-Length: body until close
                self.send_response(200)
                self.end_headers()
                for _ in range(20):
                    self.wfile.write(b"y" * 1000)
            elif path in ("/503", "/429"):
                self.send_response(int(path[1:]))
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
