"""Helpers shared by the test modules (tests/ is on sys.path through its conftest)."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TypeVar

import aiomqtt
import pytest

from edgevoice.audio.convert import read_wav, resample
from edgevoice.devkit.simulator import SentError, Simulator
from edgevoice.devkit.virtual import VirtualAlsa
from edgevoice.link.protocol import is_benign

T = TypeVar("T")


def in_ci() -> bool:
    """True when the variable CI is set (CI runs with CI=true), unless to 0/false/no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str, install: str) -> NoReturn:
    """``what``, which scripts/setup installs, is missing: on a developer's machine the test is
    skipped, under CI it fails (there a skip would hide a broken install)."""
    message = f"{what} is not installed: {install}"
    if in_ci():
        pytest.fail(f"{message} (CI is set: scripts/setup must have installed it)",
                    pytrace=False)
    pytest.skip(message)


def need_tool(name: str, install: str, path: str | None = None) -> str:
    """The path of program ``name`` (searched in ``path`` too, if given); see :func:`missing`
    for what happens when it is not there."""
    found = shutil.which(name) or (shutil.which(name, path=path) if path else None)
    if found is None:
        missing(name, install)
    return found


def need_module(name: str, install: str) -> ModuleType:
    """``importlib.import_module(name)``; see :func:`missing` for what happens when it cannot
    be imported."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"{name} ({exc})", install)


@cache
def espeak(text: str, rate: int = 16000, voice: str = "en-us") -> bytes:
    """Real espeak-ng speech for ``text`` as PCM16 mono at ``rate`` (cached per process).

    No espeak-ng is a failure, also outside CI: most tests that speak have nothing to run
    without it, and a run of skips would look like a pass."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng not installed: apt-get install espeak-ng (or run scripts/setup)",
                    pytrace=False)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True,
                       capture_output=True)
        pcm, native = read_wav(wav)
    return resample(pcm, native, rate)


