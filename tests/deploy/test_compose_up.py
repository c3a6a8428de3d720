"""`docker compose up` for real: the compose.yaml stack on a Docker engine, end to end.

The images compose.yaml names are built here without Docker Hub (docs/deployment.md):
the project image from our Dockerfile with `--network none` and the host-made wheelhouse
as its only package source, and local stand-ins for python:3.11-slim, nsqio/nsq:v1.3.0
and prom/prometheus:v2.42.0 (deploy/standins/build.sh). Grafana has no package here, so
the stack runs without it; the dashboard's expressions are checked against the real
Prometheus of the stack instead. The compose implementation is Debian's docker-compose
(1.29); GPT4BATCH_COMPOSE="docker compose" runs the same test with compose v2.

Given the stack up with every health check passing, when a JSONL is dropped into the
inbox or asks are published to nsqd's published HTTP port, then their lines reach the
outbox (with the downloads); Prometheus scrapes every target and answers every dashboard
expression; a caller killed mid-batch is restarted by its restart policy and the batch
completes with every id once; and `down -v` leaves no container, network or volume.
Dockerd is started (and stopped afterwards) when none is running: `make docker-engine`
installs Debian's docker.io.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gpt4batch.common.filenames import sibling
from gpt4batch.services.sink.ledger import read_ledger
from tests.deploy.test_stack import (
    batch_api_round_trip,
    dashboard_expressions,
    output_lines,
    query,
    records,
)
from tests.support.nsq_servers import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = os.environ.get("GPT4BATCH_COMPOSE", "docker-compose").split()
WITHOUT = {"grafana"}  # no Grafana image can be built here
PORTS = (
    "NSQD_TCP",
    "NSQD_HTTP",
    "NSQLOOKUPD_HTTP",
    "NSQADMIN",
    "PROMETHEUS",
    "GRAFANA",
    "GATEWAY",
)
API_KEY = f"sk-test-{uuid.uuid4().hex}"
# A slow simulator and a small caller so that a batch of 40 takes long enough to kill
# the caller in the middle of it; some 5xx so that the retry panels have data.
TEST_ENV = {
    "GPT4BATCH_SIMULATOR_LATENCY_MS": "400",
    "GPT4BATCH_SIMULATOR_FAULT_5XX": "0.1",
    "GPT4BATCH_CONCURRENCY": "2",
    "GPT4BATCH_API_KEYS": API_KEY,
}

pytestmark = pytest.mark.timeout(480)
BUDGET = 600.0  # seconds for all of it, from starting dockerd to `down -v` (issue 14)
_deadline = [time.monotonic() + BUDGET]  # set again when the stack fixture starts


def remaining() -> float:
    left = _deadline[0] - time.monotonic()
    assert left > 0, f"the compose test ran over its {BUDGET:.0f} s budget"
    return left


def run(*argv: str, check: bool = True, timeout: float = 300) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@contextmanager
def docker_engine(log: Path) -> Iterator[None]:
    """Use the running dockerd, or start one for the test and stop it afterwards."""
    if docker_answers():
        yield
        return
    dockerd = shutil.which("dockerd")
    assert dockerd, "no dockerd: `make docker-engine` installs Debian's docker.io"
    with log.open("wb") as out:
        proc = subprocess.Popen([dockerd], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not docker_answers():
            assert proc.poll() is None, f"dockerd exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"dockerd not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def build_images() -> None:
    """The stand-ins, then the project image from the wheelhouse with no network."""
    run(str(ROOT / "deploy/standins/build.sh"), timeout=remaining())
    run("make", "-s", "-C", str(ROOT), "wheelhouse", timeout=remaining())
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    build = ["docker", "build", "-q", "--network", "none", "-t", "gpt4batch:latest", str(ROOT)]
    done = subprocess.run(build, capture_output=True, text=True, env=env, timeout=remaining())
    assert done.returncode == 0, done.stderr[-3000:]


class Stack:
    """One compose project in its own folder, with its own name and host ports."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = f"gpt4batch-ct-{uuid.uuid4().hex[:8]}"
        self.ports = {name: free_port() for name in PORTS}
        services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
        self.services = sorted(set(services) - WITHOUT)

    def prepare(self) -> None:
        """What a user does: the compose file, its config, then deploy/prepare.sh."""
        shutil.copy(ROOT / "compose.yaml", self.folder)
        for rel in ("deploy/prometheus/prometheus.yml", "deploy/no-token.json"):
            (self.folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / rel, self.folder / rel)
        run(str(ROOT / "deploy/prepare.sh"), str(self.folder))
        settings = {f"GPT4BATCH_{k}_PORT": str(v) for k, v in self.ports.items()} | TEST_ENV
        with (self.folder / ".env").open("a") as env:
            env.writelines(f"{k}={v}\n" for k, v in settings.items())

    def compose(self, *args: str, timeout: float = 300) -> str:
        argv = [*COMPOSE, "-p", self.name, "-f", str(self.folder / "compose.yaml"), *args]
        return run(*argv, timeout=timeout)

    def logs(self) -> str:
        try:
            return self.compose("logs", "--no-color", "--tail=30", timeout=60)[-12000:]
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            return f"(no logs: {exc})"

    def wait(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        timeout = min(timeout, remaining())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.logs()}")

    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        argv = ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.name}"]
        if service:
            argv += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = run(*argv).split()
        return json.loads(run("docker", "inspect", *ids)) if ids else []

    def health(self) -> dict[str, str]:
        return {
            c["Config"]["Labels"]["com.docker.compose.service"]: (
                c["State"].get("Health", {}).get("Status", "none")
            )
            for c in self.containers()
        }

    def all_healthy(self) -> bool:
        return self.health() == {s: "healthy" for s in self.services}

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.name}"
        return {
            kind: run("docker", *cmd, "--filter", label, "-q").split()
            for kind, cmd in (
                ("containers", ["ps", "-a"]),
                ("networks", ["network", "ls"]),
                ("volumes", ["volume", "ls"]),
            )
        }

    def url(self, port: str) -> str:
        return f"127.0.0.1:{self.ports[port]}"

    @property
    def data(self) -> Path:
        return self.folder / "data"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("compose")
    _deadline[0] = time.monotonic() + BUDGET
    with docker_engine(work / "dockerd.log"):
        build_images()
        stack = Stack(work / "project")
        stack.folder.mkdir()
        stack.prepare()
        try:
            stack.compose("up", "-d", "--no-build", *stack.services)
            try:
                stack.wait("every health check", stack.all_healthy, 180)
            except AssertionError as exc:
                raise AssertionError(f"health: {stack.health()}\n{exc}") from None
            yield stack
        finally:
            stack.compose("down", "-v", "--remove-orphans", timeout=180)


