"""Message contracts: the gpt4batch record format and every NSQ message body.

Records keep fields they do not know (``extra="allow"``) so an output line is
the input line plus ``answers``/``iErr``. NSQ bodies carry a schema version
``v`` and the ``batch`` id; a body of another version is rejected with a clear
error instead of being half-understood.

    base.py       the schema version, the round-trip base, the envelope of a body
    records.py    the record format (a line: asks, answers, iErr)
    received.py   a body that keeps its record as received
    asks.py       AskMessage and its overrides and endpoint request
    results.py    ResultMessage, its usage, ingest's rejects, ResultPart
    downloads.py  DownloadJob, DownloadResult
    batches.py    BatchManifest, BatchStopped and the iErr of a stopped batch
    letters.py    DeadLetter, FeedMessage

Import every name from here (`from gpt4batch.common.messages import AskMessage`).
"""

from __future__ import annotations

from pydantic import BaseModel

from gpt4batch.common.messages.asks import (
    AskMessage,
    AskOverrides,
    BatchEndpoint,
    EndpointRequest,
    UpstreamKind,
)
from gpt4batch.common.messages.base import SCHEMA_VERSION, UnsupportedVersion
from gpt4batch.common.messages.batches import (
    STOPPED_CODES,
    BatchManifest,
    BatchStopped,
    Finishers,
    StopReason,
    stopped_error,
)
from gpt4batch.common.messages.downloads import DownloadJob, DownloadResult
from gpt4batch.common.messages.letters import DeadLetter, FeedMessage
from gpt4batch.common.messages.records import (
    Ask,
    ChatResponse,
    IErr,
    PathList,
    Record,
    SpecDownload,
)
from gpt4batch.common.messages.results import (
    REJECT_CODE,
    Reject,
    ResultMessage,
    ResultPart,
    UsageLine,
    reject_message,
    rejected_line,
    result_json,
)

__all__ = [
    "MESSAGE_MODELS",
    "REJECT_CODE",
    "SCHEMA_VERSION",
    "STOPPED_CODES",
    "Ask",
    "AskMessage",
    "AskOverrides",
    "BatchEndpoint",
    "BatchManifest",
    "BatchStopped",
    "ChatResponse",
    "DeadLetter",
    "DownloadJob",
    "DownloadResult",
    "EndpointRequest",
    "FeedMessage",
    "Finishers",
    "IErr",
    "PathList",
    "Record",
    "Reject",
    "ResultMessage",
    "ResultPart",
    "SpecDownload",
    "StopReason",
    "UnsupportedVersion",
    "UpstreamKind",
    "UsageLine",
    "reject_message",
    "rejected_line",
    "result_json",
    "stopped_error",
]

MESSAGE_MODELS: tuple[type[BaseModel], ...] = (
    AskMessage,
    ResultMessage,
    ResultPart,
    DownloadJob,
    DownloadResult,
    BatchManifest,
    BatchStopped,
    DeadLetter,
    FeedMessage,
)
