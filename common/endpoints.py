"""The Batch API endpoints gpt4batch runs, and which upstream kinds serve which.

An OpenAI-compatible upstream (`caller --upstream openai`) serves all four: a
line's body goes to the same path on the upstream, passed through whole. The
gpt4api.plus and chatgpt-service kinds serve chat only, converted into their
own asks (a chat line must then end with a user message of text).
"""

from __future__ import annotations

from collections.abc import Iterable

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
#: Every endpoint a batch may name, in the order the docs list them.
ALL = (RESPONSES, CHAT, COMPLETIONS, EMBEDDINGS)

#: What each upstream kind serves.
SERVED_BY: dict[str, tuple[str, ...]] = {
    "openai": ALL,
    "gpt4api": (CHAT,),
    "chatgpt-service": (CHAT,),
}

#: The kinds that take a chat line converted into their own asks (no passthrough).
CONVERTING_KINDS = frozenset({"gpt4api", "chatgpt-service"})


def served_by(kind: str) -> tuple[str, ...]:
    """The endpoints an upstream of `kind` serves (none for an unknown kind)."""
    return SERVED_BY.get(kind, ())


def path_of(endpoint: str) -> str:
    """`/v1/embeddings` → `embeddings`: the path under an upstream's `/v1`, and the name
    its calls go by in limits and metrics."""
    return endpoint.removeprefix("/v1/")


def parse_endpoints(values: Iterable[str]) -> tuple[str, ...]:
    """Endpoints from an option (`/v1/embeddings`, or `embeddings`); ValueError naming an
    unknown one."""
    found: list[str] = []
    for value in values:
        endpoint = value if value.startswith("/") else f"/v1/{value}"
        if endpoint not in ALL:
            raise ValueError(f"unknown endpoint {value!r}; known: {', '.join(ALL)}")
        if endpoint not in found:
            found.append(endpoint)
    return tuple(found)
