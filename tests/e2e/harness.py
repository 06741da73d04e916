"""The harnesses of the end-to-end tests: the whole daemon, all real.

- :func:`running` runs the :class:`~edgevoice.daemon.Daemon` in-process on the virtual sound card
  (ALSA ``file`` PCMs on FIFOs paced in real time) against the loopback simulator on
  127.0.0.1, and yields a :class:`Harness` with the timeline of what the daemon did.
- :func:`service` runs ``edgevoice run`` as a child process on the same rig, with a notify
  socket and a status socket, and yields a :class:`Service`.

Both run the simulator in strict mode (every client event checked against the protocol's
field tables) and fail the test when it answered any client event with an error other than
the benign "no active response" to a cancel.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from edgevoice.audio.convert import read_wav
from edgevoice.config import Config
from edgevoice.conversation.core import Telemetry
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.daemon import Daemon
from edgevoice.devkit.demo import Rig, running_daemon
from edgevoice.devkit.simulator import Simulator
from edgevoice.devkit.simulator.script import Script
from edgevoice.devkit.virtual import EchoPath
from support import MANAGER_VARS, NotifyListener, assert_no_client_errors, stop_process, until

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "wake"
MS16 = 32  # bytes per ms at 16 kHz PCM16
MS24 = 48  # bytes per ms at 24 kHz PCM16
LONG_REPLY = ("Here is a long answer so that there is time to interrupt it. The weather will be "
              "sunny in the morning, cloudy at noon, and in the evening there may be showers, "
              "so take an umbrella and a warm coat if you go out tonight.")


def wake_word() -> bytes:
    pcm, rate = read_wav(FIXTURES / "jarvis_en-us.wav")
    assert rate == 16000
    second = bytes(2 * rate)  # the clips hold the speech only: 1 s of silence each side
    return second + pcm + second


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * 16000) * 2)


def onset(pcm: bytes, threshold: int = 300) -> int:
    """Byte offset of the first sample louder than ``threshold``."""
    x = np.abs(np.frombuffer(pcm, "<i2").astype(np.int32))
    return int(np.argmax(x > threshold)) * 2


@dataclass
class Harness:
    sim: Simulator
    rig: Rig
    daemon: Daemon
    timeline: list[Telemetry]

    def names(self) -> list[TelemetryName]:
        return [e.name for e in self.timeline]

    def entries(self, name: TelemetryName) -> list[Telemetry]:
        return [e for e in self.timeline if e.name == name]

    async def event(self, name: TelemetryName, count: int = 1, timeout: float = 20.0) -> Telemetry:
        try:
            await until(lambda: len(self.entries(name)) >= count, timeout, what=name)
        except AssertionError as exc:
            raise AssertionError(f"no '{name}' (#{count}) in:\n{self.dump()}") from exc
        return self.entries(name)[count - 1]

    def dump(self) -> str:
        t0 = self.timeline[0].t if self.timeline else 0.0
        return "\n".join(f"{e.t - t0:8.3f} {e.name} {e.fields}" for e in self.timeline)

    def say(self, pcm: bytes) -> int:
        """Play ``pcm`` into the microphone; returns the byte count to wait for."""
        self.rig.mic.feed(pcm)
        return self.rig.mic.written + len(pcm)

    def reply_audio(self, item_id: str) -> bytes:
        """The audio the simulator sent for ``item_id`` (24 kHz PCM16)."""
        return b"".join(base64.b64decode(e["delta"]) for e in self.sim.sent("response.audio.delta")
                        if e["item_id"] == item_id)


def reply_prefix_ms(reply: bytes, heard: bytes) -> int:
    """The longest prefix of ``reply`` (ms) whose audio is in ``heard``, in order (exact
    silence, which the playback inserts for a late packet, is ignored)."""
    heard = nonzero(heard)
    lo, hi = 0, len(reply) // MS24
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if nonzero(reply[: mid * MS24]) in heard:
            lo = mid
        else:
            hi = mid - 1
    return lo


def said(h: Harness) -> list[str]:
    """What the assistant said so far (the transcripts that came with its audio)."""
    return [e.fields["text"] for e in h.entries(TelemetryName.ASSISTANT_SAID)]


async def hear(h: Harness, text: str, timeout: float = 30.0) -> None:
    """Wait until the assistant said ``text``; the failure shows the timeline."""
    try:
        await until(lambda: text in said(h), timeout, what=f"the reply {text!r}")
    except AssertionError as exc:
        raise AssertionError(f"no reply {text!r} in:\n{h.dump()}") from exc


@contextlib.asynccontextmanager
async def running(tmp_path: Path, script: dict[str, Any], *, echo: EchoPath | None = None,
                  state_dir: Path | None = None,
                  **sections: Any) -> AsyncIterator[Harness]:
    timeline: list[Telemetry] = []
    async with running_daemon(Config.model_validate(sections), tmp_path / "rig",
                              script=Script.from_dict(script), echo=echo,
                              on_telemetry=timeline.append, strict=True,
                              state_dir=state_dir) as run:
        assert run.simulator is not None
        harness = Harness(run.simulator, run.rig, run.daemon, timeline)
        yield harness
    assert run.daemon.errors == 0
    assert_no_client_errors(run.simulator, harness.dump())


def nonzero(pcm: bytes) -> bytes:
    """The samples that are not exact digital silence: a gap the playback filled with silence
    (a late packet) does not hide whether the reply's audio came out in order."""
    x = np.frombuffer(pcm, "<i2")
    return x[x != 0].tobytes()


