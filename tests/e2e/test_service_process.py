"""``edgevoice run`` as systemd runs it, all real: a child process on the demo's virtual sound
card (ALSA ``file`` PCMs on FIFOs paced in real time), the loopback simulator on 127.0.0.1, and
a notify socket bound by the test in place of the service manager (``$NOTIFY_SOCKET``, an
``AF_UNIX``/``SOCK_DGRAM`` socket, see docs/test-environment.md).

What systemd relies on: ``READY=1`` only once the microphone delivers and the wake word
listens, ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC``, ``STATUS=`` following the conversation,
``RELOADING=1``/``READY=1`` around SIGHUP (also when the new file is invalid), ``STOPPING=1``
and exit code 0 on SIGTERM. ``edgevoice status`` is queried as a real subprocess too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from edgevoice.audio.convert import read_wav
from edgevoice.demo import Rig
from edgevoice.voicelive.script import Script
from edgevoice.voicelive.simulator import Simulator
from support import espeak, stop_process, until

pytestmark = pytest.mark.timeout(120)

WAKE_WAV = Path(__file__).resolve().parents[1] / "fixtures" / "wake" / "jarvis_en-us.wav"
LISTENING = "listening for 'hey jarvis'"
WATCHDOG_USEC = 400_000  # systemd's WatchDogSec=0.4: the daemon pings every 0.2 s
START_TIMEOUT = 30.0  # process start-up, model loading and opening the devices
#: Variables of a service manager that must not leak into the child from the test's own env.
MANAGER_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "RUNTIME_DIRECTORY",
                "STATE_DIRECTORY", "EDGEVOICE_CONFIG")


def wake_word() -> bytes:
    pcm, rate = read_wav(WAKE_WAV)
    assert rate == 16000
    return pcm


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * 16000) * 2)


def mute(rig: Rig) -> None:
    """Make the virtual microphone deliver nothing at all, as a hung device: pause its pacer
    and empty the FIFO of the silence the pacer already queued (up to a pipe buffer, about
    128 ms, which would be enough to count as a delivering microphone)."""
    rig.mic.pause()
    time.sleep(0.1)  # a chunk taken before the pause is written within one 20 ms period
    fd = os.open(rig.mic.path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                if not os.read(fd, 65536):
                    break
            except BlockingIOError:
                break
    finally:
        os.close(fd)


class NotifySocket:
    """The service manager's end of ``$NOTIFY_SOCKET``: a thread records every datagram as
    ``(time.monotonic() of arrival, {KEY: VALUE})``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind(os.fspath(path))
        self._sock.settimeout(0.05)
        self._lock = threading.Lock()
        self._messages: list[tuple[float, dict[str, str]]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-socket", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            t = time.monotonic()
            fields = {}
            for line in data.decode("utf-8", "replace").split("\n"):
                if line:
                    key, _, value = line.partition("=")
                    fields[key] = value
            with self._lock:
                self._messages.append((t, fields))

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self._sock.close()

    @property
    def messages(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self._messages)

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)

    def find(self, key: str, value: str | None = None, start: int = 0) -> int | None:
        """Index of the first message from ``start`` on that has ``key`` (= ``value``)."""
        for i, (_, fields) in enumerate(self.messages[start:], start):
            if key in fields and (value is None or fields[key] == value):
                return i
        return None

    def count(self, key: str, since: float, until: float) -> int:
        return sum(1 for t, fields in self.messages if key in fields and since <= t < until)

    def dump(self) -> str:
        msgs = self.messages
        t0 = msgs[0][0] if msgs else 0.0
        return "\n".join(f"{t - t0:7.3f} {fields}" for t, fields in msgs
                         if set(fields) != {"WATCHDOG"}) or "(no messages)"


class DaemonExited(AssertionError):
    """The daemon exited while the test waited for it."""


