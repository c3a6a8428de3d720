"""The simulator as an importable tornado application (`make_app`, `serve`)."""

from __future__ import annotations

import logging

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application

from gpt4batch.services.mock_upstream import handlers as h
from gpt4batch.services.mock_upstream import openai_handlers as oa
from gpt4batch.services.mock_upstream.options import Options
from gpt4batch.services.mock_upstream.state import SimState


def make_app(options: Options, sim: SimState | None = None) -> Application:
    """All routes; `sim` (state, counters) is created from `options` unless given."""
    sim = sim or SimState(options)
    kw = {"sim": sim}
    routes = [
        (r"/(standard|concurrent)/uploaded", h.UploadHandler, kw),
        (r"/(standard|concurrent)/(all-tools|gizmos)", h.ChatHandler, kw),
        (r"/console/access_token", h.ConsoleHandler, kw),
        (r"/v1/chat/completions", oa.OpenAIChatHandler, kw),
        (r"/chat", oa.OpenAIChatHandler, kw),
        (r"/v1/completions", oa.CompletionsHandler, kw),
        (r"/v1/embeddings", oa.EmbeddingsHandler, kw),
        (r"/v1/responses", oa.ResponsesHandler, kw),
        (r"/v1/models", h.ModelsHandler, kw),
        (r"/chatgpt-service/chat", h.ChatgptServiceHandler, kw),
        (r"/files/([A-Za-z0-9_-]+)", h.FilesHandler, kw),
        (r"/stats(?:/reset)?", h.StatsHandler, kw),
        (r"/keys/(refuse|accept)", h.KeysHandler, kw),
    ]
    app = Application(routes, log_function=_quiet_log, compress_response=False)
    app.settings["sim"] = sim
    return app


def _quiet_log(handler: object) -> None:
    """No access log: one line per call would cost more than the call itself."""
    status = getattr(handler, "get_status", lambda: 0)()
    if status >= 500 and status != 503:
        logging.getLogger("mock_upstream").warning("answered %s", status)


async def serve(options: Options, sim: SimState | None = None) -> tuple[HTTPServer, int]:
    """Listen on `options.host:options.port` (0 = any free port); returns (server, port)."""
    app = make_app(options, sim)
    sockets = bind_sockets(options.port, options.host, reuse_port=False)
    server = HTTPServer(app, max_body_size=h.MAX_UPLOAD_BYTES + 2 * 1024 * 1024, xheaders=False)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    return server, port
