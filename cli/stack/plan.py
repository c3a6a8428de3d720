"""Turn the topology into concrete local processes: ports, folders, argv and env."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gpt4batch.cli.stack.procs import Proc, free_port
from gpt4batch.cli.stack.topology import NSQ_PROGRAMS, Component, components
from gpt4batch.common.authenticator import write_secret
from gpt4batch.common.settings import DEFAULT_MAX_MSG_SIZE

HOST = "127.0.0.1"
SIMULATOR_TOKEN = "sk-mock"


@dataclass
class StackOptions:
    workdir: Path
    callers: int = 1
    nsqd: int = 1
    with_simulator: bool = False
    with_prometheus: bool = False
    topic_prefix: str = "gpt4batch"
    max_msg_size: int = DEFAULT_MAX_MSG_SIZE
    max_msg_timeout: str = "30m"
    msg_timeout: str = "60s"
    scrape_interval: str = "2s"
    simulator_args: list[str] = field(default_factory=list)
    upstream: str | None = None
    base_url: str | None = None


@dataclass
class Addresses:
    lookupd_tcp: str
    lookupd_http: str
    nsqd: list[dict[str, str]]
    nsqadmin_http: str
    gateway: str
    simulator: str | None = None
    prometheus: str | None = None


def _bin(name: str) -> str:
    """NSQ binaries live next to the Python of the venv; others come from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise MissingProgram(name)
    return found


#: Where to get each program `stack` starts that pip does not install.
HOW_TO_GET = {
    "prometheus": "`make prometheus` (Debian's package) or https://prometheus.io/download/",
}
NSQ_HOW_TO_GET = (
    "`make setup` in a clone builds NSQ v1.3.0 into .venv/bin (needs Go), or put the NSQ "
    "v1.3.0 release's binaries (https://nsq.io/deployment/installing.html) on PATH"
)


class MissingProgram(FileNotFoundError):
    """A program `stack` needs is neither next to this Python nor on PATH."""

    def __init__(self, name: str) -> None:
        how = HOW_TO_GET.get(name, NSQ_HOW_TO_GET)
        super().__init__(f"{name} is not installed (only -n and the services need NSQ): {how}")