@dataclass
class Service:
    """One ``edgevoice run`` child process and what the test sees of it."""

    proc: subprocess.Popen[str]
    notify: NotifySocket
    sim: Simulator
    rig: Rig
    config: Path
    status_socket: Path
    env: dict[str, str]
    lines: list[str]

    def stderr(self) -> str:
        return "".join(self.lines)

    def explain(self) -> str:
        return (f"notify messages (without WATCHDOG=1):\n{self.notify.dump()}\n"
                f"daemon stderr:\n{self.stderr()}")

    async def message(self, key: str, value: str | None = None, *, start: int = 0,
                      timeout: float = 10.0) -> int:
        """Wait for a notify message with ``key`` (= ``value``) at index ``start`` or later;
        returns its index. The failure names what was received and the daemon's log."""
        def found() -> int:
            if self.proc.poll() is not None:
                raise DaemonExited(f"the daemon exited with {self.proc.returncode} while "
                                   f"waiting for {key}\n{self.explain()}")
            i = self.notify.find(key, value, start)
            return 0 if i is None else i + 1  # truthy for index 0 as well

        try:
            index = await until(found, timeout, what=f"{key}={value or '…'}")
        except DaemonExited:
            raise
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.explain()}") from None
        return cast(int, index) - 1

    def fields(self, index: int) -> dict[str, str]:
        return self.notify.messages[index][1]

    def write_config(self, **values: Any) -> None:
        write_config(self.config, self.sim.url, self.status_socket, **values)

    async def status(self) -> dict[str, Any]:
        """``edgevoice status --json --socket PATH`` as a subprocess."""
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "edgevoice", "status", "--json", "--socket",
             str(self.status_socket)],
            env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, f"edgevoice status: {out.stderr}\n{self.explain()}"
        return json.loads(out.stdout)

    async def stop_with_sigterm(self) -> None:
        """SIGTERM: STOPPING=1, exit code 0 within 10 s, no traceback."""
        mark = len(self.notify)
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.proc.wait, 10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within 10 s of SIGTERM\n{self.explain()}") from None
        await asyncio.sleep(0.1)  # the reader threads take the last datagram and lines
        assert self.notify.find("STOPPING", "1", mark) is not None, self.explain()
        assert code == 0, self.explain()
        assert "Traceback" not in self.stderr(), self.explain()


def write_config(path: Path, endpoint: str, status_socket: Path, *, log_level: str = "info",
                 follow_up_s: float = 1.0, extra: str = "") -> None:
    """The service's config file (written whole and renamed into place, as an editor or a
    package manager would, so a SIGHUP never reads half a file)."""
    text = (f'[audio]\ninput_device = "edgevoice_mic"\noutput_device = "edgevoice_speaker"\n'
            f'[voicelive]\nendpoint = "{endpoint}"\n'
            f"[conversation]\nfollow_up_s = {follow_up_s}\n"
            f'[service]\nlog_level = "{log_level}"\nlog_target = "stderr"\n'
            f'status_socket = "{status_socket}"\n' + extra)
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.asynccontextmanager
async def service(script: dict[str, Any], *, mic_paused: bool = False) -> AsyncIterator[Service]:
    """The simulator, the virtual sound card, the notify socket and ``edgevoice run`` on them.
    With ``mic_paused`` the microphone delivers nothing until ``rig.mic.resume()``."""
    # Not tmp_path: unix socket paths must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="ev-svc-", dir="/tmp"))
    key = secrets.token_urlsafe(16)
    sim = Simulator(script=Script.from_dict(script), api_key=key, pace=1.0)
    await sim.start()
    notify = NotifySocket(root / "notify")
    try:
        with Rig(root / "rig") as rig:
            if mic_paused:
                mute(rig)
            config = root / "edgevoice.toml"
            status_socket = root / "status.sock"
            write_config(config, sim.url, status_socket)
            env = {k: v for k, v in os.environ.items() if k not in MANAGER_VARS}
            env.update({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(WATCHDOG_USEC),
                        "VOICELIVE_API_KEY": key,
                        "ALSA_CONFIG_PATH": os.environ["ALSA_CONFIG_PATH"],
                        "PYTHONPATH": os.pathsep.join(sys.path)})
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgevoice", "run", "--config", str(config)],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True)
            lines: list[str] = []
            reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []),
                                      name="daemon-stderr", daemon=True)
            reader.start()
            # The status command must not see the daemon's service-manager variables.
            cli_env = {k: v for k, v in env.items() if k not in MANAGER_VARS}
            try:
                yield Service(proc, notify, sim, rig, config, status_socket, cli_env, lines)
            finally:
                stop_process(proc)
                reader.join(2)
    finally:
        notify.close()
        await sim.close()
        shutil.rmtree(root, ignore_errors=True)


