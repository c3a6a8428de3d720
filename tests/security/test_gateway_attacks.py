"""Attacks on the Batch API gateway, replayed against a running gateway over real nsqd:
one key against another's files and batches, work and memory before the key, slow
clients, host paths in a gpt4batch line, hostile input (issue 18, "Gateway")."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.support.nsq_servers import free_port
from tests.support.pipeline import ServiceProcs, wait_for

ALICE, BOB = "sk-alice-0123456789abcdef", "sk-bob-fedcba9876543210"
MB = 1_000_000
#: What an attack may add to the gateway's peak memory (its own, not the test's).
RSS_BOUND = 50 * 1024 * 1024


class Gateway:
    """A gateway process with two named keys (alice, bob) from a key file."""

    def __init__(
        self, procs: ServiceProcs, tmp: Path, *flags: str, nofile: int | None = None
    ) -> None:
        self.procs = procs
        self.data_dir = tmp / "gw"
        self.port = free_port()
        keys = tmp / "keys"
        keys.write_text(f"# tenants\nalice: {ALICE}\nbob: {BOB}\n")
        keys.chmod(0o600)
        args = ["--port", str(self.port), "--data-dir", str(self.data_dir)]
        args += ["--api-key-file", str(keys), *flags]
        if nofile is None:
            self.proc = procs.start("gateway", "gateway", *args)
        else:  # a low open-files limit, as on a small host
            self.proc = self._start_limited(args, nofile)
        wait_for(self._answers, 30, "the gateway's API", procs.assert_alive)

    def _start_limited(self, args: list[str], nofile: int) -> subprocess.Popen[bytes]:
        cmd = ["prlimit", f"--nofile={nofile}:{nofile}", "--", *self.procs.command("gateway")]
        log = (self.procs.logs / "gateway.log").open("ab")
        proc = subprocess.Popen(
            [*cmd, *args], stdout=log, stderr=subprocess.STDOUT, env=self.procs.env
        )
        self.procs.procs["gateway"] = proc
        return proc

    def _answers(self) -> bool:
        try:
            httpx.get(self.url("/v1/batches"), timeout=2)
        except httpx.TransportError:
            return False
        return True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def client(self, key: str) -> OpenAI:
        return OpenAI(base_url=self.url("/v1"), api_key=key, max_retries=0, timeout=60)

    def rss(self) -> tuple[int, int]:
        """(resident, peak resident) bytes of the gateway process, from /proc."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
        return fields["VmRSS"], fields["VmHWM"]

    def log_text(self) -> str:
        return (self.procs.logs / "gateway.log").read_text(errors="replace")


def request_line(custom_id: str) -> dict[str, Any]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(lines: list[Any]) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def create(client: OpenAI, file_id: str, **extra: Any) -> Any:
    return client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", **extra
    )


def wait_status(client: OpenAI, batch_id: str, statuses: tuple[str, ...], procs: Any) -> Any:
    found: list[Any] = []

    def reached() -> bool:
        found[:] = [client.batches.retrieve(batch_id)]
        return found[0].status in statuses

    wait_for(reached, 60, f"batch {batch_id} to be {statuses}", procs.assert_alive)
    return found[0]


# --- isolation ---------------------------------------------------------------------------


