"""What every route of the gateway does before and around its own work.

The key is checked as soon as the headers are in, before any of the body is
read (every handler streams its body); a body is then taken in bounded memory
(`bodies.py`). Errors have the API's shape `{"error": {"message", "type",
"param", "code"}}`: bad input is a 4xx, never a traceback. Files and batches
are looked up as the caller's (`tenants.py`): another key's are "not found".
"""

from __future__ import annotations

import json
from typing import Any

from tornado.web import HTTPError, RequestHandler, stream_request_body

from gpt4batch.services.gateway import metrics
from gpt4batch.services.gateway.batches import Batches
from gpt4batch.services.gateway.bodies import BadBody, SmallBody
from gpt4batch.services.gateway.store import BATCH_ID, FILE_ID, BatchRecord, FileRecord, Store
from gpt4batch.services.gateway.tenants import Tenant, Tenants
from gpt4batch.services.gateway.windows import MIN_FILE_EXPIRY, BadDuration, expires_after_seconds

#: The tenant label of requests that presented no valid key.
NO_TENANT = "-"


class ApiError(HTTPError):
    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(status)
        self.message, self.param, self.code = message, param, code


@stream_request_body
class Base(RequestHandler):
    route = "other"

    def initialize(
        self,
        store: Store,
        batches: Batches,
        tenants: Tenants,
        max_body: int,
        min_file_expiry: int = MIN_FILE_EXPIRY,
        **_: Any,
    ) -> None:
        self.store = store
        self.min_file_expiry = min_file_expiry
        self.batches = batches
        self.tenants = tenants
        self.max_body = max_body
        self.tenant: Tenant | None = None
        self._body: SmallBody | None = None
        self._body_error: BadBody | None = None

    def prepare(self) -> None:
        """Runs once the headers are in, before the body: the key first, then the body's
        size."""
        self.authenticate()
        self.check_length(self.max_body)
        self._body = SmallBody(self.max_body)

    def authenticate(self) -> None:
        self.tenant = self.tenants.find(self.request.headers.get("Authorization", ""))
        if self.tenant is None:
            metrics.REFUSED.labels("unauthorized").inc()
            raise ApiError(
                401,
                "Incorrect or missing API key. Send 'Authorization: Bearer <key>' with a key "
                "the gateway was started with (--api-key-file).",
                code="invalid_api_key",
            )

    @property
    def owner(self) -> str:
        assert self.tenant is not None, "prepare() checked the key"
        return self.tenant.owner

    @property
    def tenant_name(self) -> str:
        return self.tenant.name if self.tenant is not None else NO_TENANT

    def check_length(self, limit: int, why: str = "") -> None:
        """413 before reading a body whose declared length is over `limit`; `why`, a
        sentence the message ends with, says what the limit is made of."""
        declared = self.request.headers.get("Content-Length", "0")
        if not declared.isdigit():
            raise ApiError(400, "Content-Length is not a number.")
        if int(declared) > limit:
            metrics.REFUSED.labels("too_large").inc()
            raise ApiError(
                413,
                f"The request body is {declared} bytes, over the {limit}-byte limit of this "
                f"route.{why}",
                code="request_too_large",
            )

    def data_received(self, chunk: bytes) -> None:
        if self._finished or self._body_error is not None or self._body is None:
            return
        try:
            self._body.feed(chunk)
        except BadBody as exc:
            self._body_error, self._body = exc, None

    def body_bytes(self) -> bytes:
        if self._body_error is not None:
            raise ApiError(413, str(self._body_error), code="request_too_large")
        return self._body.data() if self._body is not None else b""

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.body_bytes() or b"{}")
        except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
            raise ApiError(400, "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return body

    def send(self, obj: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(obj))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, ApiError):
            message, param, code = exc.message, exc.param, exc.code
        else:
            message, param, code = self._reason or "error", None, None
        kind = "invalid_request_error" if status_code < 500 else "server_error"
        self.set_header("Content-Type", "application/json")
        body_read = getattr(self.request, "_body_future", None)
        if body_read is not None and not body_read.done():
            # Refused before its body was read: tornado closes the connection rather than
            # read the body, so the client must not reuse it.
            self.set_header("Connection", "close")
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        self.finish(json.dumps(body))

    def expires_after(self, name: str, policy: Any) -> int | None:
        """The seconds of an `expires_after`-shaped `policy` (None: not given), or a 400."""
        try:
            return expires_after_seconds(policy, name, self.min_file_expiry)
        except BadDuration as exc:
            raise ApiError(400, str(exc), param=name) from None

    def file_or_404(self, file_id: str) -> FileRecord:
        """The caller's file: another key's, a malformed id or none at all are alike."""
        record = self.store.get_file(file_id, self.owner) if FILE_ID.fullmatch(file_id) else None
        if record is None:
            shown = file_id if FILE_ID.fullmatch(file_id) else "(not a file id)"
            raise ApiError(404, f"No such File object: {shown}", param="id")
        return record

    def batch_or_404(self, batch_id: str) -> BatchRecord:
        found = BATCH_ID.fullmatch(batch_id)
        batch = self.store.get_batch(batch_id, self.owner) if found else None
        if batch is None:
            shown = batch_id if found else "(not a batch id)"
            raise ApiError(404, f"No batch found with id '{shown}'.", param="batch_id")
        return batch


def log_request(handler: RequestHandler) -> None:
    route = getattr(handler, "route", "other")
    name = getattr(handler, "tenant_name", NO_TENANT)
    metrics.REQUESTS.labels(route, str(handler.get_status()), name).inc()