def publish(stack: Stack, topic: str, body: dict[str, Any]) -> None:
    url = f"http://{stack.url('NSQD_HTTP')}/pub"
    httpx.post(url, params={"topic": f"gpt4batch.{topic}"}, json=body).raise_for_status()


def publish_batch(stack: Stack, batch: str, n: int, draw_at: int | None = None) -> None:
    """Asks straight to nsqd's published HTTP port, as another system would."""
    for i, record in enumerate(records(n, draw_at)):
        publish(stack, "asks", {"v": 1, "batch": batch, "seq": i, "record": record})
    publish(stack, "batches", {"v": 1, "batch": batch, "total": n})


def completed(stack: Stack, batch: str, n: int) -> list[str]:
    outbox = stack.data / "outbox"
    stack.wait(f"{n} lines of {batch}", lambda: len(output_lines(outbox, batch)) >= n, 150)
    stack.wait(f"{batch} marked done", lambda: list(outbox.glob(f"{batch}*.done")), 60)
    return sorted(r["id"] for r in output_lines(outbox, batch))


def test_every_service_but_grafana_passes_its_health_check(stack: Stack) -> None:
    health = stack.health()
    assert stack.all_healthy(), health
    assert "mock-upstream" in health  # the simulator, from .env.example's profile
    assert "grafana" not in health


def test_gpt4batch_containers_run_as_a_user_who_owns_the_data(stack: Stack) -> None:
    owner = f"{stack.data.stat().st_uid}:{stack.data.stat().st_gid}"
    for c in stack.containers():
        if c["Config"]["Image"].startswith("gpt4batch"):
            ids = run("docker", "exec", c["Id"], "id", "-u").strip()
            assert ids != "0" and c["Config"]["User"] == owner, c["Name"]


@pytest.mark.redteam
def test_published_ports_listen_on_localhost_only(stack: Stack) -> None:
    bindings: dict[str, list[str]] = {}
    for c in stack.containers():
        ports = (c["NetworkSettings"]["Ports"] or {}).values()
        bindings[c["Name"]] = [b["HostIp"] for found in ports for b in found or []]
    assert any(bindings.values()), bindings
    assert {ip for ips in bindings.values() for ip in ips} == {"127.0.0.1"}, bindings


