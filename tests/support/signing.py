"""The bus secret of the tests' (and benchmarks') services, and bodies signed with it."""

from __future__ import annotations

import os

from gpt4batch.common.authenticator import SECRET_ENV, Authenticator

#: The secret every test's services share (tests/conftest.py puts it in the environment).
TEST_BUS_SECRET = "test-bus-secret-0123456789abcdef"


def bus_secret() -> str:
    """The secret services started by the harness get: GPT4BATCH_BUS_SECRET if set, else the
    tests' own (so `python bench/….py` works without one)."""
    return os.environ.get(SECRET_ENV) or TEST_BUS_SECRET


def signed(topic: str, body: bytes) -> bytes:
    """`body` with the authenticator our services would give it on `topic`."""
    return Authenticator(bus_secret().encode()).sign(topic, body)