def use_alsa(va: VirtualAlsa, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point ALSA (and so PortAudio) at the virtual devices for this test; returns the
    variables set (for a subprocess's environment)."""
    env = va.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


async def until(cond: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll ``cond`` every 5 ms until it is truthy and return its value; AssertionError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.005)
    return value


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """:func:`until` for code without an event loop (blocks the calling thread)."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.01)
    return value


async def quiet(value: Callable[[], T], period_s: float, timeout_s: float = 10.0,
                what: str = "") -> T:
    """Wait until ``value()`` (a counter, a length, a tuple of them) has not changed for
    ``period_s`` seconds and return it; AssertionError if it still changes after
    ``timeout_s``. For "nothing more arrives" checks: the caller then asserts on the value,
    which holds everything that came while it was still changing."""
    if timeout_s < period_s:
        raise ValueError(f"timeout_s ({timeout_s}) is shorter than period_s ({period_s})")
    poll = min(0.01, period_s / 4)
    start = time.monotonic()
    last, since = value(), start
    while True:
        await asyncio.sleep(poll)
        now_value, now = value(), time.monotonic()
        if now_value != last:
            last, since = now_value, now
        elif now - since >= period_s:
            return last
        if now - start > timeout_s:
            shown = repr(last)
            shown = shown if len(shown) <= 200 else shown[:200] + "…"
            raise AssertionError(f"{what or value} still changing after {timeout_s} s "
                                 f"(last {shown})")


class PulseServer:
    """A private PulseAudio server (run as root, as on the project's machines): a null sink
    and a unix socket with anonymous auth, in a runtime dir of its own."""

    def __init__(self) -> None:
        # Not tmp_path: a unix socket path must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="ev-pulse-"))
        runtime = self.root / "run"
        runtime.mkdir(mode=0o700)
        socket = runtime / "native"
        self.config = self.root / "server.pa"
        self.config.write_text(
            "load-module module-null-sink sink_name=duckingtest\n"
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={socket}\n")
        self.server = f"unix:{socket}"
        self.env = {**os.environ, "HOME": str(self.root), "XDG_RUNTIME_DIR": str(runtime),
                    "PULSE_RUNTIME_PATH": str(runtime), "PULSE_SERVER": self.server}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with (self.root / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1",
                 "--system=false", "--use-pid-file=no", "-F", str(self.config)],
                env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, \
                (self.root / "server.log").read_text()
            return subprocess.run(["pactl", "info"], env=self.env, capture_output=True,
                                  timeout=5).returncode == 0

        wait_for(up, what="the PulseAudio server")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True,
                              check=True, timeout=5).stdout

    def sink_inputs(self) -> dict[str, dict]:
        """application.name -> sink input (pactl's JSON)."""
        out = json.loads(self.pactl("--format=json", "list", "sink-inputs"))
        return {si["properties"]["application.name"]: si for si in out}

    def volume(self, app: str) -> tuple[int, ...]:
        return tuple(ch["value"] for ch in self.sink_inputs()[app]["volume"].values())

    def volume_db(self, app: str) -> tuple[float, ...]:
        vol = self.sink_inputs()[app]["volume"].values()
        return tuple(float(ch["db"].split()[0]) for ch in vol)

    def set_volume(self, app: str, *raw: int) -> None:
        index = self.sink_inputs()[app]["index"]
        self.pactl("set-sink-input-volume", str(index), *map(str, raw))

    def play(self, app: str, procs: list[subprocess.Popen]) -> None:
        """Start another program playing (endless silence) and wait for its stream."""
        procs.append(subprocess.Popen(
            ["pacat", "--playback", "--raw", "--channels=2", f"--client-name={app}",
             "--stream-name=music", "/dev/zero"],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        wait_for(lambda: app in self.sink_inputs(), what=f"stream {app}")


class DBusDaemon:
    """A private D-Bus message bus (``dbus-daemon --session`` on a socket of its own) and the
    small MPRIS players started on it (tests/mpris_player.py, each its own process)."""

    def __init__(self) -> None:
        # Not tmp_path: a unix socket path must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="ev-dbus-"))
        self.address = f"unix:path={self.root / 'bus'}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.players: dict[str, subprocess.Popen[str]] = {}

    def start(self) -> None:
        with (self.root / "bus.log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["dbus-daemon", "--session", "--nofork", "--nopidfile",
                 f"--address={self.address}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_for(lambda: (self.root / "bus").exists(), what="dbus-daemon's socket")

    def player(self, name: str, status: str = "Playing", *options: str
               ) -> subprocess.Popen[str]:
        """Start an MPRIS player owning ``org.mpris.MediaPlayer2.NAME`` (``options``: see
        tests/mpris_player.py); returns once it owns the name."""
        script = Path(__file__).resolve().parent / "mpris_player.py"
        proc = subprocess.Popen([sys.executable, str(script), self.address, name, status,
                                 *options],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.players[name] = proc
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "ready\n", proc.stderr.read() if proc.stderr else line
        return proc

    def status(self, name: str) -> str:
        """A player's PlaybackStatus, read with dbus-send (independent of dbus-fast)."""
        out = subprocess.run(
            ["dbus-send", f"--bus={self.address}", "--print-reply",
             f"--dest=org.mpris.MediaPlayer2.{name}", "/org/mpris/MediaPlayer2",
             "org.freedesktop.DBus.Properties.Get", "string:org.mpris.MediaPlayer2.Player",
             "string:PlaybackStatus"], capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip().rsplit('"', 2)[-2]

    def stop(self) -> None:
        for proc in self.players.values():
            stop_process(proc)
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail("mosquitto is not installed: run scripts/setup (Debian package mosquitto)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A private mosquitto on 127.0.0.1 (on a free port, started at once); anonymous, or one
    user when ``users`` is given."""

    def __init__(self, root: Path, users: dict[str, str] | None = None) -> None:
        self.port = free_port()
        conf = [f"listener {self.port} 127.0.0.1", "persistence false"]
        if users:
            passwd = root / "passwd"
            passwd.touch(mode=0o600)
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password],
                               check=True, capture_output=True, timeout=10)
            conf += ["allow_anonymous false", f"password_file {passwd}"]
            if os.geteuid() == 0:
                conf.append("user root")  # the password file is in a root-only temp dir
        else:
            conf.append("allow_anonymous true")
        self.config = root / "mosquitto.conf"
        self.config.write_text("\n".join(conf) + "\n")
        self.log = root / "mosquitto.log"
        self.start()

    def start(self) -> None:
        """Start mosquitto (again, after stop(): same port, same users, no retained state)."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        def listening() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(listening, timeout=10, what="mosquitto to listen")

    def stop(self) -> None:
        stop_process(self.proc)


class Watcher:
    """An independent subscriber: what really went over the broker."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []


@asynccontextmanager
async def watching(broker: Broker, topic: str = "#") -> AsyncIterator[Watcher]:
    watcher = Watcher()
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe(topic, qos=1)

        async def pump() -> None:
            async for m in client.messages:
                watcher.messages.append((str(m.topic), bytes(m.payload), m.retain))

        task = asyncio.create_task(pump())
        try:
            yield watcher
        finally:
            task.cancel()



def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has been killed: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``: the child is gone (and reaped) on return."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client_errors(sim: Simulator) -> list[SentError]:
    """The ``error`` events the simulator sent because of something the client did wrong:
    not the script's own errors, and not the race the link itself treats as benign (a
    ``response.cancel`` that arrives after the response ended: "no active response")."""
    def benign(e: SentError) -> bool:
        return e.cause == "response.cancel" and is_benign(str(e.error.get("message", "")),
                                                            e.error.get("code"))

    return [e for e in sim.errors if not e.scripted and not benign(e)]


def assert_no_client_errors(sim: Simulator, context: str = "") -> None:
    """Fail with every offending error (and the client event it answers) if there is one."""
    errors = client_errors(sim)
    assert not errors, "the simulator answered client events with errors:\n" + "\n".join(
        f"  {e.cause}: {e.error}" for e in errors) + (f"\n{context}" if context else "")


#: Variables a service manager sets for its service: a child started as a service (tests, the
#: benchmark, the soak) must not inherit the starter's own.
MANAGER_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "RUNTIME_DIRECTORY",
                "STATE_DIRECTORY", "EDGEVOICE_CONFIG")


class NotifyListener:
    """The service manager's end of ``$NOTIFY_SOCKET``, for the tests, the benchmark and the soak:
    a thread records every datagram as ``(time.monotonic() of arrival, {KEY: VALUE})``.
    Binds a filesystem socket at ``path``; :meth:`close` stops the thread within 2 s."""

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


def assert_demo_timeline(stdout: str, wav: Path) -> None:
    """What ``edgevoice demo --json`` must show for the bundled recording and script, and
    the reply WAV it wrote (the demo's whole story: wake word, push-to-talk, tool call,
    barge-in, states, usage)."""
    import wave

    import numpy as np

    from edgevoice.conversation.telemetry import TelemetryName

    entries = [json.loads(line) for line in stdout.splitlines()]
    names = [e["event"] for e in entries]
    times = [e["t_ms"] for e in entries]
    assert times == sorted(times)

    # The wake word; the first turn answered, then idle, then the second conversation,
    # started by the demo's virtual push-to-talk button.
    assert names.count(TelemetryName.WAKE) == 1, names
    first_idle = names.index(TelemetryName.IDLE)
    assert names.index(TelemetryName.WAKE) < names.index(TelemetryName.FIRST_REPLY_AUDIO) < first_idle
    assert names.count(TelemetryName.PUSH_TO_TALK) == 1, names
    press = entries[names.index(TelemetryName.PUSH_TO_TALK)]
    assert press["source"] == "demo button" and first_idle < names.index(TelemetryName.PUSH_TO_TALK)
    # The feedback states, in order: each conversation listens, thinks, speaks, and the
    # second one (after the press) is the one that calls the tool.
    states = [e["state"] for e in entries if e["event"] == TelemetryName.STATE]
    assert states[:5] == ["listening", "thinking", "speaking", "listening", "idle"], states
    assert states[5:8] == ["listening", "thinking", "speaking"], states
    assert states[-1] == "idle"
    second = [e["state"] for e in entries[names.index(TelemetryName.PUSH_TO_TALK):]
              if e["event"] == TelemetryName.STATE]
    assert second[0] == "listening" and "speaking" in second
    # The request calls the tool; without a declared tool the model gets an error output and
    # speaks on (the reply after the tool output is what the user interrupts).
    call = entries[names.index(TelemetryName.TOOL_CALL)]
    assert call["name"] == "set_light"
    barge = entries[names.index(TelemetryName.BARGE_IN)]
    assert barge["by"] == "local speech" and barge["t_ms"] > call["t_ms"]
    truncate = entries[names.index(TelemetryName.TRUNCATE)]
    assert truncate["audio_end_ms"] > 500
    assert TelemetryName.SERVICE_ERROR not in names, [e for e in entries if e["event"] == TelemetryName.SERVICE_ERROR]
    # The interruption is the user's next turn, answered; the demo ends idle.
    said = [e["text"] for e in entries if e["event"] == TelemetryName.USER_SAID]
    assert len(said) == 3 and "Stop" in said[-1]
    assert names[-1] == "wrote" and names[-2] == "usage" and TelemetryName.IDLE in names[-4:]

    with wave.open(str(wav)) as w:
        assert w.getframerate() == 24000 and w.getnchannels() == 1
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    voiced_s = np.count_nonzero(np.abs(audio) > 300) / 24000
    assert voiced_s > 5.0  # three spoken replies (one cut short) and two chimes (wake, button)


