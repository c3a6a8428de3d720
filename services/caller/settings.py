"""Caller options: upstream, limits, retries. All are flags and GPT4BATCH_* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from gpt4batch.common.credentials import DEFAULT_CREDENTIALS, resolve_token
from gpt4batch.common.messages import UpstreamKind
from gpt4batch.common.retry import RetryPolicy
from gpt4batch.common.settings import BaseServiceSettings, CommaList
from gpt4batch.common.upstreams import Sampling, UpstreamConfig
from gpt4batch.common.upstreams.config import DEFAULT_GPT4API_BASE, MAX_ANSWER_BYTES
from gpt4batch.common.usage import Prices


class CallerSettings(BaseServiceSettings):
    upstream: UpstreamKind = Field("gpt4api", description="Upstream kind.")
    base_url: str | None = Field(
        None,
        description=f"Upstream base URL (default {DEFAULT_GPT4API_BASE}, unless only full "
        "URLs are given: the token goes only to the hosts configured).",
    )
    tier: Literal["standard", "concurrent"] = Field("standard", description="gpt4api tier.")
    chat_url: str | None = Field(None, description="Full chat URL (wins over base URL + tier).")
    gizmo_url: str | None = Field(None, description="Full gizmos URL (gpt4api).")
    upload_url: str | None = Field(None, description="Full upload URL (gpt4api).")
    access_token: SecretStr | None = Field(
        None,
        description="Upstream access token (on the command line other users see it: prefer "
        "--access-token-file or the environment variable).",
    )
    access_token_file: Path | None = Field(
        None,
        description="File holding the upstream access token (e.g. a mounted secret); re-read "
        "when the upstream refuses the token.",
    )
    credentials: Path = Field(
        DEFAULT_CREDENTIALS, description="Credentials file written by `gpt4batch auth`."
    )
    model: str | None = Field(None, description="Model (default: the upstream kind's usual).")
    gizmo_id: str | None = Field(None, description="GPTs gizmo id (gpt4api: uses /gizmos).")
    history_and_training_disabled: bool = Field(
        True, description="Ask the upstream not to keep history."
    )
    stream: bool = Field(False, description="OpenAI kind: stream answers (SSE).")
    temperature: float | None = Field(None, description="Sampling temperature (openai kinds).")
    top_p: float | None = Field(None, description="Nucleus sampling (openai kinds).")
    max_tokens: int | None = Field(None, description="Answer length limit (openai kinds).")
    concurrency: int = Field(60, ge=1, le=2500, description="Conversations in flight (-g).")
    qps: float = Field(1.0, ge=0, description="Upstream calls per second, all kinds (0: no limit).")
    tpm: int = Field(
        0,
        ge=0,
        description="Upstream tokens per minute, prompt + completion, all kinds (0: no limit): "
        "each call reserves an estimate, corrected from the usage the upstream reports; "
        "shared by the limit group like --qps.",
    )
    completion_tokens_estimate: int = Field(
        1000,
        ge=1,
        description="--tpm: tokens reserved for an answer whose call sets no max_tokens "
        "(corrected from the reported usage).",
    )
    tpm_window: float = Field(
        60.0,
        gt=0,
        description="Seconds --tpm is counted over (a minute, as OpenAI counts; shorter only "
        "to test against a simulator counting so).",
    )
    limit_scope: Literal["fleet", "process"] = Field(
        "fleet",
        description="fleet: --qps, --concurrency and --tpm are shared by every caller of the "
        "limit group (coordinated through nsqd); process: each caller has them all.",
    )
    pacing: Literal["grid", "window"] = Field(
        "grid",
        description="How one process spaces its calls (--limit-scope process and `run`): "
        "grid: one start every 1.01/q s, even; window: any start that keeps at most q in "
        "every 1 s, so q calls may go at once (about 1 s shorter per batch). A fleet always "
        "uses the grid.",
    )
    limit_group: str | None = Field(
        None,
        description="Callers sharing --qps/--concurrency/--tpm (default: the topic prefix).",
    )
    accounts: Path | None = Field(
        None,
        description="Accounts file (JSON or YAML): several upstream accounts, each with its "
        "own token, limits and prices; asks are spread over them, a conversation stays on one "
        "(docs/deployment.md). Without it: one account, the token of --access-token*.",
    )
    retries: int = Field(5, ge=0, description="Retries of a transient upstream failure.")
    retry_base_delay: float = Field(1.0, gt=0, description="First retry wait (s), doubling.")
    retry_max_delay: float = Field(60.0, gt=0, description="Longest retry wait (s).")
    conversation_deadline: float = Field(
        840.0,
        ge=0,
        description="Seconds one conversation may take, all its asks and retries included "
        "(0: no limit). Keep it below nsqd's --max-msg-timeout (nsqd's default 15m; compose "
        "and the stack use 30m): past that nsqd hands the ask to another caller while this "
        "one is still running it, and it is paid twice.",
    )
    connect_timeout: float = Field(10.0, gt=0, description="Upstream connect timeout (s).")
    read_timeout: float = Field(480.0, gt=0, description="Upstream chat read timeout (s).")
    max_answer_bytes: int = Field(
        MAX_ANSWER_BYTES,
        ge=1024,
        description="Largest upstream answer read, in bytes after decompression; a larger one "
        "fails its record (iErr 596) without being read further.",
    )
    http_transport: Literal["aiohttp", "httpx"] = Field(
        "aiohttp",
        description="HTTP engine under the httpx API: aiohttp (fast at high concurrency) or "
        "httpx's own.",
    )
    publish_patience: float = Field(
        600.0,
        ge=0,
        description="Seconds to keep retrying the publish of a paid-for result while nsqd "
        "is unreachable, before giving the ask back to NSQ.",
    )
    allowed_dirs: CommaList = Field(
        default_factory=list,
        description="Folders an ask's images/files may be uploaded from (repeatable; default "
        "none: no file is uploaded). Symlinks are resolved first; a path outside is refused.",
    )
    auth_retry_interval: float = Field(
        60.0,
        ge=0,
        description="After the upstream refuses the token (401/403): seconds between retries "
        "of it (the caller takes no asks meanwhile and /ready fails).",
    )
    feed: bool = Field(
        False,
        description="Publish every answered ask as {ask, answer, dir} to --feed-topic, like the "
        "original batchsvc -n (on by default only in `run -n`: a topic nobody reads keeps "
        "every answer and fills nsqd's disk, so turn it on only with a consumer).",
    )
    feed_topic: str = Field("gpt4api", description="Topic of the feed (the original's name).")
    feed_dir: str = Field("", description="The `dir` the feed names (the download folder).")
    enable_download: bool = Field(True, description="Publish download jobs for produced files.")
    download_prefix: str = Field("GPT4API", description="Prefix of downloaded file names.")
    input_usd_per_1m: float = Field(
        0.0,
        ge=0,
        description="Price of a million prompt (input) tokens, USD, for each output line's "
        "`usage.cost_usd` and the cost metrics (0, the default: prompt tokens cost 0).",
    )
    output_usd_per_1m: float = Field(
        0.0,
        ge=0,
        description="Price of a million completion (output) tokens, USD (0, the default: "
        "completion tokens cost 0).",
    )
    usd_per_call: float = Field(
        0.0,
        ge=0,
        description="Price of one answered call, USD, on top of the token prices (gpt4api.plus "
        "bills calls; 0, the default: calls cost 0).",
    )

    def upstream_config(self) -> UpstreamConfig:
        """The upstream configuration, with the token resolved (ConfigError if none)."""
        config = self.upstream_config_without_token()
        token = resolve_token(
            self.access_token.get_secret_value() if self.access_token else None,
            self.credentials,
            token_file=self.access_token_file,
        )
        return config.model_copy(update={"access_token": SecretStr(token)})

    def upstream_config_without_token(self) -> UpstreamConfig:
        """The upstream configuration, URLs checked; the token is the caller's to add."""
        config = UpstreamConfig(
            kind=self.upstream,
            base_url=self.base_url,
            tier=self.tier,
            chat_url=self.chat_url,
            gizmo_url=self.gizmo_url,
            upload_url=self.upload_url,
            model=self.model,
            gizmo_id=self.gizmo_id,
            history_and_training_disabled=self.history_and_training_disabled,
            stream=self.stream,
            sampling=Sampling(
                temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens
            ),
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_answer_bytes=self.max_answer_bytes,
        )
        config.check_urls()  # a bad URL is a usage error now, not a transient one later
        return config

    def prices(self) -> Prices:
        """What tokens and calls cost (all 0 unless configured)."""
        return Prices(self.input_usd_per_1m, self.output_usd_per_1m, self.usd_per_call)

    def secret_files(self) -> list[Path]:
        """Files holding the token: never uploaded, whatever an ask names."""
        files = [self.credentials]
        if self.access_token_file:
            files.append(self.access_token_file)
        return files

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.retries, self.retry_base_delay, self.retry_max_delay)