# -- edgevoice run as a child process ------------------------------------------------------

LISTENING = "listening for 'hey jarvis'"
WATCHDOG_USEC = 400_000  # systemd's WatchDogSec=0.4: the daemon pings every 0.2 s
START_TIMEOUT = 30.0  # process start-up, model loading and opening the devices


class DaemonExited(AssertionError):
    """The daemon exited while the test waited for it."""


@dataclass
class Service:
    """One ``edgevoice run`` child process and what the test sees of it."""

    proc: subprocess.Popen[str]
    notify: NotifyListener
    sim: Simulator
    rig: Rig
    config: Path
    status_socket: Path
    env: dict[str, str]
    lines: list[str]
    reader: threading.Thread  # collects ``lines`` until the child's stderr closes
    #: What :meth:`write_config` writes unless told otherwise (``service()``'s own settings).
    defaults: dict[str, Any] = field(default_factory=dict)

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
        write_config(self.config, self.sim.url, self.status_socket,
                     **{**self.defaults, **values})

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
        await asyncio.to_thread(self.reader.join, 5)  # every stderr line is in
        await until(lambda: self.notify.find("STOPPING", "1", mark) is not None, 2,
                    "STOPPING=1 taken by the notify listener")
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
async def service(script: dict[str, Any], *, mic_paused: bool = False, extra: str = "",
                  follow_up_s: float = 1.0,
                  state_dir: Path | None = None) -> AsyncIterator[Service]:
    """The simulator, the virtual sound card, the notify socket and ``edgevoice run`` on them.
    With ``mic_paused`` the microphone delivers nothing until ``rig.mic.resume()``. ``extra``
    is appended to the config file (e.g. ``[[tools]]``), also by ``Service.write_config``;
    ``state_dir`` is passed as systemd's ``STATE_DIRECTORY`` (the tools' call record)."""
    # Not tmp_path: unix socket paths must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="ev-svc-", dir="/tmp"))
    key = secrets.token_urlsafe(16)
    sim = Simulator(script=Script.from_dict(script), api_key=key, pace=1.0, strict=True)
    await sim.start()
    notify = NotifyListener(root / "notify")
    try:
        with Rig(root / "rig") as rig:
            if mic_paused:
                rig.mute_microphone()
            config = root / "edgevoice.toml"
            status_socket = root / "status.sock"
            defaults: dict[str, Any] = {"extra": extra, "follow_up_s": follow_up_s}
            write_config(config, sim.url, status_socket, **defaults)
            env = {k: v for k, v in os.environ.items() if k not in MANAGER_VARS}
            env.update({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(WATCHDOG_USEC),
                        "VOICELIVE_API_KEY": key,
                        "ALSA_CONFIG_PATH": os.environ["ALSA_CONFIG_PATH"],
                        "PYTHONPATH": os.pathsep.join(sys.path)})
            if state_dir is not None:
                env["STATE_DIRECTORY"] = str(state_dir)
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
                svc = Service(proc, notify, sim, rig, config, status_socket, cli_env, lines,
                              reader, defaults)
                yield svc
                assert_no_client_errors(sim, svc.explain())
            finally:
                stop_process(proc)
                reader.join(2)
    finally:
        notify.close()
        await sim.close()
        shutil.rmtree(root, ignore_errors=True)
