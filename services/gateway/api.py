"""The HTTP side: the OpenAI `files` and `batches` endpoints the official SDK calls.

Every route needs `Authorization: Bearer <key>` with a configured key, checked
before the body is read, and sees only that key's files and batches
(http_base.py). Uploads stream to disk (bodies.py), a few at a time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tornado import iostream
from tornado.web import Application

from gpt4batch.common.endpoints import ALL as SUPPORTED_ENDPOINTS
from gpt4batch.common.logging import get_logger
from gpt4batch.services.gateway import metrics
from gpt4batch.services.gateway.batches import Batches
from gpt4batch.services.gateway.bodies import BadBody, MultipartUpload, multipart_boundary
from gpt4batch.services.gateway.http_base import ApiError, Base, log_request
from gpt4batch.services.gateway.partial import LineOffsets, PartialOutputHandler
from gpt4batch.services.gateway.settings import MAX_REQUESTS
from gpt4batch.services.gateway.store import FILE_ID, Store
from gpt4batch.services.gateway.tenants import Tenants
from gpt4batch.services.gateway.windows import MIN_FILE_EXPIRY, BadDuration, window_seconds

log = get_logger("gpt4batch.gateway")

MAX_PAGE = 100
CHUNK = 1 << 20
#: The API's limits on `metadata`: pairs, key and value lengths.
METADATA_PAIRS, METADATA_KEY, METADATA_VALUE = 16, 64, 512
#: Room over --max-upload-bytes for the multipart envelope.
ENVELOPE = 65536


class UploadSlots:
    """At most `limit` uploads received at once, over every key."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0

    def take(self) -> bool:
        if self.busy >= self.limit:
            return False
        self.busy += 1
        metrics.UPLOADS.set(self.busy)
        return True

    def give_back(self) -> None:
        self.busy -= 1
        metrics.UPLOADS.set(self.busy)


class FilesHandler(Base):
    route = "files"

    def initialize(  # type: ignore[override]
        self,
        uploads: UploadSlots,
        max_upload: int,
        max_requests: int,
        upload_timeout: float,
        min_file_expiry: int,
        **kw: Any,
    ) -> None:
        super().initialize(min_file_expiry=min_file_expiry, **kw)
        self.uploads = uploads
        self.max_upload = max_upload
        self.max_requests = max_requests
        self.upload_timeout = upload_timeout
        self.form: MultipartUpload | None = None
        self._slot = False

    def prepare(self) -> None:
        if self.request.method != "POST":
            return super().prepare()
        self.authenticate()
        self.check_length(
            self.max_upload + ENVELOPE,
            f" A file is at most {self.max_upload} bytes (--max-upload-bytes; the Batch API's "
            "limit is 200 MB).",
        )
        try:
            boundary = multipart_boundary(self.request.headers.get("Content-Type", ""))
        except BadBody as exc:
            raise ApiError(400, str(exc), param="file") from None
        if not self.uploads.take():
            metrics.REFUSED.labels("upload_cap").inc()
            raise ApiError(
                429,
                f"{self.uploads.limit} uploads are in progress; retry when one is done.",
                code="too_many_uploads",
            )
        self._slot = True
        connection = self.request.connection
        connection.set_max_body_size(self.max_upload + ENVELOPE)  # type: ignore[union-attr]
        connection.set_body_timeout(self.upload_timeout)  # type: ignore[union-attr]
        self.form = MultipartUpload(boundary, self.store.spool_path(), self.max_requests)

    def data_received(self, chunk: bytes) -> None:
        if self.form is None:
            return super().data_received(chunk)
        if self._finished or self._body_error is not None:
            return None
        try:
            self.form.feed(chunk)
        except BadBody as exc:
            self._body_error = exc
            self.form.discard()
        return None

    async def post(self) -> None:
        form = self.form
        assert form is not None
        try:
            if self._body_error is not None:
                raise self._body_error
            form.finish()
            purpose = form.fields.get("purpose")
            if purpose != "batch":
                raise ApiError(
                    400,
                    f"purpose {purpose!r} is not supported here; only 'batch'.",
                    param="purpose",
                )
            if not form.has_file:
                raise ApiError(400, "Missing the 'file' part (multipart/form-data).", param="file")
            if form.file_bytes > self.max_upload:
                raise ApiError(
                    413,
                    f"The file is over the {self.max_upload}-byte limit (--max-upload-bytes; "
                    "the Batch API's limit is 200 MB).",
                    code="request_too_large",
                )
            if form.lines.over:
                raise ApiError(
                    400,
                    f"The file has more than {self.max_requests} requests (non-blank lines); "
                    f"a batch input file holds at most {self.max_requests} "
                    "(--max-requests-per-file; the Batch API's limit is 50,000).",
                    param="file",
                    code="too_many_requests_in_file",
                )
            expires = self.expires_after("expires_after", form_policy(form.fields))
            await asyncio.to_thread(form.close)  # fsync off the loop
            record = self.store.add_file(
                str(form.filename), purpose, form.path, self.owner, expires
            )
        except BadBody as exc:
            raise ApiError(400, str(exc), param="file") from None
        finally:
            form.discard()  # nothing left behind unless add_file moved it into place
        metrics.BYTES.labels("uploaded").inc(record.bytes)
        log.info("file uploaded", file=record.id, bytes=record.bytes, tenant=self.tenant_name)
        self.send(record.api())

    def on_finish(self) -> None:
        self._release()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if self.form is not None and not self._finished:
            self.form.discard()  # the client went away mid-upload
        self._release()

    def _release(self) -> None:
        if self._slot:
            self._slot = False
            self.uploads.give_back()

    def get(self) -> None:
        purpose = self.get_query_argument("purpose", None)
        data = [f.api() for f in self.store.list_files(self.owner, purpose)]
        self.send({"object": "list", "data": data, "has_more": False})


