"""Download names are safe, deterministic and never leave the folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpt4batch.common.filenames import (
    UnsafeName,
    download_name,
    filename_from_url,
    inside,
    safe_component,
    sibling,
)

URL = "https://files.oaiusercontent.com/file-x?se=2024&rscd=attachment%3B%20filename%3Dimage.webp&sig=s"


def test_name_comes_from_the_escaped_rscd_parameter() -> None:
    assert filename_from_url(URL) == "image.webp"
    name = download_name("GPT4API", "b", "id: 0", "pid: 1", 0, URL)
    assert name.startswith("GPT4API_id_0_pid_1_0_") and name.endswith("_image.webp")


def test_names_are_unique_per_batch_record_ask_and_index() -> None:
    """Ids that clean to the same text (`x/r6`, `y/r6`) still get different names."""
    keys = [
        (batch, record, ask, n)
        for batch in ("b1", "b2")
        for record in ("x/r6", "y/r6", "r6", "r 6")
        for ask in ("a/1", "b/1")
        for n in (0, 1)
    ]
    names = {download_name("GPT4API", *key, URL) for key in keys}
    assert len(names) == len(keys)
    assert download_name("GPT4API", "b1", "x/r6", "a", 0, URL) == download_name(
        "GPT4API", "b1", "x/r6", "a", 0, URL
    )  # a redelivered job lands on the same file


def test_name_falls_back_to_the_url_path() -> None:
    assert filename_from_url("http://h/files/report.pdf?x=1") == "report.pdf"


@pytest.mark.parametrize(
    "hostile",
    [
        "../../etc/passwd",
        "..",
        "/abs/path.png",
        "a\\b\\..\\c.txt",
        "x\x00y\x1b[31m.png",
        "...",
        ".hidden",
        "名字 with spaces.png",
        "a" * 500,
    ],
)
def test_hostile_names_become_one_safe_component(hostile: str, tmp_path: Path) -> None:
    url = "http://h/f?rscd=" + "attachment%3B%20filename%3D" + hostile.replace("%", "%25")
    name = download_name("P", "b", "r", "a", 3, url)
    assert "/" not in name and "\\" not in name and ".." not in name
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
    assert len(name) <= 200
    assert inside(tmp_path, name).parent == tmp_path.resolve()


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "", "x\x00", "/etc/passwd", "a\\b"])
def test_inside_refuses_unsafe_names(name: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeName):
        inside(tmp_path, name)


def test_safe_component_keeps_ordinary_names() -> None:
    assert safe_component("image-1.webp") == "image-1.webp"


def test_sibling_files_sit_beside_the_output() -> None:
    assert sibling(Path("/d/out.jsonl"), "rejects.jsonl") == Path("/d/out.rejects.jsonl")
    assert sibling(Path("/d/out"), "done") == Path("/d/out.done")
