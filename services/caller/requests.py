"""A Batch API request in an ask (`AskMessage.request`): sent whole, converted, or refused.

An OpenAI-style upstream gets the body as it is, at the same path (the runner's
`send_whole`). A chat-only kind (gpt4api.plus, chatgpt-service) gets a chat
request as one ask after its history (common/chat_request.py), and any other
endpoint is answered with an error result, never a call.
"""

from __future__ import annotations

from gpt4batch.common.chat_request import BadRequestLine, chat_ask
from gpt4batch.common.endpoints import EMBEDDINGS, served_by
from gpt4batch.common.errors import IErrCode
from gpt4batch.common.messages import AskMessage, EndpointRequest, IErr
from gpt4batch.common.tokens import estimate_completion_tokens, estimate_prompt_tokens


def prepared(msg: AskMessage, kind: str) -> AskMessage | IErr:
    """`msg` as an upstream of `kind` runs it: as it is (its request sent whole), as a
    conversation (a chat request for a chat-only kind), or the error that stops it."""
    request = msg.request
    if request is None or kind == "openai":
        return msg
    if request.endpoint not in served_by(kind):
        return IErr(
            code=int(IErrCode.UNSUPPORTED_ENDPOINT),
            message=f"the {kind} upstream does not serve {request.endpoint} (it serves "
            f"{', '.join(served_by(kind)) or 'nothing'}); no call was made",
        )
    try:  # a chat request (the one endpoint the other kinds serve)
        chat = chat_ask(request.body)
    except BadRequestLine as bad:
        where = f" ({bad.param})" if bad.param else ""
        return IErr(
            code=int(IErrCode.UNSUPPORTED_ENDPOINT),
            message=f"the {kind} upstream cannot take this chat request{where}: {bad.message}",
        )
    record = msg.record.model_copy(update={"asks": [chat.ask]})
    return msg.model_copy(
        update={
            "record": record,
            "history": chat.history or None,
            "overrides": chat.overrides,
            "request": None,
        }
    )


def request_estimate(request: EndpointRequest, completion_default: int) -> tuple[int, int, int]:
    """(prompt, completion, calls) a request sent whole is expected to take."""
    body = request.body
    if request.endpoint == EMBEDDINGS:  # no answer tokens
        return estimate_prompt_tokens(body), 0, 1
    return estimate_prompt_tokens(body), estimate_completion_tokens(body, completion_default), 1
