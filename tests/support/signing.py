"""The bus secret of the tests' services, and bodies signed with it (as one of ours would)."""

from __future__ import annotations

from gpt4batch.common.authenticator import Authenticator

#: The secret every test's services share (tests/conftest.py puts it in the environment).
TEST_BUS_SECRET = "test-bus-secret-0123456789abcdef"


def signed(topic: str, body: bytes) -> bytes:
    """`body` with the authenticator our services would give it on `topic`."""
    return Authenticator(TEST_BUS_SECRET.encode()).sign(topic, body)
