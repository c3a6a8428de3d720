"""`python -m gpt4batch.services.downloader` as a real process against a real nsqd."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gpt4batch.common.bus import Delivery
from gpt4batch.common.messages import DownloadJob, DownloadResult
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.settings import BaseServiceSettings
from tests.downloader.fileserver import serve_files
from tests.support.nsq_servers import Nsqd, wait_channel

PAYLOAD = os.urandom(200_000)


def test_downloader_process_fetches_and_reports(
    nsqd: Nsqd, topic_prefix: str, tmp_path: Path
) -> None:
    folder = tmp_path / "downloads"
    log = (tmp_path / "downloader.log").open("wb")
    with serve_files({"img.png": PAYLOAD}) as server:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpt4batch.services.downloader",
                "--nsqd-tcp-address",
                nsqd.tcp_address,
                "--topic-prefix",
                topic_prefix,
                "--download-dir",
                str(folder),
                "--log-format",
                "json",
                "--allow-download-host",  # the test's file server on 127.0.0.1
                server.url.split("://", 1)[1],
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            got: dict[str, DownloadResult] = {}

            async def scenario() -> None:
                settings = BaseServiceSettings(
                    nsqd_tcp_address=[nsqd.tcp_address], topic_prefix=topic_prefix
                )
                bus = NsqBus(settings, service="test")

                async def on_result(msg: DownloadResult, delivery: Delivery) -> None:
                    got[msg.local] = msg

                bus.subscribe(bus.topics.downloaded, "test", DownloadResult, on_result)
                await bus.start()
                await wait_channel(nsqd, bus.topics.downloaded, "test")
                await wait_channel(nsqd, bus.topics.downloads, "downloader")
                jobs = [
                    DownloadJob(
                        batch="b1",
                        record_id="r1",
                        ask_id="a1",
                        url=f"{server.url}/f/img.png?sig=s3cret",
                        local=local,
                    )
                    for local in ("GPT4API_r1_a1_0_img.png", "../escape.png")
                ]
                jobs.append(jobs[0].model_copy(update={"url": f"{server.url}/gone", "local": "g"}))
                await bus.publish_many(bus.topics.downloads, jobs)
                deadline = time.monotonic() + 30
                while len(got) < 3:
                    assert time.monotonic() < deadline, f"only {sorted(got)} arrived"
                    await asyncio.sleep(0.05)
                await bus.stop(grace=1)

            asyncio.run(asyncio.wait_for(scenario(), 60))
            ok = got["GPT4API_r1_a1_0_img.png"]
            assert ok.ok and ok.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
            assert (folder / ok.local).read_bytes() == PAYLOAD
            assert not got["../escape.png"].ok
            assert got["g"].ok is False and got["g"].error == "HTTP 404"
            assert sorted(p.name for p in folder.iterdir()) == [ok.local]
            assert sorted(p.name for p in tmp_path.iterdir()) == ["downloader.log", "downloads"]
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
            log.close()
    assert "s3cret" not in (tmp_path / "downloader.log").read_text()