class FileHandler(Base):
    route = "file"

    def get(self, file_id: str) -> None:
        self.send(self.file_or_404(file_id).api())

    def delete(self, file_id: str) -> None:
        self.file_or_404(file_id)
        self.store.delete_file(file_id, self.owner)
        log.info("file deleted", file=file_id, tenant=self.tenant_name)
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
        if not FILE_ID.fullmatch(file_id):
            raise ApiError(
                400,
                "input_file_id is not a file id ('file-' and 24 hex digits).",
                param="input_file_id",
            )
        endpoint = body.get("endpoint")
        if endpoint not in SUPPORTED_ENDPOINTS:
            raise ApiError(
                400,
                f"The endpoint {endpoint!r} is not supported; supported: "
                f"{', '.join(SUPPORTED_ENDPOINTS)}.",
                param="endpoint",
            )
        window = body.get("completion_window")
        try:
            window_seconds(window)
            assert isinstance(window, str)  # window_seconds refuses anything else
        except BadDuration as exc:
            raise ApiError(400, str(exc), param="completion_window") from None
        metadata = checked_metadata(body.get("metadata"))
        output_expiry = self.expires_after("output_expires_after", body.get("output_expires_after"))
        record = self.store.get_file(file_id, self.owner)
        if record is None:  # none, or another key's: the same answer
            raise ApiError(404, f"No such File object: {file_id}", param="input_file_id")
        if record.purpose != "batch":
            raise ApiError(
                400,
                f"The input file {file_id} was not uploaded with purpose 'batch'.",
                param="input_file_id",
            )
        batch = self.batches.create(
            file_id, endpoint, window, metadata, self.owner, output_expires_after=output_expiry
        )
        log.info("batch created", batch=batch.id, file=file_id, tenant=self.tenant_name)
        self.send(await self.batches.view(batch))

    async def get(self) -> None:
        after = self.get_query_argument("after", None)
        try:
            limit = int(self.get_query_argument("limit", "20"))
        except ValueError:
            raise ApiError(400, "limit must be an integer.", param="limit") from None
        limit = max(1, min(MAX_PAGE, limit))
        found, more = self.store.list_batches(self.owner, after, limit)
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
        cancelled = await self.batches.cancel(batch_id)
        assert cancelled is not None
        log.info("batch cancelled", batch=batch_id, tenant=self.tenant_name)
        self.send(await self.batches.view(cancelled))


class NotFound(Base):
    def prepare(self) -> None:
        self.authenticate()
        raise ApiError(404, f"Unknown route {self.request.method} {self.request.path[:200]}.")


def form_policy(fields: dict[str, str]) -> dict[str, str] | None:
    """`expires_after` as the SDK sends it in a multipart form (`expires_after[anchor]`,
    `expires_after[seconds]`), or None when absent."""
    policy = {
        key[len("expires_after[") : -1]: value
        for key, value in fields.items()
        if key.startswith("expires_after[") and key.endswith("]")
    }
    return policy or None


def checked_metadata(metadata: Any) -> dict[str, str] | None:
    """`metadata` within the API's limits, or a 400 saying which one it breaks."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > METADATA_PAIRS:
        raise ApiError(
            400, f"metadata must be an object of at most {METADATA_PAIRS} pairs.", param="metadata"
        )
    for key, value in metadata.items():
        if len(key) > METADATA_KEY:
            raise ApiError(
                400, f"metadata keys are at most {METADATA_KEY} characters.", param="metadata"
            )
        if not isinstance(value, str) or len(value) > METADATA_VALUE:
            raise ApiError(
                400,
                f"metadata values are strings of at most {METADATA_VALUE} characters.",
                param="metadata",
            )
    return metadata


def make_app(
    store: Store,
    batches: Batches,
    tenants: Tenants,
    *,
    max_body: int,
    max_upload: int,
    max_uploads: int,
    upload_timeout: float,
    min_file_expiry: int = MIN_FILE_EXPIRY,
    max_requests: int = MAX_REQUESTS,
) -> Application:
    kw = {
        "store": store,
        "batches": batches,
        "tenants": tenants,
        "max_body": max_body,
        "min_file_expiry": min_file_expiry,
    }
    files_kw = {
        **kw,
        "uploads": UploadSlots(max_uploads),
        "max_upload": max_upload,
        "max_requests": max_requests,
        "upload_timeout": upload_timeout,
    }
    partial_kw = {**kw, "offsets": LineOffsets()}
    routes = [
        (r"/v1/files", FilesHandler, files_kw),
        (r"/v1/files/([^/]+)", FileHandler, kw),
        (r"/v1/files/([^/]+)/content", FileContentHandler, kw),
        (r"/v1/batches", BatchesHandler, kw),
        (r"/v1/batches/([^/]+)", BatchHandler, kw),
        (r"/v1/batches/([^/]+)/cancel", BatchCancelHandler, kw),
        (r"/v1/batches/([^/]+)/partial_output", PartialOutputHandler, partial_kw),
    ]
    return Application(
        routes,
        default_handler_class=NotFound,
        default_handler_args=kw,
        log_function=log_request,
        compress_response=False,
    )
