"""Publishing to nsqd, acknowledged: one PUB/MPUB awaited until nsqd answers OK, and
windows (the bodies published to one topic within COALESCE_SECONDS go out as one MPUB,
each publisher awaiting that one acknowledgement)."""

from __future__ import annotations

import asyncio
from typing import Any

from nsq import protocol

from gpt4batch.common.errors import PublishError
from gpt4batch.common.nsq.patches import COALESCE_SECONDS, Writer

MPUB_MAX_MESSAGES = 1000
MPUB_MAX_BYTES = 4 * 1024 * 1024  # below nsqd's default --max-body-size (5 MiB)


class Publisher:
    """Publishes through one `Writer`; a publish returns once nsqd has acknowledged it."""

    def __init__(self, writer: Writer, publish_timeout: float) -> None:
        self.writer = writer
        self.publish_timeout = publish_timeout
        self._windows: dict[str, Window] = {}

    async def publish(self, topic: str, bodies: list[bytes]) -> None:
        if len(bodies) == 1:
            await self._windowed(topic, bodies[0])
            return
        await asyncio.gather(*(self.send("mpub", topic, chunk) for chunk in chunks(bodies)))

    async def _windowed(self, topic: str, body: bytes) -> None:
        """Publish one body in the topic's window: the bodies published within
        COALESCE_SECONDS go out as one MPUB (nsqd takes it whole or not at all), each caller
        awaiting that one acknowledgement."""
        window = self._windows.get(topic)
        if window is None or window.full(len(body)):
            window = self._windows[topic] = Window()
            loop = asyncio.get_running_loop()
            loop.call_later(COALESCE_SECONDS, self._flush_window, topic, window)
        window.add(body)
        await asyncio.shield(window.acked)

    def _flush_window(self, topic: str, window: Window) -> None:
        if self._windows.get(topic) is window:
            del self._windows[topic]
        bodies = window.bodies
        sending = (
            self.send("pub", topic, bodies[0])
            if len(bodies) == 1
            else self.send("mpub", topic, bodies)
        )
        task = asyncio.get_running_loop().create_task(sending)
        task.add_done_callback(window.settle)

    async def send(self, command: str, topic: str, payload: bytes | list[bytes]) -> None:
        """One PUB/MPUB, awaited until nsqd answers OK; retried while it cannot be sent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        while True:
            ack: asyncio.Future[bytes] = loop.create_future()

            def on_response(_conn: Any, data: Any, ack: asyncio.Future[bytes] = ack) -> None:
                if ack.done():
                    return
                if isinstance(data, protocol.Error):
                    ack.set_exception(PublishFailure(data))
                else:
                    ack.set_result(data)

            getattr(self.writer, command)(topic, payload, callback=on_response)
            remaining = deadline - loop.time()
            try:
                await asyncio.wait_for(ack, timeout=max(0.001, remaining))
                return
            except TimeoutError:
                raise PublishError(
                    f"nsqd did not acknowledge {command.upper()} to {topic} "
                    f"within {self.publish_timeout:.0f}s"
                ) from None
            except PublishFailure as exc:
                if not exc.transient or loop.time() > deadline:
                    raise PublishError(
                        f"nsqd refused {command.upper()} to {topic}: {exc.error}"
                    ) from None
                await asyncio.sleep(0.2)


class Window:
    """Bodies waiting for the same MPUB, and the future of its acknowledgement."""

    __slots__ = ("acked", "bodies", "size")

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.size = 0
        self.acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def full(self, more: int) -> bool:
        return len(self.bodies) >= MPUB_MAX_MESSAGES or self.size + more > MPUB_MAX_BYTES

    def add(self, body: bytes) -> None:
        self.bodies.append(body)
        self.size += len(body) + 4

    def settle(self, task: asyncio.Task[None]) -> None:
        error = PublishError("publish cancelled") if task.cancelled() else task.exception()
        if error is None:
            self.acked.set_result(None)
            return
        self.acked.set_exception(error)
        self.acked.exception()  # retrieved here: every waiter may have gone (cancelled)


class PublishFailure(Exception):
    def __init__(self, error: protocol.Error) -> None:
        super().__init__(str(error))
        self.error = error
        # Not sent, or the connection went away before the answer: worth retrying.
        self.transient = isinstance(error, protocol.SendError | protocol.ConnectionClosedError)


def chunks(bodies: list[bytes]) -> list[list[bytes]]:
    """`bodies` in MPUBs nsqd takes (at most MPUB_MAX_MESSAGES and MPUB_MAX_BYTES each)."""
    found: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for body in bodies:
        if current and (len(current) >= MPUB_MAX_MESSAGES or size + len(body) > MPUB_MAX_BYTES):
            found.append(current)
            current, size = [], 0
        current.append(body)
        size += len(body) + 4
    if current:
        found.append(current)
    return found
