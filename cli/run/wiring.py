"""`gpt4batch run`'s options turned into its parts' settings and its bus."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import SecretStr

from gpt4batch.cli.run.options import RunOptions
from gpt4batch.cli.run.preflight import check_download_dir
from gpt4batch.common.authenticator import from_config as authenticator_from_config
from gpt4batch.common.bus import Bus
from gpt4batch.common.credentials import DEFAULT_CREDENTIALS
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.settings import BaseServiceSettings, load
from gpt4batch.services.caller.limits import Limiter
from gpt4batch.services.caller.service import CallerService
from gpt4batch.services.caller.settings import CallerSettings

if TYPE_CHECKING:
    from gpt4batch.services.downloader.service import DownloaderService


def bus_settings(opts: RunOptions) -> BaseServiceSettings:
    return load(
        BaseServiceSettings,
        topic_prefix=opts.topic_prefix,
        nsqd_tcp_address=opts.nsqd_tcp_address,
        nsqd_http_address=opts.nsqd_http_address,
        lookupd_http_address=opts.lookupd_http_address,
        shutdown_grace=opts.grace,
        **{k: v for k, v in opts.extra.items() if k in BaseServiceSettings.model_fields},
    )


def caller_settings(opts: RunOptions, bus_settings: BaseServiceSettings) -> CallerSettings:
    model = opts.model or ("gpt-4-gizmo" if opts.upstream == "gpt4api" else None)
    values = dict(
        bus_settings.model_dump(),
        upstream=opts.upstream,
        base_url=opts.base_url,
        tier=opts.tier,
        chat_url=opts.chat_url,
        upload_url=opts.upload_url,
        credentials=opts.credentials or DEFAULT_CREDENTIALS,
        model=model,
        gizmo_id=opts.gizmo_id,
        history_and_training_disabled=opts.history_and_training_disabled,
        concurrency=opts.concurrency,
        qps=opts.qps,
        retries=opts.retries,
        read_timeout=opts.read_timeout,
        enable_download=opts.enable_download,
        download_prefix=opts.download_prefix,
        # Asks upload only files in the input's folder and --allowed-dirs (symlinks
        # resolved first).
        allowed_dirs=[str(Path(opts.input).resolve().parent), *opts.allowed_dirs],
        feed=opts.feed and opts.enable_nsq,  # the feed is an NSQ topic: only with -n
        feed_topic=opts.feed_topic,
        feed_dir=str(Path(opts.download_dir or Path(opts.input).parent).resolve()),
        # In-process (no -n) no message can time out, so no conversation deadline.
        conversation_deadline=CallerSettings.model_fields["conversation_deadline"].default
        if opts.enable_nsq
        else 0,
    )
    values.update(opts.extra)  # the generated flags (every other caller setting)
    if opts.access_token:
        values["access_token"] = SecretStr(opts.access_token)
    return load(CallerSettings, **values)


def upstream_hosts(settings: CallerSettings, caller: CallerService | None = None) -> list[str]:
    """`host:port` of each upstream URL the operator configured (none: the public default),
    the accounts' (`--accounts`) included."""
    found = []
    urls = [settings.base_url, settings.chat_url, settings.gizmo_url, settings.upload_url]
    if caller is not None and caller.pool is not None:
        urls += [account.spec.base_url for account in caller.pool.accounts]
    for url in urls:
        if url:
            parts = urlsplit(url)
            host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
            found.append(f"{host}:{parts.port or {'https': 443}.get(parts.scheme, 80)}")
    return found


def fleet_limiter(settings: CallerSettings) -> Limiter:
    """With -n, `--limit-scope fleet` (the default): -q and -g are shared with every caller
    of the limit group, as a caller service does; `process`: this run has them all."""
    from gpt4batch.services.caller.limits.fleet import build_limiter

    return build_limiter(settings)


def downloader(
    opts: RunOptions, download_dir: Path, settings: CallerSettings, caller: CallerService
) -> DownloaderService:
    """The downloader (-e): into `download_dir` (checked first), from the hosts allowed."""
    check_download_dir(download_dir)
    from gpt4batch.services.downloader.service import DownloaderService
    from gpt4batch.services.downloader.settings import DownloaderSettings

    # The upstream the operator configured may serve its own files (the simulator on
    # 127.0.0.1:PORT): its host:port is allowed, every other local address is not.
    from_env = load(DownloaderSettings, download_dir=str(download_dir))
    allowed = [*from_env.allow_download_host, *opts.allow_download_host]
    return DownloaderService(
        load(
            DownloaderSettings,
            download_dir=str(download_dir),
            allow_download_host=allowed + upstream_hosts(settings, caller),
        )
    )


def run_channel(batch: str) -> str:
    """The run's own channel on the results topics: one per batch, deleted when done."""
    return f"run-{hashlib.sha1(batch.encode()).hexdigest()[:12]}"


def make_bus(opts: RunOptions, settings: BaseServiceSettings) -> Bus:
    if opts.enable_nsq:
        from gpt4batch.common.nsq.bus import NsqBus  # pynsq and tornado only with -n

        # Only the run's own channels: a `sink` channel nobody reads would fill nsqd's disk.
        # Everything runs in this process: a secret of its own unless one is configured.
        secret = authenticator_from_config(settings.bus_secret_file, generate=True)
        return NsqBus(settings, service="run", prepare={}, authenticator=secret)
    # Bounded channels: ingest waits while the caller is busy (flat memory).
    capacity = max(1000, 4 * opts.concurrency)
    return MemoryBus(
        service="run",
        topics=settings.topics,
        channel_capacity=capacity,
        max_msg_size=settings.max_msg_size,  # the same limit as through NSQ
    )
