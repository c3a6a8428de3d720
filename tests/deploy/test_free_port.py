"""The stack's port picker: a dozen ports are planned before any process binds one."""

from __future__ import annotations

import socket

from gpt4batch.cli.stack.procs import free_port


def test_no_port_is_handed_out_twice() -> None:
    """CI: two picks of one stack plan drew the same port; ingest died of "Address already
    in use" while another process answered its readiness URL. Among 3,000 picks from the
    ~22,000 ports below the ephemeral range, a random pick repeats almost surely."""
    picks = [free_port() for _ in range(3000)]
    assert len(set(picks)) == len(picks)


def test_a_listening_port_is_not_handed_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        assert taken not in {free_port() for _ in range(500)}
