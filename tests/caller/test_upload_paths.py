"""The upload opens the file it checks: the open file's place and inode decide, not the
name checked earlier (a hard link to the credentials file, a name swapped after the check)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpt4batch.common.errors import FinalError, IErrCode
from gpt4batch.services.caller.paths import PathPolicy


@pytest.fixture
def layout(tmp_path: Path) -> tuple[PathPolicy, Path, Path]:
    allowed, home = tmp_path / "allowed", tmp_path / "home"
    allowed.mkdir()
    home.mkdir()
    credentials = home / "creds.json"
    credentials.write_text('{"access_token": "sk-secret"}')
    return PathPolicy.build([str(allowed)], [credentials]), allowed, credentials


def test_a_hard_link_to_the_credentials_file_is_refused_by_inode(
    layout: tuple[PathPolicy, Path, Path],
) -> None:
    policy, allowed, credentials = layout
    os.link(credentials, allowed / "notes.txt")
    assert "credentials file" in (policy.path_refusal("notes.txt", str(allowed)) or "")
    with pytest.raises(FinalError) as caught:
        policy.open_for_upload(str(allowed / "notes.txt"), 1000)
    assert caught.value.status == IErrCode.FORBIDDEN_PATH


def test_a_name_swapped_for_a_link_outside_after_the_check_is_refused_when_opened(
    layout: tuple[PathPolicy, Path, Path], tmp_path: Path
) -> None:
    policy, allowed, _ = layout
    target = allowed / "photo.txt"
    target.write_text("ok")
    assert policy.path_refusal("photo.txt", str(allowed)) is None  # the early check passes
    outside = tmp_path / "private.txt"
    outside.write_text("not for upload")
    target.unlink()
    target.symlink_to(outside)  # swapped before the upload opens it
    with pytest.raises(FinalError) as caught:
        policy.open_for_upload(str(target), 1000)
    assert "outside the allowed folders" in str(caught.value)


def test_an_ordinary_allowed_file_opens(layout: tuple[PathPolicy, Path, Path]) -> None:
    policy, allowed, _ = layout
    (allowed / "a.txt").write_text("hello")
    with policy.open_for_upload(str(allowed / "a.txt"), 1000) as fh:
        assert fh.read() == b"hello"
