"""scripts/install-service: a staged install under --root, and a real one (user, ownership)
inside a private mount namespace whose /etc and /opt are throwaway copies."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-service"
KEY = "sk-install-test-0123456789"


def run(*args: str, key: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VOICELIVE_API_KEY"}
    if key is not None:
        env["VOICELIVE_API_KEY"] = key
    res = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL, env=env)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_staged_install_then_uninstall(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = run("--root", str(root), "--no-venv", key=KEY)
    unit = root / "etc/systemd/system/edgevoice.service"
    config = root / "etc/edgevoice/config.toml"
    key = root / "etc/edgevoice/api-key"
    assert unit.read_bytes() == (ROOT / "systemd/edgevoice.service").read_bytes()
    assert mode(unit) == 0o644
    tools_unit = root / "etc/systemd/system/edgevoice-tools.service"
    assert tools_unit.read_bytes() == (ROOT / "systemd/edgevoice-tools.service").read_bytes()
    assert mode(tools_unit) == 0o644
    assert config.read_bytes() == (ROOT / "config/edgevoice.toml").read_bytes()
    assert mode(config) == 0o640 and mode(config.parent) == 0o750
    assert key.read_text() == KEY + "\n" and mode(key) == 0o600
    assert (root / "opt/edgevoice/README.md").is_file()
    assert not (root / "etc/systemd/system/edgevoice.service.d").exists()  # no gpio group
    assert KEY not in first.stdout + first.stderr
    assert "systemctl daemon-reload && systemctl enable --now edgevoice" in first.stdout
    assert sorted(p.name for p in config.parent.iterdir()) == ["api-key", "config.toml"]

    # A second run keeps the config and the key; --replace-key changes the key.
    config.write_text(config.read_text() + "\n# edited\n")
    second = run("--root", str(root), "--no-venv", key="sk-other-key-000")
    assert config.read_text().endswith("# edited\n")
    assert key.read_text() == KEY + "\n"
    assert "kept the existing /etc/edgevoice/config.toml" in second.stdout
    assert "kept the existing API key" in second.stdout and "is up to date" in second.stdout
    run("--root", str(root), "--no-venv", "--replace-key", key="sk-other-key-000")
    assert key.read_text() == "sk-other-key-000\n" and mode(key) == 0o600
    assert sorted(p.name for p in config.parent.iterdir()) == ["api-key", "config.toml"]

    # The gpio drop-in follows the gpio group of the target.
    (root / "etc/group").write_text("audio:x:29:\ngpio:x:997:\n")
    run("--root", str(root), "--no-venv")
    dropin = root / "etc/systemd/system/edgevoice.service.d/gpio.conf"
    assert "SupplementaryGroups=gpio" in dropin.read_text() and mode(dropin) == 0o644
    (root / "etc/group").write_text("audio:x:29:\n")
    run("--root", str(root), "--no-venv")
    assert not dropin.parent.exists()

    # Uninstall keeps config and key; --purge removes them.
    (root / "etc/group").write_text("audio:x:29:\ngpio:x:997:\n")
    run("--root", str(root), "--no-venv")
    out = run("--root", str(root), "--uninstall").stdout
    assert not unit.exists() and not dropin.parent.exists() and not tools_unit.exists()
    assert not (root / "opt/edgevoice").exists()
    assert config.exists() and key.exists()
    assert "kept /etc/edgevoice" in out
    run("--root", str(root), "--uninstall", "--purge")
    assert not (root / "etc/edgevoice").exists()
    run("--root", str(root), "--uninstall")  # nothing left to remove: still fine


def test_no_key_given_and_bad_options(tmp_path: Path) -> None:
    res = run("--root", str(tmp_path), "--no-venv")
    assert not (tmp_path / "etc/edgevoice/api-key").exists()
    assert "no API key stored" in res.stdout
    bad = run("--bogus", check=False)
    assert bad.returncode == 1 and "unknown option: --bogus" in bad.stderr
    assert run("--help").stdout.startswith("Installs edgevoice as a systemd service")


@pytest.mark.parametrize("link", ["etc/edgevoice", "etc/edgevoice/api-key",
                                  "etc/systemd/system/edgevoice.service", "opt",
                                  "etc/systemd/system/edgevoice.service.d"])
def test_symbolic_links_under_the_root_are_refused(tmp_path: Path, link: str) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim"
    victim.write_text("not yours\n")
    victim.chmod(0o644)
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/group").write_text("audio:x:29:\ngpio:x:997:\n")
    is_file = link.endswith(("api-key", ".service"))
    (root / link).symlink_to(victim if is_file else elsewhere, target_is_directory=not is_file)
    res = run("--root", str(root), "--no-venv", key=KEY, check=False)
    assert res.returncode == 1
    assert res.stderr.startswith(f"install-service: refusing {root}/{link}: it is a symbolic "
                                 f"link"), res.stderr
    # Nothing was written, chmod-ed or removed through the link.
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim"]
    assert victim.read_text() == "not yours\n" and mode(victim) == 0o644
    res = run("--root", str(root), "--uninstall", "--purge", check=False)
    assert res.returncode == 1 and victim.exists()


REAL = r'''
set -euo pipefail
work=$1 script=$2
cp -a /etc "$work/etc"
mount --bind "$work/etc" /etc
mount -t tmpfs tmpfs /opt
mount -t tmpfs tmpfs /var/lib
! getent group gpio >/dev/null || groupdel gpio
VOICELIVE_API_KEY=sk-real-install-123456 "$script" --no-venv
stat -c '%a %U:%G %n' /etc/edgevoice /etc/edgevoice/config.toml /etc/edgevoice/api-key \
  /etc/systemd/system/edgevoice.service
id edgevoice
getent passwd edgevoice
id edgevoice-tools
stat -c '%a %U:%G %n' /etc/systemd/system/edgevoice-tools.service
"$script" --no-venv > /dev/null   # idempotent
groupadd --system gpio
"$script" --no-venv > /dev/null
id edgevoice
ls /etc/systemd/system/edgevoice.service.d
"$script" --uninstall --purge
getent passwd edgevoice || echo "user gone"
getent passwd edgevoice-tools || echo "tools user gone"
ls /etc/edgevoice 2>/dev/null || echo "config gone"
'''


@pytest.mark.needs_root
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare")
def test_real_install_creates_the_user_and_owns_the_files(tmp_path: Path) -> None:
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("cannot create a mount namespace here")
    if Path("/run/systemd/system").is_dir():
        pytest.skip("systemd runs here: a real install would start the service")
    host = (Path("/etc/edgevoice").exists(), Path("/etc/passwd").read_bytes())
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", REAL,
                          "real", str(tmp_path), str(SCRIPT)], capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "750 root:edgevoice /etc/edgevoice\n" in out
    assert "640 root:edgevoice /etc/edgevoice/config.toml\n" in out
    assert "600 root:root /etc/edgevoice/api-key\n" in out
    assert "644 root:root /etc/systemd/system/edgevoice.service\n" in out
    ids = [line for line in out.splitlines() if line.startswith("uid=")]
    assert "(audio)" in ids[0] and "(gpio)" not in ids[0]
    # The daemon reaches the tool runner through its group; the tool user is in no group of
    # the daemon's (it cannot read /etc/edgevoice or the state directory).
    assert "(edgevoice-tools)" in ids[0]
    assert "(edgevoice)" not in ids[1] and "(audio)" not in ids[1]
    assert "644 root:root /etc/systemd/system/edgevoice-tools.service\n" in out
    assert "(audio)" in ids[2] and "(gpio)" in ids[2]
    assert "tools user gone" in out
    assert ":/var/lib/edgevoice:/usr/sbin/nologin" in out
    assert "gpio.conf" in out
    assert "user gone" in out and "config gone" in out
    assert "sk-real-install-123456" not in out + res.stderr
    assert (Path("/etc/edgevoice").exists(), Path("/etc/passwd").read_bytes()) == host
