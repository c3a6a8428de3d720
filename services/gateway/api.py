"""The HTTP side: the OpenAI `files` and `batches` endpoints the official SDK calls.

Every route needs `Authorization: Bearer <key>` with a configured key; errors
have the API's shape `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from tornado import iostream
from tornado.web import Application, HTTPError, RequestHandler

from gpt4batch.common.logging import get_logger
from gpt4batch.services.gateway import metrics
from gpt4batch.services.gateway.batches import Batches
from gpt4batch.services.gateway.convert import SUPPORTED_ENDPOINTS
from gpt4batch.services.gateway.store import Store

log = get_logger("gpt4batch.gateway")

COMPLETION_WINDOWS = ("24h",)
MAX_PAGE = 100
CHUNK = 1 << 20


class ApiError(HTTPError):
    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(status)
        self.message, self.param, self.code = message, param, code


class Base(RequestHandler):
    route = "other"

    def initialize(self, store: Store, batches: Batches, keys: list[str]) -> None:
        self.store = store
        self.batches = batches
        self.keys = [k.encode() for k in keys]

    def prepare(self) -> None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        given = key.strip().encode()
        ok = (
            scheme.lower() == "bearer"
            and given
            and any(hmac.compare_digest(given, k) for k in self.keys)
        )
        if not ok:
            raise ApiError(
                401,
                "Incorrect or missing API key. Send 'Authorization: Bearer <key>' with a key "
                "the gateway was started with (--api-key).",
                code="invalid_api_key",
            )

    def send(self, obj: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(obj))

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise ApiError(400, "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return body

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, ApiError):
            message, param, code = exc.message, exc.param, exc.code
        else:
            message, param, code = self._reason or "error", None, None
        kind = "invalid_request_error" if status_code < 500 else "server_error"
        self.set_header("Content-Type", "application/json")
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        self.finish(json.dumps(body))

    def file_or_404(self, file_id: str) -> Any:
        record = self.store.get_file(file_id)
        if record is None:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return record

    def batch_or_404(self, batch_id: str) -> Any:
        batch = self.store.get_batch(batch_id)
        if batch is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch


class FilesHandler(Base):
    route = "files"

    async def post(self) -> None:
        purpose = self.get_body_argument("purpose", None)
        if purpose != "batch":
            raise ApiError(
                400,
                f"purpose {purpose!r} is not supported here; only 'batch'.",
                param="purpose",
            )
        uploads = self.request.files.get("file")
        if not uploads:
            raise ApiError(400, "Missing the 'file' part (multipart/form-data).", param="file")
        upload = uploads[0]
        spooled = await asyncio.to_thread(self.store.spool, upload.body)  # off the loop
        record = self.store.add_file(upload.filename or "upload.jsonl", purpose, spooled)
        metrics.BYTES.labels("uploaded").inc(record.bytes)
        log.info("file uploaded", file=record.id, bytes=record.bytes)
        self.send(record.api())

    def get(self) -> None:
        purpose = self.get_query_argument("purpose", None)
        data = [f.api() for f in self.store.list_files(purpose)]
        self.send({"object": "list", "data": data, "has_more": False})


class FileHandler(Base):
    route = "file"

    def get(self, file_id: str) -> None:
        self.send(self.file_or_404(file_id).api())

    def delete(self, file_id: str) -> None:
        self.file_or_404(file_id)
        self.store.delete_file(file_id)
        self.send({"id": file_id, "object": "file", "deleted": True})


class FileContentHandler(Base):
    route = "file_content"

    async def get(self, file_id: str) -> None:
        record = self.file_or_404(file_id)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(record.bytes))
        with self.store.file_path(file_id).open("rb") as fh:
            while chunk := fh.read(CHUNK):
                self.write(chunk)
                try:
                    await self.flush()
                except iostream.StreamClosedError:
                    return
                metrics.BYTES.labels("downloaded").inc(len(chunk))
        self.finish()


class BatchesHandler(Base):
    route = "batches"

    async def post(self) -> None:
        body = self.json_body()
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise ApiError(
                400, "Missing required parameter: 'input_file_id'.", param="input_file_id"
            )
        endpoint = body.get("endpoint")
        if endpoint not in SUPPORTED_ENDPOINTS:
            raise ApiError(
                400,
                f"The endpoint {endpoint!r} is not supported by this gateway; supported: "
                f"{', '.join(SUPPORTED_ENDPOINTS)} (no /v1/embeddings, /v1/completions or "
                "/v1/responses batches).",
                param="endpoint",
            )
        window = body.get("completion_window")
        if window not in COMPLETION_WINDOWS:
            raise ApiError(400, "completion_window must be '24h'.", param="completion_window")
        metadata = body.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and len(metadata) <= 16
            and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        ):
            raise ApiError(
                400, "metadata must map at most 16 string keys to strings.", param="metadata"
            )
        record = self.store.get_file(file_id)
        if record is None or record.purpose != "batch":
            raise ApiError(
                400,
                f"The input file {file_id!r} does not exist or was not uploaded with "
                "purpose 'batch'.",
                param="input_file_id",
            )
        batch = self.batches.create(file_id, endpoint, window, metadata)
        self.send(await self.batches.view(batch))

    async def get(self) -> None:
        after = self.get_query_argument("after", None)
        try:
            limit = int(self.get_query_argument("limit", "20"))
        except ValueError:
            raise ApiError(400, "limit must be an integer.", param="limit") from None
        limit = max(1, min(MAX_PAGE, limit))
        found, more = self.store.list_batches(after, limit)
        data = [await self.batches.view(b) for b in found]
        self.send(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": more,
            }
        )


class BatchHandler(Base):
    route = "batch"

    async def get(self, batch_id: str) -> None:
        self.send(await self.batches.view(self.batch_or_404(batch_id)))


class BatchCancelHandler(Base):
    route = "batch_cancel"

    async def post(self, batch_id: str) -> None:
        batch = self.batch_or_404(batch_id)
        if batch.status in ("failed", "completed", "expired"):
            raise ApiError(
                400, f"Cannot cancel a batch with status '{batch.status}'.", param="batch_id"
            )
        batch = await self.batches.cancel(batch_id)
        self.send(await self.batches.view(batch))


class NotFound(Base):
    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, f"Unknown route {self.request.method} {self.request.path}.")


def _log_request(handler: RequestHandler) -> None:
    route = getattr(handler, "route", "other")
    metrics.REQUESTS.labels(route, str(handler.get_status())).inc()


def make_app(store: Store, batches: Batches, keys: list[str]) -> Application:
    kw = {"store": store, "batches": batches, "keys": keys}
    routes = [
        (r"/v1/files", FilesHandler, kw),
        (r"/v1/files/([^/]+)", FileHandler, kw),
        (r"/v1/files/([^/]+)/content", FileContentHandler, kw),
        (r"/v1/batches", BatchesHandler, kw),
        (r"/v1/batches/([^/]+)", BatchHandler, kw),
        (r"/v1/batches/([^/]+)/cancel", BatchCancelHandler, kw),
    ]
    return Application(
        routes,
        default_handler_class=NotFound,
        default_handler_args=kw,
        log_function=_log_request,
        compress_response=False,
    )