def test_another_key_gets_404_for_my_files_and_batches_on_every_route(
    procs: ServiceProcs, tmp_path: Path
) -> None:
    gateway = Gateway(procs, tmp_path)
    alice, bob = gateway.client(ALICE), gateway.client(BOB)
    data = jsonl([request_line("a1")])
    file_id = alice.files.create(file=("mine.jsonl", data), purpose="batch").id
    batch_id = create(alice, file_id).id
    bobs_file = bob.files.create(file=("b.jsonl", data), purpose="batch").id

    assert [f.id for f in bob.files.list()] == [bobs_file]
    assert [b.id for b in bob.batches.list()] == []
    for attempt in (
        lambda: bob.files.retrieve(file_id),
        lambda: bob.files.content(file_id),
        lambda: bob.files.delete(file_id),
        lambda: bob.batches.retrieve(batch_id),
        lambda: bob.batches.cancel(batch_id),
        lambda: create(bob, file_id),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()

    # alice still has all of it, untouched
    assert alice.files.content(file_id).content == data
    assert alice.batches.retrieve(batch_id).status in ("validating", "in_progress")
    assert [f.id for f in alice.files.list()] == [file_id]
    assert [b.id for b in alice.batches.list()] == [batch_id]
    # the operator tells tenants apart by name; no key in logs, metrics or argv
    metrics = httpx.get(f"http://127.0.0.1:{procs.metrics_ports['gateway']}/metrics").text
    assert 'tenant="alice"' in metrics and 'tenant="bob"' in metrics
    cmdline = Path(f"/proc/{gateway.proc.pid}/cmdline").read_bytes().decode()
    for key in (ALICE, BOB):
        assert key not in metrics and key not in cmdline and key not in gateway.log_text()
    uploads = [e for e in procs.log_events("gateway") if e.get("event") == "file uploaded"]
    assert sorted(e["tenant"] for e in uploads) == ["alice", "bob"]


def test_another_key_gets_404_for_my_partial_output(procs: ServiceProcs, tmp_path: Path) -> None:
    gateway = Gateway(procs, tmp_path)
    alice, bob = gateway.client(ALICE), gateway.client(BOB)
    file_id = alice.files.create(file=("a.jsonl", jsonl([request_line("a1")])), purpose="batch").id
    batch_id = create(alice, file_id).id
    route = f"/batches/{batch_id}/partial_output"

    mine = alice.get(route, cast_to=httpx.Response)
    assert mine.status_code == 200 and mine.headers["X-Next-After"] == "0"
    made_up = "batch_" + "0" * 24
    with pytest.raises(openai.NotFoundError) as none:
        bob.get(f"/batches/{made_up}/partial_output", cast_to=httpx.Response)
    for attempt in (route, route + "?after=0&limit=10"):
        with pytest.raises(openai.NotFoundError) as info:
            bob.get(attempt, cast_to=httpx.Response)
        # the same answer as for a batch that does not exist: nothing tells them apart
        assert str(info.value.body).replace(batch_id, made_up) == str(none.value.body)
    with pytest.raises(openai.NotFoundError):
        alice.get(f"/batches/{file_id}/partial_output", cast_to=httpx.Response)
    no_key = httpx.get(gateway.url(f"/v1{route}"), timeout=10)
    assert no_key.status_code == 401


def test_a_key_on_the_command_line_is_warned_about(procs: ServiceProcs, tmp_path: Path) -> None:
    Gateway(procs, tmp_path, "--api-key", "sk-on-argv-123456")
    log = (procs.logs / "gateway.log").read_text()
    warnings = [line for line in log.splitlines() if "warning: --api-key " in line]
    assert len(warnings) == 1 and "--api-key-file" in warnings[0], log[-2000:]
    assert "sk-on-argv-123456" not in log


# --- no work before the key ---------------------------------------------------------------


def post_unread(
    gateway: Gateway, path: str, size: int, key: str | None = None
) -> tuple[bytes, int]:
    """A `size`-byte POST pushed as fast as the gateway takes it, its answer read meanwhile.
    Returns (the answer's first bytes, body bytes the gateway took before hanging up)."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
    head += "Content-Type: multipart/form-data; boundary=xyz\r\n"
    if key:
        head += f"Authorization: Bearer {key}\r\n"
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=120)
    answer: list[bytes] = []

    def read_answer() -> None:
        try:
            answer.append(sock.recv(200))
        except OSError:
            answer.append(b"")

    reader = threading.Thread(target=read_answer)
    reader.start()
    sent = 0
    try:
        sock.sendall(head.encode() + b"\r\n")
        chunk = b"[" * (1 << 20)
        while sent < size:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    reader.join(120)
    sock.close()
    return answer[0], sent


def test_a_150_mb_post_without_a_key_is_refused_before_its_body(
    procs: ServiceProcs, tmp_path: Path
) -> None:
    gateway = Gateway(procs, tmp_path)
    before, _ = gateway.rss()
    answers: list[tuple[bytes, int]] = []

    def attack(path: str) -> None:
        answers.append(post_unread(gateway, path, 150 * MB))

    threads = [threading.Thread(target=attack, args=(p,)) for p in ["/v1/files"] * 4]
    threads.append(threading.Thread(target=attack, args=("/v1/batches",)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    _, peak = gateway.rss()
    print(f"gateway RSS before {before / MB:.0f} MB, peak after 5 x 150 MB {peak / MB:.0f} MB")
    assert peak - before < RSS_BOUND, (before, peak)
    assert len(answers) == 5
    for answer, sent in answers:
        assert answer.startswith(b"HTTP/1.1 401"), answer
        assert sent < 150 * MB, "the gateway hung up instead of taking the body"
    assert not list((gateway.data_dir / "files").iterdir())


def test_an_authorised_150_mb_upload_streams_to_disk(procs: ServiceProcs, tmp_path: Path) -> None:
    gateway = Gateway(procs, tmp_path)
    source = tmp_path / "big.jsonl"
    request = request_line("x" * 40)
    request["body"]["messages"][0]["content"] = "hi " * 1100  # 150 MB in < 50,000 requests
    line = json.dumps(request).encode() + b"\n"
    with source.open("wb") as out:
        for _ in range(150 * MB // len(line) + 1):
            out.write(line)
    before, _ = gateway.rss()

    with source.open("rb") as fh:
        uploaded = gateway.client(ALICE).files.create(file=fh, purpose="batch")

    now, peak = gateway.rss()
    print(
        f"gateway RSS before {before / MB:.0f} MB, peak during a {source.stat().st_size / MB:.0f}"
        f" MB upload {peak / MB:.0f} MB, after {now / MB:.0f} MB"
    )
    assert peak - before < RSS_BOUND, (before, peak)
    assert uploaded.bytes == source.stat().st_size
    stored = gateway.data_dir / "files" / uploaded.id
    assert stored.stat().st_size == source.stat().st_size
    with stored.open("rb") as a, source.open("rb") as b:
        assert a.read(1 << 20) == b.read(1 << 20)


def test_uploads_over_the_cap_get_429_and_bodies_over_the_limit_413(
    procs: ServiceProcs, tmp_path: Path
) -> None:
    gateway = Gateway(procs, tmp_path, "--max-concurrent-uploads", "1")
    alice = gateway.client(ALICE)
    # one upload in progress, its body trickling
    hold = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
    hold.sendall(
        b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n"
        + f"Authorization: Bearer {BOB}\r\n\r\n".encode()
        + b"--xyz\r\n"
    )
    time.sleep(0.5)
    with pytest.raises(openai.RateLimitError) as info:
        alice.files.create(file=("a.jsonl", jsonl([request_line("a")])), purpose="batch")
    assert info.value.body["code"] == "too_many_uploads"
    hold.close()

    def uploads() -> bool:
        try:
            alice.files.create(file=("a.jsonl", jsonl([request_line("a")])), purpose="batch")
        except openai.RateLimitError:
            return False
        return True

    wait_for(uploads, 30, "the upload slot back", procs.assert_alive)
    # a 2 MiB JSON body on a 1 MiB route: refused by its length, in the API's shape
    big = {"input_file_id": "file-" + "0" * 24, "metadata": {"k": "v" * (2 << 20)}}
    answer = httpx.post(
        gateway.url("/v1/batches"), json=big, headers={"Authorization": f"Bearer {ALICE}"}
    )
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "request_too_large"


# --- slow clients ---------------------------------------------------------------------------


def test_half_sent_requests_do_not_starve_the_gateway(procs: ServiceProcs, tmp_path: Path) -> None:
    gateway = Gateway(procs, tmp_path, "--header-timeout", "3", nofile=256)
    slow = []
    for _ in range(300):  # more than the gateway has file descriptors
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        sock.sendall(b"GET /v1/batches HTTP/1.1\r\nHost: x\r\n")  # never ends
        slow.append(sock)
    alice = gateway.client(ALICE)

    def served() -> bool:
        try:
            alice.batches.list()
        except openai.APIConnectionError:
            return False
        return True

    wait_for(served, 60, "an honest request served beside 300 slow ones", procs.assert_alive)
    # the slow ones were hung up on at the header timeout
    closed = 0
    for sock in slow[:50]:
        sock.settimeout(30)
        try:
            closed += sock.recv(100) == b""
        except OSError:
            closed += 1
        sock.close()
    for sock in slow[50:]:
        sock.close()
    assert closed == 50
    lines = gateway.log_text().splitlines()
    assert len(lines) < 100 and "Traceback" not in gateway.log_text(), lines[-5:]


ACCEPT_SERVER = textwrap.dedent(
    """
    import asyncio, resource, sys
    from tornado.web import Application, RequestHandler
    from gpt4batch.common.logging import configure
    from gpt4batch.common.service import HttpServer
    from gpt4batch.services.gateway.listener import GuardedHTTPServer

    class Hello(RequestHandler):
        def get(self):
            self.write("hello")

    async def main():
        configure("json", "info", service="gateway")
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        server = HttpServer(Application([("/", Hello)]), int(sys.argv[1]), "127.0.0.1",
                            server_class=GuardedHTTPServer, max_connections=100000)
        await server.start()
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def test_out_of_descriptors_the_gateway_pauses_accepting_and_logs_rarely(
    tmp_path: Path,
) -> None:
    """The listener itself, its connection cap set past the open-files limit: accepting
    fails with EMFILE, which must neither spin nor log a traceback per attempt."""
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-c", ACCEPT_SERVER, str(port)], stdout=out, stderr=out
        )
    try:
        wait_for(lambda: _get(port) == b"hello", 30, "the listener")
        held = []
        for _ in range(150):  # past 64 descriptors; the rest wait in the listen backlog
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        assert len(held) > 64
        time.sleep(3)  # a hot loop would log tens of thousands of lines by now
        text = log.read_text(errors="replace")
        for sock in held:
            sock.close()
        wait_for(lambda: _get(port) == b"hello", 30, "accepting again after the flood")
    finally:
        server.terminate()
        server.wait(10)
    failures = [line for line in text.splitlines() if "accept failed" in line]
    # out of descriptors, each accept fails again: a retry per event would log thousands
    assert 1 <= len(failures) <= 3, text[-2000:]
    assert "Traceback" not in text


