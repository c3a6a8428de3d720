"""A batch's announcements: its manifest (topic `…batches`) and the gateway's stop notice
(topic `…stopped#ephemeral`), with the iErr of a record not run because its batch stopped."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from gpt4batch.common.errors import IErrCode
from gpt4batch.common.messages.base import Body
from gpt4batch.common.messages.records import IErr
from gpt4batch.common.messages.results import UsageLine


class Finishers:
    """Values of `BatchManifest.finisher`: who writes a batch's output."""

    FILE_SINK = "sink"  # `gpt4batch sink` (the default)
    GATEWAY = "gateway"  # the Batch API gateway, from its own ledger
    RUN = "run"  # `gpt4batch run`, beside its input


class BatchManifest(Body):
    """Announces a batch and how many records it holds (topic `…batches`).

    Optional for a stream of asks; with it the sink completes the batch once
    every seq below `total` has a line. `finisher` says who writes the batch: a file
    sink leaves a batch another owner finishes (the gateway, `run`) alone, but only
    when the manifest is signed by our services (the topic is open).
    """

    kind: ClassVar[str] = "BatchManifest"
    total: int = Field(ge=0)
    input: str | None = Field(
        default=None, description="Final location of the input file, if any (after any move)."
    )
    input_sha256: str | None = Field(default=None, description="sha256 of the input's bytes.")
    input_size: int | None = Field(default=None, ge=0, description="Size of the input in bytes.")
    status: Literal["published", "complete"] = "published"
    usage: UsageLine | None = Field(
        default=None,
        description="With status complete: the tokens and cost of the batch's calls, summed "
        "(`records`: how many results carried a usage).",
    )
    finisher: str = Field(
        default=Finishers.FILE_SINK,
        min_length=1,
        max_length=64,
        description="Who writes the batch's output: 'sink' (the file sink, the default "
        "for other producers and older messages), 'gateway' or 'run'. A file sink honours "
        "another name only on a manifest signed with the services' secret.",
    )


StopReason = Literal["cancelled", "expired"]


class BatchStopped(Body):
    """The gateway stopped a batch (topic `…stopped#ephemeral`; authenticated, so only our
    services can stop a batch): callers finish its asks without calling the upstream,
    each as a failed result (iErr 585 `batch_cancelled` / 586 `batch_expired`).

    Every caller hears it on a channel of its own. The gateway announces it again every
    few seconds while the batch still has asks without a result, so a caller that starts
    later (or missed one) learns it too.
    """

    kind: ClassVar[str] = "BatchStopped"
    reason: StopReason = Field(description="Why: the user cancelled it, or its window passed.")


_STOPPED_ERRORS: dict[str, IErr] = {
    "cancelled": IErr(
        code=int(IErrCode.BATCH_CANCELLED),
        message="This request was not executed: the batch was cancelled before it ran.",
    ),
    "expired": IErr(
        code=int(IErrCode.BATCH_EXPIRED),
        message="This request could not be executed before the completion window expired.",
    ),
}
#: iErr codes of records not run because their batch stopped.
STOPPED_CODES = frozenset(err.code for err in _STOPPED_ERRORS.values())


def stopped_error(reason: StopReason) -> IErr:
    """The iErr of a record not run because its batch stopped for `reason`."""
    return _STOPPED_ERRORS[reason]
