"""Which addresses the downloader refuses, and how allowances are written."""

from __future__ import annotations

import ipaddress

import pytest

from gpt4batch.common.errors import ConfigError
from gpt4batch.common.settings import load
from gpt4batch.services.downloader.guard import Allowance, refused_kind
from gpt4batch.services.downloader.settings import DownloaderSettings


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata)"),  # NAT64 of 169.254.169.254
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("fe80::1", "link-local (cloud metadata)"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
    ],
)
def test_refused_kinds(address: str, kind: str | None) -> None:
    assert refused_kind(ipaddress.ip_address(address)) == kind


def test_allowances_by_host_port_and_range() -> None:
    allow = Allowance.parse(["Mock-Upstream:8765", "10.0.0.0/8", "[::1]:9000", "files.local"])
    assert allow.host_allowed("mock-upstream", 8765) and not allow.host_allowed("mock-upstream", 80)
    assert allow.host_allowed("files.local", 443)
    assert allow.address_allowed(ipaddress.ip_address("10.9.9.9"), 1)
    assert allow.address_allowed(ipaddress.ip_address("::1"), 9000)
    assert not allow.address_allowed(ipaddress.ip_address("127.0.0.1"), 8765)


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "host:99999", "bad host", "a/b"])
def test_a_bad_allowance_is_a_usage_error_naming_the_flag(entry: str) -> None:
    with pytest.raises(ConfigError, match="--allow-download-host"):
        load(DownloaderSettings, download_dir=".", allow_download_host=[entry])
