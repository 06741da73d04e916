"""systemd/edgevoice.service: systemd's own checks, and the daemon's stack inside its sandbox.

- ``systemd-analyze verify`` must print nothing at all (bad values and unknown keys are only
  warnings there, with exit status 0). verify also checks that ExecStart's program exists,
  so the unit is verified as a copy whose ExecStart points at a stub in the same place under
  a temporary directory; nothing else changes.
- ``systemd-analyze security --offline=true`` must rate the exposure 2.0 or lower
  (``--threshold`` counts in tenths).
- The seccomp-level settings of the unit (SystemCallFilter=, SystemCallErrorNumber=,
  MemoryDenyWriteExecute=, RestrictAddressFamilies=) are read from the unit and installed
  with libseccomp, the way systemd installs them, in a child process that then runs the
  audio and network stack: the demo over WebSockets, the wake word models, PortAudio
  capture and playback, ctypes callbacks, TLS, sd_notify, the journal and the status socket.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support import missing, need_tool

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "edgevoice.service"
README = ROOT / "README.md"


@pytest.fixture(autouse=True)
def systemd_analyze() -> str:
    """Every test here checks the unit with systemd's own tools (or runs its sandbox)."""
    return need_tool("systemd-analyze", "apt-get install systemd (or run scripts/setup; "
                                        "systemd is not started)")


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections → (key, value) in order; repeated keys kept, continuation lines joined."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def staged_unit(tmp_path: Path, text: str | None = None) -> Path:
    """A copy of the unit whose ExecStart program exists: a stub at the same path under
    ``tmp_path``."""
    text = UNIT.read_text() if text is None else text
    program = values(parse_unit(text), "Service", "ExecStart")[0].split()[0]
    stub = tmp_path / program.lstrip("/")
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir(exist_ok=True)
    copy = unit_dir / "edgevoice.service"
    copy.write_text(text.replace(f"ExecStart={program} ", f"ExecStart={stub} "))
    return copy


def verify(unit: Path, unit_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0"}
    if unit_path is not None:
        env["SYSTEMD_UNIT_PATH"] = f"{unit_path}:"  # trailing colon: and the usual places
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60, env=env)


def test_verify_prints_nothing(tmp_path: Path) -> None:
    res = verify(staged_unit(tmp_path))
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_the_verify_check_does_catch_warnings(tmp_path: Path) -> None:
    """Guard for the test above: a typo must show up (verify itself still exits 0)."""
    text = UNIT.read_text().replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomes=yes")
    res = verify(staged_unit(tmp_path, text))
    assert "Unknown key 'ProtectHomes'" in res.stderr


def test_verify_with_the_gpio_drop_in_and_the_readme_drop_ins(tmp_path: Path) -> None:
    """The drop-in install-service writes where a gpio group exists, and every drop-in shown
    in the README, each on top of the unit."""
    staged = tmp_path / "root"
    (staged / "etc").mkdir(parents=True)
    (staged / "etc" / "group").write_text("audio:x:29:\ngpio:x:997:\n")
    subprocess.run([str(ROOT / "scripts" / "install-service"), "--root", str(staged),
                    "--no-venv"], check=True, capture_output=True, timeout=60,
                   stdin=subprocess.DEVNULL, env={**os.environ, "VOICELIVE_API_KEY": ""})
    gpio = staged / "etc/systemd/system/edgevoice.service.d/gpio.conf"
    readme_dropins = [block for block in re.findall(r"```ini\n(.*?)```", README.read_text(),
                                                    re.S) if block.startswith("[Service]")]
    assert readme_dropins, "the README shows no drop-in"
    for i, dropin in enumerate([gpio.read_text(), *readme_dropins]):
        case = tmp_path / f"case{i}"
        unit = staged_unit(case)
        (unit.parent / "edgevoice.service.d").mkdir()
        (unit.parent / "edgevoice.service.d" / "x.conf").write_text(dropin)
        res = verify(unit, unit.parent)
        assert (res.returncode, res.stderr) == (0, ""), dropin


