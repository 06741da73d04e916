"""The wheel that goes onto a device: the product, the dev kit and its data; no harness. Built
from a copy of the sources, installed non-editable into a fresh venv (what install-service
and pipx do), and its demo run from another directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support import assert_demo_timeline

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy: setuptools writes build/ and egg-info next to the sources.
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "daemon", src / "daemon",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(src)], check=True, capture_output=True, text=True, timeout=170)
    (built,) = out.glob("edgevoice-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_files(wheel: Path) -> list[str]:
    return zipfile.ZipFile(wheel).namelist()


def test_wheel_carries_no_harness(wheel_files: list[str]) -> None:
    packaged = [n for n in wheel_files if not n.startswith("edgevoice-")]  # not dist-info
    assert packaged and all(n.startswith("edgevoice/") for n in packaged), packaged
    harness = [n for n in packaged
               if any(p in ("bench", "soak", "tests") or p.startswith("test_") or p == "bench.py"
                      for p in Path(n).parts)]
    assert harness == []


def test_wheel_carries_the_product_the_dev_kit_and_all_data(wheel_files: list[str]) -> None:
    for name in ("edgevoice/cli.py", "edgevoice/daemon.py", "edgevoice/service/serve.py",
                 "edgevoice/link/protocol.py", "edgevoice/link/client.py",
                 "edgevoice/conversation/core.py", "edgevoice/wire/events.py",
                 "edgevoice/devkit/demo.py", "edgevoice/devkit/simulator/__init__.py",
                 "edgevoice/devkit/virtual.py", "edgevoice/data/earcon.wav",
                 "edgevoice/data/demo-script.toml", "edgevoice/data/demo-asound.conf"):
        assert name in wheel_files, name
    # Every bundled data file, also in subfolders (data/demo/*.wav is what the demo plays).
    data = ROOT / "daemon" / "edgevoice" / "data"
    bundled = {f"edgevoice/data/{p.relative_to(data).as_posix()}"
               for p in data.rglob("*") if p.is_file()}
    assert bundled and bundled <= set(wheel_files), sorted(bundled - set(wheel_files))


@pytest.mark.realtime
def test_the_installed_wheel_runs_the_demo_from_another_directory(wheel: Path,
                                                                   tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    # This interpreter's pip installs into the new venv: its cache holds the dependencies'
    # wheels (PyAudio's built one too), so nothing long is downloaded or compiled again.
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                           "install", "-q", "--disable-pip-version-check", str(wheel)],
                          capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEVOICE_CONFIG")}
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import edgevoice; print(edgevoice.__file__)"],
                           capture_output=True, text=True, cwd=elsewhere, env=env, timeout=30)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr  # not the checkout
    demo = subprocess.run([str(venv / "bin" / "edgevoice"), "demo", "--json", "--output",
                           "reply.wav"], capture_output=True, text=True, cwd=elsewhere, env=env,
                          timeout=150)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    # The whole story of the demo, from the product as installed (the only full demo run of
    # the suite: tests/e2e/test_demo.py runs it for what a config changes).
    assert_demo_timeline(demo.stdout, elsewhere / "reply.wav")
