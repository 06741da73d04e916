"""The wheel that goes onto a device: the product, the dev kit and its data; no harness."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    # Build from a copy: setuptools writes build/ and egg-info next to the sources.
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "daemon", src / "daemon",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(src)], check=True, capture_output=True, text=True, timeout=170)
    (wheel,) = out.glob("edgevoice-*.whl")
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