def test_security_exposure_at_most_2_0(tmp_path: Path) -> None:
    unit = staged_unit(tmp_path)
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20",
                          "--no-pager", str(unit)], capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for edgevoice\.service: (\d+\.\d)", res.stdout)
    assert match, res.stdout + res.stderr
    exposure = float(match.group(1))
    assert exposure <= 2.0 and res.returncode == 0, res.stdout
    print(f"exposure {exposure}")


def test_the_unit_says_what_the_daemon_relies_on() -> None:
    unit = parse_unit(UNIT.read_text())
    one = {k: v for k, v in unit["Service"]}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["WatchdogSec"] == "30"
    assert one["ExecStart"].startswith("/opt/edgevoice/venv/bin/edgevoice run --config ")
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["User"] == one["Group"] == "edgevoice"
    assert one["RuntimeDirectory"] == "edgevoice" and one["RuntimeDirectoryMode"] == "0750"
    assert one["LoadCredential"] == "voicelive-api-key:/etc/edgevoice/api-key"
    assert "gpio" not in one["SupplementaryGroups"].split()  # a missing group fails the unit
    assert values(unit, "Unit", "StartLimitBurst") and one["Restart"] == "on-failure"


# ----------------------------------------------------------------------------- the sandbox


def syscall_groups() -> dict[str, list[str]]:
    """``systemd-analyze syscall-filter``: every @group and what it holds."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and current is not None:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                current.append(entry)
        else:
            current = None
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        out |= expand(groups[name], groups) if name.startswith("@") else {name}
    return out


def sandbox_settings() -> dict[str, object]:
    """The unit's seccomp-level settings, resolved the way systemd resolves them."""
    unit = parse_unit(UNIT.read_text())
    groups = syscall_groups()
    allowed: set[str] | None = None
    for line in values(unit, "Service", "SystemCallFilter"):
        deny = line.startswith("~")
        names = expand(line.lstrip("~").split(), groups)
        if allowed is None:
            assert not deny, "the test expects an allow list first"
            allowed = names | expand(["@default"], groups)
        elif deny:
            allowed -= names
        else:
            allowed |= names
    assert allowed
    families = values(unit, "Service", "RestrictAddressFamilies")[-1].split()
    errno_name = values(unit, "Service", "SystemCallErrorNumber")[-1]
    import errno as errno_mod

    return {
        "allowed": sorted(allowed),
        "errno": getattr(errno_mod, errno_name),
        "families": [getattr(socket, f) for f in families],
        "mdwe": values(unit, "Service", "MemoryDenyWriteExecute")[-1] == "yes",
    }


SECCOMP = r'''
import ctypes, errno, json, mmap, os, socket, sys

cfg = json.load(open(sys.argv[1]))
lib = ctypes.CDLL(cfg["libseccomp"], use_errno=True)

class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

ALLOW = 0x7FFF0000
def ERRNO(e): return 0x00050000 | (e & 0xFFFF)
NE, LT, EQ, GT, MASKED_EQ = 1, 2, 4, 6, 7
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                       ctypes.c_uint, ctypes.POINTER(Cmp)]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
lib.seccomp_release.argtypes = [ctypes.c_void_p]

def rule(ctx, action, name, *cmps):
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        return  # not a system call of this architecture
    arr = (Cmp * max(1, len(cmps)))(*cmps)
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
    assert rc == 0, (name, rc)

def load(ctx):
    assert lib.seccomp_load(ctx) == 0
    lib.seccomp_release(ctx)

libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS, as NoNewPrivileges=yes

if cfg["mdwe"]:  # MemoryDenyWriteExecute=yes, systemd's seccomp rules
    ctx = lib.seccomp_init(ALLOW)
    W, X = mmap.PROT_WRITE, mmap.PROT_EXEC
    rule(ctx, ERRNO(errno.EPERM), "mmap", Cmp(2, MASKED_EQ, W | X, W | X))
    rule(ctx, ERRNO(errno.EPERM), "mprotect", Cmp(2, MASKED_EQ, X, X))
    rule(ctx, ERRNO(errno.EPERM), "pkey_mprotect", Cmp(2, MASKED_EQ, X, X))
    rule(ctx, ERRNO(errno.EPERM), "shmat", Cmp(2, MASKED_EQ, 0o100000, 0o100000))
    load(ctx)

# RestrictAddressFamilies=: socket() with any other family fails with EAFNOSUPPORT
fams = sorted(cfg["families"])
ctx = lib.seccomp_init(ALLOW)
rule(ctx, ERRNO(errno.EAFNOSUPPORT), "socket", Cmp(0, LT, fams[0], 0))
rule(ctx, ERRNO(errno.EAFNOSUPPORT), "socket", Cmp(0, GT, fams[-1], 0))
for f in range(fams[0] + 1, fams[-1]):
    if f not in fams:
        rule(ctx, ERRNO(errno.EAFNOSUPPORT), "socket", Cmp(0, EQ, f, 0))
load(ctx)

# SystemCallFilter= allow list, SystemCallErrorNumber= for everything else
ctx = lib.seccomp_init(ERRNO(cfg["errno"]))
for name in cfg["allowed"]:
    rule(ctx, ALLOW, name)
load(ctx)

# The rules bite:
if cfg["mdwe"]:
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("W+X mapping was allowed")
    except PermissionError:
        pass
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
    sys.exit("AF_NETLINK was allowed")
except OSError as exc:
    assert exc.errno == errno.EAFNOSUPPORT, exc
if "setpriority" not in cfg["allowed"]:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 5)
        sys.exit("setpriority was allowed")
    except PermissionError:
        pass
print("SANDBOX READY", flush=True)
'''