async def test_ready_only_once_listening_then_watchdog_status_and_clean_stop():
    script = {"turn": [{"user": "what's the weather", "say": "Sunny and warm."}]}
    async with service(script, mic_paused=True) as svc:
        # Up and pinging the watchdog (the daemon is built and running), but the
        # microphone delivers nothing: no READY=1, however long that lasts.
        await svc.message("WATCHDOG", "1", timeout=START_TIMEOUT)
        snap = await svc.status()
        assert snap["state"] == "starting", snap
        assert snap["pid"] == svc.proc.pid
        await asyncio.sleep(3.0)
        assert svc.notify.find("READY") is None, svc.explain()
        assert "listening for" not in svc.stderr(), svc.explain()

        resumed = time.monotonic()
        svc.rig.mic.resume()
        ready = await svc.message("READY", "1", timeout=10)
        t_ready, fields = svc.notify.messages[ready]
        assert t_ready > resumed
        assert fields.get("STATUS") == LISTENING, svc.explain()
        assert svc.notify.find("READY", start=ready + 1) is None  # once only

        # WATCHDOG_USEC=400000 (and no WATCHDOG_PID): one ping every 0.2 s.
        t0 = time.monotonic()
        await asyncio.sleep(2.0)
        pings = svc.notify.count("WATCHDOG", t0, t0 + 2.0)
        assert 6 <= pings <= 14, f"{pings} WATCHDOG=1 in 2 s"

        snap = await svc.status()
        assert snap["state"] == "idle", snap
        assert snap["wake_words"] == ["hey_jarvis"], snap
        assert snap["turns"] == []

        # A conversation: STATUS follows it and comes back to listening for the wake word.
        mark = len(svc.notify)
        svc.rig.mic.feed(wake_word() + silence(0.3) + espeak("what's the weather like today")
                         + silence(1.5))
        talking = await svc.message("STATUS", "in conversation", start=mark, timeout=20)
        back = await svc.message("STATUS", LISTENING, start=talking + 1, timeout=40)
        assert svc.sim.sent("response.audio.delta"), "the simulator never replied"
        statuses = [f["STATUS"] for _, f in svc.notify.messages[mark:back + 1] if "STATUS" in f]
        assert statuses == ["in conversation", LISTENING], statuses  # deduplicated

        snap = await svc.status()
        assert snap["state"] == "idle", snap
        assert len(snap["turns"]) == 1, snap
        turn = snap["turns"][0]
        assert turn["wake_word"] == "hey_jarvis"
        assert isinstance(turn["wake_to_send_ms"], int | float), turn
        assert 0 <= turn["wake_to_send_ms"] < 5000, turn

        await svc.stop_with_sigterm()


async def test_sighup_reloads_a_valid_config_and_keeps_running_on_an_invalid_one():
    async with service({"turn": [{"say": "Okay."}]}) as svc:
        await svc.message("READY", "1", timeout=START_TIMEOUT)
        assert " DEBUG " not in svc.stderr()

        # A valid new file: RELOADING=1, then READY=1 once it is in effect (debug logging).
        svc.write_config(log_level="debug")
        mark = len(svc.notify)
        svc.proc.send_signal(signal.SIGHUP)
        reloading = await svc.message("RELOADING", "1", start=mark)
        assert int(svc.fields(reloading)["MONOTONIC_USEC"]) > 0
        ready = await svc.message("READY", "1", start=reloading + 1, timeout=20)
        assert svc.fields(ready).get("STATUS") == LISTENING, svc.explain()
        await until(lambda: " DEBUG " in svc.stderr(), 5, what="debug logging after reload")
        snap = await svc.status()
        assert snap["state"] == "idle", snap
        assert snap["wake_words"] == ["hey_jarvis"], snap

        # An invalid file: RELOADING=1 and READY=1 again, the running config is kept, the log
        # names the offending key, and the daemon goes on answering.
        svc.write_config(log_level="debug", follow_up_s=-3)
        mark = len(svc.notify)
        refused_before = svc.stderr().count("reload refused")
        svc.proc.send_signal(signal.SIGHUP)
        reloading = await svc.message("RELOADING", "1", start=mark)
        ready = await svc.message("READY", "1", start=reloading + 1, timeout=10)
        assert svc.fields(ready).get("STATUS") == LISTENING, svc.explain()
        await until(lambda: svc.stderr().count("reload refused") > refused_before, 5,
                    what="the refused reload in the log")
        refused = [ln for ln in svc.lines if "reload refused" in ln]
        assert any("follow_up_s" in ln for ln in refused), svc.explain()
        snap = await svc.status()
        assert snap["state"] == "idle", snap
        assert snap["pid"] == svc.proc.pid
        assert svc.proc.poll() is None

        # A file that is valid TOML and schema but names a wake word model that does not
        # exist: refused before the running daemon is touched.
        svc.write_config(log_level="debug", extra='[wake]\nmodels = [{ name = "hey_nobody" }]\n')
        mark = len(svc.notify)
        svc.proc.send_signal(signal.SIGHUP)
        reloading = await svc.message("RELOADING", "1", start=mark)
        ready = await svc.message("READY", "1", start=reloading + 1, timeout=10)
        await until(lambda: any("reload refused" in ln and "hey_nobody" in ln
                                for ln in svc.lines), 5, what="the refused model")
        assert (await svc.status())["wake_words"] == ["hey_jarvis"]

        await svc.stop_with_sigterm()