def _get(port: int) -> bytes:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).content
    except httpx.TransportError:
        return b""


# --- host paths -------------------------------------------------------------------------------


def test_a_gpt4batch_line_names_only_my_own_uploads_never_host_paths(
    procs: ServiceProcs, tmp_path: Path
) -> None:
    gateway = Gateway(procs, tmp_path)
    alice, bob = gateway.client(ALICE), gateway.client(BOB)
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    bobs = bob.files.create(file=("p.png", b"\x89PNG"), purpose="batch").id
    mine = alice.files.create(file=("p.png", b"\x89PNG"), purpose="batch").id
    refs = [str(secret), "/root/.ssh/id_rsa", "/etc/hostname", "../keys", bobs]
    records = [
        {"id": f"r{i}", "asks": [{"id": "1", "content": "x", "files": [ref]}]}
        for i, ref in enumerate(refs)
    ]
    batch = create(alice, alice.files.create(file=("in.jsonl", jsonl(records)), purpose="batch").id)
    failed = wait_status(alice, batch.id, ("failed",), procs)

    errors = failed.errors.data
    assert [e.line for e in errors] == [1, 2, 3, 4, 5]
    assert len({e.message for e in errors}) == 1, "existing and missing paths look alike"
    shown = json.dumps([e.model_dump() for e in errors])
    assert str(tmp_path) not in shown and "id_rsa" not in shown and "/etc" not in shown
    ok = [{"id": "ok", "asks": [{"id": "1", "content": "x", "images": [mine]}]}]
    batch = create(alice, alice.files.create(file=("ok.jsonl", jsonl(ok)), purpose="batch").id)
    assert wait_status(alice, batch.id, ("in_progress",), procs).request_counts.total == 1