WORKLOAD = r'''
import asyncio, ctypes, json, os, socket, ssl, sys
cfg = json.load(open(sys.argv[1]))

# ctypes callbacks (pulsectl builds them) need executable trampolines without W+X memory
cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
assert cb(41) == 42
import pulsectl
pulsectl.Pulse("edgevoice-sandbox", connect=False).close()

ssl.create_default_context()
assert socket.getaddrinfo("localhost", 443, type=socket.SOCK_STREAM)  # no AF_NETLINK needed
import azure.identity  # noqa: F401  (cryptography, cffi)

# sd_notify and the journal
from edgevoice.service.notify import Notifier
assert Notifier().ready("sandbox")
import logging
from edgevoice.service.logs import setup_logging
setup_logging("info", journal=True)
logging.getLogger("edgevoice.sandbox").info("hello", extra={"turn": 1})

# the wake word models (TFLite) on real speech
from edgevoice.listen.wake import WakeWordDetector
speech = open(cfg["speech"], "rb").read()
with WakeWordDetector(["hey_jarvis"]) as det:
    hits = det.process(speech, 0.0)
assert hits and hits[0].name == "hey_jarvis", hits
print("wake", round(hits[0].score, 3), flush=True)

# PortAudio capture through ALSA, on the loop, and playback
from edgevoice.audio.capture import Capture
got = []
async def capture():
    cap = Capture(device="testmic", on_frame=lambda f, t: got.append(f))
    await cap.start(require_device=True)
    for _ in range(500):
        if len(got) >= 25:
            break
        await asyncio.sleep(0.01)
    await cap.stop()
asyncio.run(capture())
assert len(got) >= 25 and any(any(f) for f in got), len(got)
import pyaudio
pa = pyaudio.PyAudio()
idx = next(i for i in range(pa.get_device_count())
           if pa.get_device_info_by_index(i)["name"] == "testspeaker")
out = pa.open(format=pyaudio.paInt16, channels=1, rate=16000, output=True,
              output_device_index=idx)
out.write(speech[:32000])
out.close()
pa.terminate()
print("audio", len(got), flush=True)

# the status socket
from edgevoice.service.status import StatusServer, query_status
async def status():
    async with StatusServer(cfg["status"], lambda: {"state": "idle"}):
        return await asyncio.to_thread(query_status, cfg["status"])
assert asyncio.run(status())["state"] == "idle"

# the Voice Live handshake over WebSockets (client and server) up to session.updated, with
# the same code as `edgevoice doctor`
from edgevoice.config import Config
from edgevoice.devkit.simulator import Simulator
from edgevoice.service.doctor import Options, check_endpoint
async def link():
    async with Simulator(api_key="sandbox-key") as sim:
        conf = Config.model_validate({"voicelive": {"endpoint": sim.url}})
        return await check_endpoint(conf, Options())
os.environ["VOICELIVE_API_KEY"] = "sandbox-key"
checked = asyncio.run(link())
assert checked.status == "ok", checked
print("WORKLOAD DONE", flush=True)
'''


