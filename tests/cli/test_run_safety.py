"""`gpt4batch run` uploads only from its input's folder and refuses bad URLs at start."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_run import run_cmd, upstream
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import read_jsonl

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "4") as server:
        yield server


def test_run_uploads_from_the_input_folder_only(mock: MockUpstream, tmp_path: Path) -> None:
    work = tmp_path / "batch"
    work.mkdir()
    shutil.copy(DATA / "1.jpeg", work / "1.jpeg")
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the upstream")
    (work / "link.txt").symlink_to(outside)
    records = [
        {"id": "in", "asks": [{"id": "a", "content": "c", "images": ["1.jpeg"]}]},
        {"id": "abs", "asks": [{"id": "a", "content": "c", "files": [str(outside)]}]},
        {"id": "link", "asks": [{"id": "a", "content": "c", "files": ["link.txt"]}]},
        {"id": "env", "asks": [{"id": "a", "content": "c", "files": ["/proc/self/environ"]}]},
    ]
    (work / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    before = mock.stats()["calls"].get("uploaded", 0)
    result = run_cmd(work, "-i", "in.jsonl", "-o", "out.jsonl", *upstream(mock))
    assert result.returncode == 1, result.stderr[-2000:]
    out = {r["id"]: r for r in read_jsonl(work / "out.jsonl")}
    assert out["in"]["iErr"] is None
    for rid in ("abs", "link", "env"):
        assert out[rid]["iErr"]["code"] in (422, 591), out[rid]
    for rid in ("abs", "link"):
        assert out[rid]["iErr"]["code"] == 591
    assert mock.stats()["calls"].get("uploaded", 0) - before == 1


def test_an_unknown_url_scheme_is_a_usage_error_not_a_transient_one(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": "r", "asks": [{"id": "a", "content": "c"}]}\n')
    (tmp_path / "token").write_text("t\n")
    result = run_cmd(
        tmp_path,
        "-i",
        "in.jsonl",
        "-o",
        "out.jsonl",
        "--base-url",
        "ftp://h",
        "--access-token-file",
        "token",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[1:] == [  # after the input/output line
        "gpt4batch run: error: --base-url: unsupported URL scheme 'ftp' in 'ftp://h' "
        "(use http:// or https://)"
    ]
    assert not (tmp_path / "out.jsonl").exists()


def test_run_n_gets_results_larger_than_one_message_in_pieces(
    mock: MockUpstream, tmp_path: Path, nsqd: Any, topic_prefix: str
) -> None:
    """With a 64 KiB message limit, a record of 100 asks (~200 KB of result) still gets
    its line, whole, through real nsqd."""
    asks = [{"id": f"a{k}", "content": f"ask {k} " + "x" * 500} for k in range(100)]
    records = [{"id": "big", "asks": asks}, {"id": "small", "asks": asks[:1]}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = run_cmd(
        tmp_path,
        "-i", "in.jsonl", "-o", "out.jsonl", "-n", "--nsqd-tcp-address", nsqd.tcp_address,
        "--topic-prefix", topic_prefix, *upstream(mock),
        env={"GPT4BATCH_MAX_MSG_SIZE": str(64 * 1024)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in out] == ["big", "small"]
    assert len(out[0]["answers"]) == 100 and out[0]["iErr"] is None
    assert len(json.dumps(out[0])) > 2 * 64 * 1024
    parts = [
        t for t in nsqd.stats()["topics"] if t["topic_name"] == f"{topic_prefix}.results.parts"
    ]
    assert parts and parts[0]["message_count"] >= 3


def test_allowed_dirs_adds_folders_to_upload_from(mock: MockUpstream, tmp_path: Path) -> None:
    """Issue 23: iErr 591 points to --allowed-dirs, so `run` takes it (repeatable)."""
    work, pictures = tmp_path / "batch", tmp_path / "pictures"
    work.mkdir()
    pictures.mkdir()
    shutil.copy(DATA / "1.jpeg", pictures / "1.jpeg")
    ask = {"id": "a", "content": "c", "images": [str(pictures / "1.jpeg")]}
    record = {"id": "p", "asks": [ask]}
    (work / "in.jsonl").write_text(json.dumps(record) + "\n")
    refused = run_cmd(work, "-i", "in.jsonl", "-o", "out.jsonl", *upstream(mock))
    assert refused.returncode == 1
    assert read_jsonl(work / "out.jsonl")[0]["iErr"]["code"] == 591
    allowed = run_cmd(
        work, "-i", "in.jsonl", "-o", "out2.jsonl", "--allowed-dirs", str(tmp_path / "other"),
        "--allowed-dirs", str(pictures), *upstream(mock),
    )  # fmt: skip
    assert allowed.returncode == 2, allowed.stderr[-2000:]  # "other" does not exist
    assert f"--allowed-dirs: {tmp_path / 'other'} does not exist" in allowed.stderr
    (tmp_path / "other").mkdir()
    allowed = run_cmd(
        work, "-i", "in.jsonl", "-o", "out2.jsonl", "--allowed-dirs", str(tmp_path / "other"),
        "--allowed-dirs", str(pictures), *upstream(mock),
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert read_jsonl(work / "out2.jsonl")[0]["iErr"] is None