# --- hostile input ------------------------------------------------------------------------------


def test_bad_input_is_a_400_in_the_api_shape_never_a_500(
    procs: ServiceProcs, tmp_path: Path
) -> None:
    gateway = Gateway(procs, tmp_path)
    alice = gateway.client(ALICE)
    auth = {"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json"}
    nested = b"[" * 200_000 + b"]" * 200_000
    answer = httpx.post(gateway.url("/v1/batches"), content=nested, headers=auth)
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"

    file_id = alice.files.create(file=("in.jsonl", jsonl([request_line("a")])), purpose="batch").id
    for metadata in (
        {f"k{i}": "v" for i in range(17)},
        {"k" * 65: "v"},
        {"k": "v" * 513},
        {"k": 1},
    ):
        with pytest.raises(openai.BadRequestError) as info:
            create(alice, file_id, metadata=metadata)
        assert info.value.body["param"] == "metadata"
    assert create(alice, file_id, metadata={"k" * 64: "v" * 512}).metadata
    with pytest.raises(openai.BadRequestError) as info:
        create(alice, "../../../etc/passwd")
    assert info.value.body["param"] == "input_file_id" and "etc" not in info.value.message
    for bad in ("file-../../x", "file-" + "Z" * 24, "x" * 5000):
        with pytest.raises(openai.NotFoundError):
            alice.files.retrieve(bad)
        with pytest.raises(openai.NotFoundError):
            alice.batches.retrieve(bad)
    assert "Traceback" not in gateway.log_text()


def test_the_gateway_listens_on_loopback_unless_told(procs: ServiceProcs, tmp_path: Path) -> None:
    gateway = Gateway(procs, tmp_path)
    listening = [e for e in procs.log_events("gateway") if e.get("event") == "listening"]
    assert listening[0]["url"] == f"http://127.0.0.1:{gateway.port}"
    port_hex = f"{gateway.port:04X}"
    inodes = {
        os.readlink(f"/proc/{gateway.proc.pid}/fd/{fd}")
        for fd in os.listdir(f"/proc/{gateway.proc.pid}/fd")
    }
    bound = []
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = row.split()
        if cols[1].endswith(":" + port_hex) and cols[3] == "0A" and f"socket:[{cols[9]}]" in inodes:
            bound.append(cols[1].split(":")[0])
    assert bound == ["0100007F"], bound  # 127.0.0.1, not 0.0.0.0
