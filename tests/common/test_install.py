"""`pip install .` into a fresh environment with no Go gives a working `gpt4batch`.

The wheel is built from this tree and installed alone (`--no-deps`, no index) into a new
venv; its dependencies come from this test environment's site-packages through a .pth
file (the machine may have no package index). PATH holds only the new venv and /usr/bin:
no Go, no NSQ, not the repository.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_run import write_input
from tests.support.mock_upstream import MockUpstream

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin folder of a new venv holding only the gpt4batch wheel."""
    base = tmp_path_factory.mktemp("install")
    wheels = base / "wheels"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, ROOT],
        check=True,
        cwd=base,
        timeout=300,
    )
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    (wheel,) = wheels.glob("gpt4batch-*.whl")
    subprocess.run(
        [*pip, "--python", venv / "bin/python", "install", "-q", "--no-deps", "--no-index", wheel],
        check=True,
        cwd=base,
        timeout=300,
    )
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    (purelib / "deps-of-the-test-env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    yield venv / "bin"


def _env(bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPT4BATCH_", "PYTHON"))}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"  # no Go (/usr/local/go), no NSQ
    return env


def _gpt4batch(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [bin_dir / "gpt4batch", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(bin_dir),
        timeout=240,
    )


def test_the_installed_command_says_its_version(fresh: Path, tmp_path: Path) -> None:
    r = _gpt4batch(fresh, "--version", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "gpt4batch 0.1.0"
    where = subprocess.run(
        [fresh / "python", "-c", "import gpt4batch.cli as c, gpt4batch.examples as e; "
         "print(c.__file__); print(*e.__path__)"],
        capture_output=True, text=True, cwd=tmp_path, env=_env(fresh), check=True,
    )  # fmt: skip
    assert all(Path(p).is_relative_to(fresh.parent) for p in where.stdout.split()), where.stdout


def test_run_works_from_the_install_against_its_simulator(fresh: Path, tmp_path: Path) -> None:
    write_input(tmp_path, 3, asks=2)
    with MockUpstream("--seed", "3", python=str(fresh / "python")) as mock:
        r = _gpt4batch(
            fresh,
            *("run", "-i", "in.jsonl", "-o", "out.jsonl", "-q", "0"),
            *("--base-url", mock.url, "--access-token", mock.token),
            cwd=tmp_path,
        )
    assert r.returncode == 0, r.stderr[-2000:]
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 3


@pytest.mark.parametrize("on_path", [True, False])
def test_the_demo_runs_from_the_install_and_says_how_to_call_gpt4batch(
    fresh: Path, tmp_path: Path, on_path: bool
) -> None:
    env = _env(fresh)
    if not on_path:  # like `make demo`: the command is in .venv/bin only
        env["PATH"] = "/usr/bin:/bin"
    r = subprocess.run(
        [fresh / "gpt4batch", "demo", "--latency-ms", "0"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert len((tmp_path / "demo-run/out.jsonl").read_text().splitlines()) == 5
    if on_path:
        assert "Next: `gpt4batch run --help`" in r.stdout
        assert "not on your PATH" not in r.stdout
    else:
        assert f"Next: `{fresh / 'gpt4batch'} run --help`" in r.stdout
        assert "gpt4batch is not on your PATH" in r.stdout


def test_a_missing_nsq_program_is_one_line_saying_how_to_get_it(
    fresh: Path, tmp_path: Path
) -> None:
    r = _gpt4batch(fresh, "stack", "up", "--workdir", "stack", cwd=tmp_path)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "is not installed" in line and "make setup" in line and "nsq.io" in line
