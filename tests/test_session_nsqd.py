"""The session's nsqd stays small: a test's topics are deleted after it (tests/conftest.py)."""

from __future__ import annotations

import httpx

from tests.support.nsq_servers import Nsqd


def _topics(nsqd: Nsqd) -> set[str]:
    return {t["topic_name"] for t in nsqd.stats().get("topics") or []}


def test_delete_topics_takes_the_prefix_s_topics_only(nsqd: Nsqd, topic_prefix: str) -> None:
    other = f"{topic_prefix[:-1]}x-other"  # shares all but the prefix's last character
    for name in (f"{topic_prefix}.asks", f"{topic_prefix}.results", other):
        httpx.post(
            f"http://{nsqd.http_address}/topic/create", params={"topic": name}
        ).raise_for_status()
    deleted = nsqd.delete_topics(topic_prefix)
    assert set(deleted) == {f"{topic_prefix}.asks", f"{topic_prefix}.results"}
    left = _topics(nsqd)
    assert other in left
    assert not any(name.startswith(topic_prefix) for name in left)
    nsqd.delete_topics(other)