@pytest.mark.redteam
def test_a_forged_result_on_the_published_nsqd_port_is_refused(stack: Stack) -> None:
    record = {"id": "f0", "asks": [{"id": "a", "content": "x"}], "answers": [{"message_id": "m"}]}
    publish(stack, "batches", {"v": 1, "batch": "forged", "total": 1})
    publish(stack, "results", {"v": 1, "batch": "forged", "seq": 0, "record": record})
    [sink] = stack.containers("sink")

    def refused() -> bool:
        text = run("docker", "exec", sink["Id"], "python", "-c", SCRAPE)
        series = 'gpt4batch_refused_messages_total{service="sink",topic="gpt4batch.results"} '
        return any(line.startswith(series) for line in text.splitlines())

    stack.wait("the sink to refuse the forged result", refused, 60)
    assert not list((stack.data / "outbox").glob("forged*.done"))


SCRAPE = (
    "import urllib.request; "
    "print(urllib.request.urlopen('http://127.0.0.1:9100/metrics').read().decode())"
)


def test_a_jsonl_dropped_into_the_inbox_comes_out_with_its_downloads(stack: Stack) -> None:
    staging = stack.folder / "inboxed.jsonl.part"
    staging.write_text("".join(json.dumps(r) + "\n" for r in records(6, draw_at=2)))
    staging.rename(stack.data / "inbox/inboxed.jsonl")
    assert completed(stack, "inboxed", 6) == sorted(f"rec-{i}" for i in range(6))
    assert (stack.data / "processed/inboxed.jsonl").exists()
    stack.wait("the drawn image", lambda: list((stack.data / "downloads").iterdir()), 60)


def test_asks_published_to_the_published_nsqd_port_come_out(stack: Stack) -> None:
    publish_batch(stack, "published", 5)
    assert completed(stack, "published", 5) == sorted(f"rec-{i}" for i in range(5))


def test_a_caller_killed_mid_batch_restarts_and_the_batch_completes_once(stack: Stack) -> None:
    """`docker kill` counts as a manual stop, which no restart policy restarts, so the
    caller is killed the way a crash or the OOM killer does: SIGKILL to its process."""
    n = 40
    publish_batch(stack, "killed", n, draw_at=7)
    out = stack.data / "outbox/killed.jsonl"

    def results() -> int:  # the sink's ledger: records with a result so far
        return read_ledger(out).counts.done if sibling(out, "journal.jsonl").exists() else 0

    stack.wait("the batch under way", results, 90)
    (caller,) = stack.containers("caller")
    assert results() < n, "the batch finished before the kill"
    os.kill(caller["State"]["Pid"], signal.SIGKILL)

    def restarted() -> bool:
        (now,) = stack.containers("caller")
        return now["RestartCount"] >= 1 and now["State"]["Running"]

    stack.wait("the caller restarted by its policy", restarted, 60)
    assert completed(stack, "killed", n) == sorted(f"rec-{i}" for i in range(n))


def test_the_batch_api_gateway_answers_the_openai_sdk(stack: Stack) -> None:
    api_round_trip(stack)


def api_round_trip(stack: Stack) -> None:
    key_file = stack.folder / "api-key"
    key_file.write_text(API_KEY)
    logs = stack.folder / "logs"
    logs.mkdir(exist_ok=True)
    addresses = {"gateway": f"http://{stack.url('GATEWAY')}/v1", "gateway_api_key_file": key_file}
    try:
        batch_api_round_trip(
            {"addresses": addresses, "logs": logs, "outbox": stack.data / "outbox"}
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None


def test_prometheus_scrapes_every_target_and_answers_every_dashboard_expression(
    stack: Stack,
) -> None:
    prometheus = stack.url("PROMETHEUS")
    jobs = {
        j["job_name"]
        for j in yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())[
            "scrape_configs"
        ]
    }

    def all_up() -> bool:
        resp = httpx.get(f"http://{prometheus}/api/v1/targets", timeout=5).json()
        targets = resp["data"]["activeTargets"]
        return {t["labels"]["job"] for t in targets} == jobs and all(
            t["health"] == "up" for t in targets
        )

    stack.wait("every target up", all_up, 90)
    # Traffic of its own, so that the answer does not hang on the tests before it (run
    # alone it had nothing to show): asks with a download and some 5xx, a Batch API batch.
    publish_batch(stack, "scraped", 20, draw_at=3)
    assert completed(stack, "scraped", 20) == sorted(f"rec-{i}" for i in range(20))
    api_round_trip(stack)
    exprs = dashboard_expressions()

    def missing() -> list[str]:
        return [e for e in exprs if not query(prometheus, e)]

    try:
        stack.wait("every dashboard expression", lambda: not missing(), 90)
    except AssertionError as exc:
        raise AssertionError(f"no data for {missing()}: {exc}") from None


def test_down_leaves_no_container_network_or_volume(stack: Stack) -> None:
    assert all(stack.leftovers().values())  # a check that can fail: they exist now
    stack.compose("down", "-v", "--remove-orphans", timeout=180)
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