class Plan:
    """Every process of one stack, in start order, with the addresses they share."""

    def __init__(self, opts: StackOptions) -> None:
        self.opts = opts
        self.workdir = opts.workdir.resolve()
        self.logs = self.workdir / "logs"
        self.inbox = self.workdir / "inbox"
        self.processed = self.workdir / "processed"
        self.outbox = self.workdir / "outbox"
        self.downloads = self.workdir / "downloads"
        self.gateway_dir = self.workdir / "gateway"
        self.gateway_key_file = self.gateway_dir / "api-key"
        #: The services' shared bus secret (mode 600), made at the first `up`.
        self.bus_secret_file = self.workdir / "bus-secret"
        self.addresses = Addresses(
            lookupd_tcp=f"{HOST}:{free_port()}",
            lookupd_http=f"{HOST}:{free_port()}",
            nsqd=[
                {"tcp": f"{HOST}:{free_port()}", "http": f"{HOST}:{free_port()}"}
                for _ in range(opts.nsqd)
            ],
            nsqadmin_http=f"{HOST}:{free_port()}",
            gateway=f"http://{HOST}:{free_port()}/v1",
            simulator=f"http://{HOST}:{free_port()}" if opts.with_simulator else None,
            prometheus=f"{HOST}:{free_port()}" if opts.with_prometheus else None,
        )
        self.procs: list[Proc] = []
        for comp in components("stack"):
            if comp.optional == "simulator" and not opts.with_simulator:
                continue
            if comp.optional == "prometheus" and not opts.with_prometheus:
                continue
            self.procs += self._procs_of(comp)

    def folders(self) -> list[Path]:
        return [
            self.logs,
            self.inbox,
            self.processed,
            self.outbox,
            self.downloads,
            self.gateway_dir,
        ]

    def gateway_key(self) -> str:
        """The Batch API key: GPT4BATCH_API_KEYS if set, else one generated for this stack
        (kept in <workdir>/gateway/api-key, mode 600)."""
        given = os.environ.get("GPT4BATCH_API_KEYS")
        if given:
            return given
        if not self.gateway_key_file.exists():
            self.gateway_key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.gateway_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write("sk-" + secrets.token_urlsafe(24))
        return self.gateway_key_file.read_text().strip()

    # --- values -----------------------------------------------------------
    def env_value(self, name: str, proc_name: str) -> str | None:
        """The value of one topology variable for this stack (None: inherit)."""
        a, o = self.addresses, self.opts
        values: dict[str, str | None] = {
            "GPT4BATCH_LOOKUPD_HTTP_ADDRESS": a.lookupd_http,
            "GPT4BATCH_TOPIC_PREFIX": o.topic_prefix,
            "GPT4BATCH_LOG_FORMAT": "json",
            "GPT4BATCH_MAX_MSG_SIZE": str(o.max_msg_size),
            "GPT4BATCH_OUT_DIR": str(self.outbox),
            "GPT4BATCH_DOWNLOAD_DIR": str(self.downloads),
            "GPT4BATCH_INBOX": str(self.inbox),
            # Asks may come from other systems: upload only what the inbox files name.
            "GPT4BATCH_ALLOWED_DIRS": str(self.inbox),
            "GPT4BATCH_PROCESSED_DIR": str(self.processed),
            "GPT4BATCH_UPSTREAM": o.upstream or ("gpt4api" if a.simulator else None),
            "GPT4BATCH_BASE_URL": o.base_url or a.simulator,
            "GPT4BATCH_PORT": a.gateway.rsplit(":", 1)[1].split("/")[0],
            "GPT4BATCH_DATA_DIR": str(self.gateway_dir),
        }
        if name == "GPT4BATCH_API_KEYS":
            return self.gateway_key()
        if name == "GPT4BATCH_BUS_SECRET_FILE":
            return str(write_secret(self.bus_secret_file))
        if name not in values:
            raise KeyError(f"no stack value for {name} ({proc_name})")
        return values[name]

    def _env(self, comp: Component, name: str) -> tuple[dict[str, str], int | None]:
        env: dict[str, str] = {}
        port = free_port() if comp.metrics else None
        for var in comp.env:
            if var == "GPT4BATCH_METRICS_PORT":
                env[var] = str(port)
                continue
            value = self.env_value(var, name)
            if value is not None:
                env[var] = value
        if comp.metrics:
            env["GPT4BATCH_METRICS_HOST"] = HOST
        if comp.name == "gateway":
            env["GPT4BATCH_HOST"] = HOST
        if comp.name == "caller" and self.addresses.simulator:
            env["GPT4BATCH_ACCESS_TOKEN"] = SIMULATOR_TOKEN
        if comp.name == "downloader" and self.addresses.simulator:
            # The simulator serves its pictures from 127.0.0.1: allowed, by host:port only.
            env["GPT4BATCH_ALLOW_DOWNLOAD_HOST"] = self.addresses.simulator.split("://", 1)[1]
        return env, port

    # --- processes --------------------------------------------------------
    def _procs_of(self, comp: Component) -> list[Proc]:
        a, o = self.addresses, self.opts
        if comp.program in NSQ_PROGRAMS:
            return self._nsq_procs(comp)
        if comp.name == "mock-upstream":
            assert a.simulator
            sim_port = a.simulator.rsplit(":", 1)[1]
            argv = [*self._program(comp), "--host", HOST, "--port", sim_port, *o.simulator_args]
            return [Proc(comp.name, comp.name, argv, ready_url=f"{a.simulator}/stats")]
        if comp.name == "prometheus":
            argv = [
                _bin("prometheus"),
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                f"--web.listen-address={a.prometheus}",
            ]
            return [Proc(comp.name, comp.name, argv, ready_url=f"http://{a.prometheus}/-/ready")]
        count = o.callers if comp.scalable else 1
        procs = []
        for i in range(count):
            name = f"{comp.name}-{i + 1}" if comp.scalable else comp.name
            env, port = self._env(comp, name)
            ready = f"http://{HOST}:{port}/metrics" if port else None
            procs.append(Proc(name, comp.name, self._program(comp), env, ready, port))
        return procs

    def _program(self, comp: Component) -> list[str]:
        if comp.program == "gpt4batch":
            return [sys.executable, "-m", "gpt4batch.cli", *comp.args]
        if comp.program == "python":
            return [sys.executable, *comp.args]
        raise ValueError(f"cannot run {comp.program} locally")

    def _nsq_procs(self, comp: Component) -> list[Proc]:
        a, o = self.addresses, self.opts
        if comp.name == "nsqlookupd":
            argv = [
                _bin("nsqlookupd"),
                f"--tcp-address={a.lookupd_tcp}",
                f"--http-address={a.lookupd_http}",
                f"--broadcast-address={HOST}",
            ]
            return [Proc(comp.name, comp.name, argv, ready_url=f"http://{a.lookupd_http}/ping")]
        if comp.name == "nsqadmin":
            argv = [
                _bin("nsqadmin"),
                f"--lookupd-http-address={a.lookupd_http}",
                f"--http-address={a.nsqadmin_http}",
            ]
            return [Proc(comp.name, comp.name, argv, ready_url=f"http://{a.nsqadmin_http}/ping")]
        procs = []
        for i, node in enumerate(a.nsqd):
            name = "nsqd" if len(a.nsqd) == 1 else f"nsqd-{i + 1}"
            data = self.workdir / f"{name}-data"
            data.mkdir(parents=True, exist_ok=True)
            argv = [
                _bin("nsqd"),
                f"--tcp-address={node['tcp']}",
                f"--http-address={node['http']}",
                f"--lookupd-tcp-address={a.lookupd_tcp}",
                f"--broadcast-address={HOST}",
                f"--data-path={data}",
                f"--max-msg-size={o.max_msg_size}",
                f"--max-msg-timeout={o.max_msg_timeout}",
                f"--msg-timeout={o.msg_timeout}",
                # Every message through the disk queue: a kill -9 of nsqd loses at most
                # the last --sync-timeout (2 s) of arrivals, not the in-memory queue
                # (costs about 7% of end-to-end throughput, bench/pipeline_throughput.py).
                "--mem-queue-size=0",
            ]
            procs.append(Proc(name, comp.name, argv, ready_url=f"http://{node['http']}/ping"))
        return procs

    # --- prometheus -------------------------------------------------------
    def prometheus_config(self) -> dict[str, object]:
        """Scrape every metrics port, one job per component (as in deploy/prometheus)."""
        jobs: dict[str, list[str]] = {}
        for proc in self.procs:
            if proc.metrics_port:
                jobs.setdefault(proc.component, []).append(f"{HOST}:{proc.metrics_port}")
        return {
            "global": {
                "scrape_interval": self.opts.scrape_interval,
                "evaluation_interval": self.opts.scrape_interval,
            },
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in jobs.items()
            ],
        }

    def write_prometheus_config(self) -> Path:
        path = self.workdir / "prometheus.yml"
        path.write_text(json.dumps(self.prometheus_config(), indent=2))  # JSON is YAML
        return path
