"""/metrics listens on loopback unless asked; compose asks (Prometheus is another container)."""

from __future__ import annotations

import socket
import urllib.request

import yaml

from gpt4batch.common.metrics import serve_metrics
from gpt4batch.common.nsq_exporter import ExporterSettings
from gpt4batch.common.settings import BaseServiceSettings
from tests.deploy.test_compose import ROOT
from tests.support.nsq_servers import free_port


def test_services_and_the_exporter_bind_loopback_by_default() -> None:
    assert BaseServiceSettings().metrics_host == "127.0.0.1"
    assert ExporterSettings().metrics_host == "127.0.0.1"


def test_the_default_endpoint_is_not_reachable_on_other_addresses() -> None:
    port = free_port()
    serve_metrics(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
    # 127.0.0.2 is loopback too but another address: a 0.0.0.0 bind would answer there.
    with socket.socket() as sock:
        sock.settimeout(2)
        assert sock.connect_ex(("127.0.0.2", port)) != 0


def test_compose_sets_the_metrics_address_wherever_it_serves_metrics() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    serving = {
        n: s["environment"]
        for n, s in services.items()
        if "GPT4BATCH_METRICS_PORT" in s.get("environment", {})
    }
    assert serving
    for name, env in serving.items():
        assert env.get("GPT4BATCH_METRICS_HOST") == "0.0.0.0", name