@pytest.mark.realtime  # paced audio devices
@pytest.mark.slow
def test_the_stack_runs_inside_the_units_seccomp_sandbox(tmp_path: Path, speech) -> None:
    from edgevoice.devkit.virtual import VirtualAlsa

    libseccomp = ctypes.util.find_library("seccomp")
    if libseccomp is None:
        missing("libseccomp", "apt-get install libseccomp2 (a dependency of systemd, which "
                              "scripts/setup installs)")
    settings = sandbox_settings()
    pcm = speech("hey jarvis")
    pcm = bytes(32000) + pcm + bytes(32000)
    (tmp_path / "speech.raw").write_bytes(pcm)
    # An unpaced file device: capture drops buffers it cannot keep up with, so the microphone
    # plays a steady tone that any buffer shows.
    tone = (3000 * np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000)).astype("<i2")
    (tmp_path / "tone.raw").write_bytes(tone.tobytes())
    va = VirtualAlsa(tmp_path).capture("testmic", tmp_path / "tone.raw") \
        .playback("testspeaker", tmp_path / "out.raw")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    cfg = {**settings, "libseccomp": libseccomp, "speech": str(tmp_path / "speech.raw"),
           "status": str(tmp_path / "run" / "status.sock")}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    script = tmp_path / "probe.py"
    script.write_text(SECCOMP + WORKLOAD)
    env = {**os.environ, **va.env(), "NOTIFY_SOCKET": str(tmp_path / "notify")}
    try:
        res = subprocess.run([sys.executable, str(script), str(tmp_path / "cfg.json")],
                             capture_output=True, text=True, timeout=120, env=env,
                             cwd=tmp_path)
        notify.settimeout(1)
        ready = notify.recv(1024)
    finally:
        notify.close()
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "SANDBOX READY" in res.stdout and "WORKLOAD DONE" in res.stdout
    assert ready == b"READY=1\nSTATUS=sandbox"
    assert (tmp_path / "out.raw").stat().st_size > 0


# ----------------------------------------------------------------------------- limits, runner

TOOLS_UNIT = ROOT / "systemd" / "edgevoice-tools.service"


def test_the_unit_limits_cores_tasks_and_memory() -> None:
    one = dict(parse_unit(UNIT.read_text())["Service"])
    assert one["LimitCORE"] == "0"  # a core dump would hold the API key
    assert 0 < int(one["TasksMax"]) <= 256
    assert one["MemoryMax"].endswith("M") and 0 < int(one["MemoryMax"][:-1]) <= 1024


def test_the_tool_runner_unit_runs_as_its_own_user_and_verifies(tmp_path: Path) -> None:
    unit = parse_unit(TOOLS_UNIT.read_text())
    one = dict(unit["Service"])
    assert one["User"] == one["Group"] == "edgevoice-tools"  # never the daemon's user
    assert one["CapabilityBoundingSet"] == "" and one["NoNewPrivileges"] == "yes"
    assert one["ProtectProc"] == "invisible" and one["LimitCORE"] == "0"
    assert one["ExecStart"].startswith("/opt/edgevoice/venv/bin/edgevoice tool-runner ")
    daemon = parse_unit(UNIT.read_text())
    assert "edgevoice-tools.service" in values(daemon, "Unit", "Wants")
    staged = staged_unit(tmp_path)
    program = one["ExecStart"].split()[0]
    copy = staged.parent / "edgevoice-tools.service"
    copy.write_text(TOOLS_UNIT.read_text().replace(
        f"ExecStart={program} ", f"ExecStart={tmp_path / program.lstrip('/')} "))
    res = verify(copy, staged.parent)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=100",
                          "--no-pager", str(copy)], capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for edgevoice-tools\.service: (\d+\.\d)",
                      res.stdout)
    assert match, res.stdout + res.stderr
    print(f"tool runner exposure {match.group(1)}")
