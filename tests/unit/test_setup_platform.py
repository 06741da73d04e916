"""scripts/setup and scripts/install-service on a platform edgevoice cannot run on (32-bit
Raspberry Pi OS): one sentence saying what is unsupported and what to use, before anything is
installed. Run on copies, with dpkg reporting armhf and every installer a tripwire."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["setup", "install-service"])
def test_a_32_bit_system_stops_with_one_sentence(tmp_path: Path, script: str) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / script, tmp_path / "scripts" / script)
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "dpkg").write_text("#!/bin/sh\n[ \"$1\" = --print-architecture ] && echo armhf\n")
    for tripwire in ("apt-get", "dpkg-query", "python3", "sudo", "useradd", "pip"):
        (stubs / tripwire).write_text(f"#!/bin/sh\necho 'ran {tripwire}' >&2\nexit 99\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(tmp_path)}
    argv = [str(tmp_path / "scripts" / script)]
    if script == "install-service" and os.geteuid() != 0:
        pytest.skip("install-service checks the platform after its root check")
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30,
                         cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "ran " not in res.stderr  # nothing was installed or created first
    (line,) = res.stderr.strip().splitlines()
    assert "does not run on armhf" in line and "64-bit" in line
    assert "Raspberry Pi OS (64-bit)" in line
