"""``edgevoice demo``: the whole daemon on a virtual sound card, talking to the simulator.

It runs the same :class:`~edgevoice.daemon.Daemon` as ``edgevoice run``, on the embedded defaults,
with two differences only: the sound card is virtual (the bundled ALSA config
``data/demo-asound.conf``: ``file``-plugin PCMs on FIFOs paced in real time, see
:class:`Rig`) and, without ``--endpoint``, Voice Live is the loopback simulator in-process
(127.0.0.1, a random port and API key, strict mode) with the matching script
``data/demo-script.toml``.

The microphone plays the demo recording (:data:`RECORDING`): "hey jarvis", a question, a pause
long enough for the reply and the follow-up window, then a press of a virtual push-to-talk
button (:data:`BUTTON`, at its place in the recording; :meth:`Daemon.press` is what a GPIO
button or an input key reports), a request that makes the model call a tool, and an
interruption during the spoken reply. The speaker's output is written to a WAV. The timeline
(ms since start) shows the wake word, the button press, speech start and end, first reply
audio, the barge-in with the truncated milliseconds, the tool call, the return to idle and
the sequence of feedback states (``state``: listening, thinking, speaking, …), and at the
end the tokens the replies used (``usage``: the totals since start and the replies by
status); ``--json`` prints one JSON object per line instead.

``--offline`` runs the demo with no service reachable (the endpoint is a local port nobody
listens on) and :data:`OFFLINE_RECORDING`: "hey jarvis", then "turn on the kitchen light",
which the local recogniser understands from the sentences of the demo's own tool
(:data:`OFFLINE_TOOL`, which only prints what it would switch); the timeline shows the wake
word, the recognised command, the tool call with its arguments and the answer said on the
device. It exits 0 only when that command ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets as _random
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from edgevoice.audio.convert import read_wav, resample, write_wav
from edgevoice.audio.devices import pa_lock
from edgevoice.config import Config, ToolConfig
from edgevoice.conversation import core as c
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.daemon import Daemon
from edgevoice.devkit.simulator import Simulator
from edgevoice.devkit.simulator.script import Script
from edgevoice.devkit.virtual import EchoPath, FifoSink, FifoSource, alsa_env, environment
from edgevoice.link.auth import make_auth
from edgevoice.secrets import Secret
from edgevoice.util import data_path

MIC_RATE = 16000
SPEAKER_RATE = 24000

#: In :data:`RECORDING`: a press (and release, :data:`BUTTON_HOLD_S` later) of the virtual
#: push-to-talk button instead of a clip.
BUTTON = "button"
BUTTON_HOLD_S = 0.2

#: The demo recording: (silence before, clip) in order; clips are 16 kHz WAVs in data/.
RECORDING: tuple[tuple[float, str], ...] = (
    (1.0, "demo/wake.wav"),
    (0.3, "question.wav"),
    (14.0, BUTTON),  # the reply (~5 s) and the follow-up window (6 s) pass
    (0.3, "demo/light.wav"),
    (3.6, "demo/stop.wav"),  # into the reply that follows the tool call
)


#: The offline demo's recording (see the module docs).
OFFLINE_RECORDING: tuple[tuple[float, str], ...] = (
    (1.0, "demo/wake.wav"),
    (0.3, "demo/offline-light.wav"),
)

#: The offline demo's tool: harmless (it prints what it would switch), with sentences.
OFFLINE_TOOL: dict[str, Any] = {
    "name": "set_light",
    "description": "Switch a room's light on or off (the demo prints what it would do).",
    "parameters": {"type": "object", "required": ["room", "state"], "properties": {
        "room": {"type": "string", "enum": ["kitchen", "hall", "bedroom"]},
        "state": {"type": "string", "enum": ["on", "off"]}}},
    "command": {"argv": ["/bin/echo", "{room}", "light", "{state}"]},
    "sentences": ["turn {state} [the] {room} light[s]", "turn [the] {room} light[s] {state}",
                  "switch [the] {room} light[s] {state}"],
    "slots": {"state": ["on", "off"], "room": ["kitchen", "hall", "bedroom"]},
    "offline_reply": "The {room} light is {state}.",
}


def with_endpoint(cfg: Config, endpoint: str) -> Config:
    """``cfg`` talking to ``endpoint`` (checked as the config checks it)."""
    vl = cfg.voicelive
    vl = type(vl).model_validate({**vl.model_dump(exclude_unset=True), "endpoint": endpoint})
    return cfg.model_copy(update={"voicelive": vl})


def offline_config(cfg: Config, endpoint: str) -> Config:
    """``cfg`` for the offline demo: only :data:`OFFLINE_TOOL`, offline commands on, and
    ``endpoint`` (where no service answers)."""
    conv = cfg.conversation.model_copy(update={"offline": "auto"})
    return with_endpoint(cfg, endpoint).model_copy(update={
        "tools": [ToolConfig.model_validate(OFFLINE_TOOL)], "conversation": conv})


def recording_pcm(plan: tuple[tuple[float, str], ...] = RECORDING) -> bytes:
    """The recording as 16 kHz PCM16 (a button press takes no audio)."""
    out = bytearray()
    for gap, name in plan:
        out += bytes(int(gap * MIC_RATE) * 2)
        if name == BUTTON:
            continue
        pcm, rate = read_wav(data_path(name))
        out += resample(pcm, rate, MIC_RATE)
    return bytes(out)


def button_presses(plan: tuple[tuple[float, str], ...] = RECORDING) -> list[float]:
    """When the button is pressed, in seconds from the start of the recording."""
    at, presses = 0, []
    for gap, name in plan:
        at += int(gap * MIC_RATE) * 2
        if name == BUTTON:
            presses.append(at / 2 / MIC_RATE)
        else:
            pcm, rate = read_wav(data_path(name))
            at += len(resample(pcm, rate, MIC_RATE))
    return presses


class Rig:
    """A virtual microphone and speaker from the bundled ALSA config, paced in real time.

    Entering creates the FIFOs and their pacers (before any ``PyAudio()``, see
    :mod:`edgevoice.devkit.virtual`) and points ALSA at the config; leaving closes them and
    restores the environment. ``mic.feed(pcm)`` plays 16 kHz audio into the microphone
    (silence otherwise); ``speaker_pcm()`` is what the speaker played (24 kHz). With
    ``echo``, the speaker's output also comes back into the microphone (a room).

    ``speed`` runs both device clocks at that multiple of real time (the soak's accelerated
    turns); ``keep_speaker_s`` bounds what ``speaker_pcm()`` keeps to the last that many
    seconds of audio; ``on_speaker(chunk)`` sees every chunk the speaker played, on the
    speaker's thread. The defaults are the real-time, keep-everything rig.
    """

    def __init__(self, directory: str | Path, *, echo: EchoPath | None = None,
                 speed: float = 1.0, keep_speaker_s: float | None = None,
                 on_speaker: Callable[[bytes], None] | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.directory = Path(directory)
        self.echo = echo
        self.speed = speed
        self.keep_speaker_s = keep_speaker_s
        self.on_speaker = on_speaker
        self.mic: FifoSource
        self.speaker: FifoSink
        self.alsa_config = self.directory / "asound.conf"
        self._env = contextlib.ExitStack()

    def __enter__(self) -> Rig:
        self.directory.mkdir(parents=True, exist_ok=True)
        echo, hook = self.echo, self.on_speaker

        def heard(chunk: bytes) -> None:
            if echo is not None:
                echo.heard(chunk)
            if hook is not None:
                hook(chunk)

        keep = None if self.keep_speaker_s is None else int(self.keep_speaker_s * SPEAKER_RATE) * 2
        self.mic = FifoSource(self.directory / "mic.fifo", MIC_RATE, speed=self.speed,
                              mix=echo.take if echo else None)
        self.speaker = FifoSink(self.directory / "speaker.fifo", SPEAKER_RATE, speed=self.speed,
                                on_read=heard if echo or hook else None, keep_bytes=keep)
        self.alsa_config.write_text(self.alsa_text())
        self._env.enter_context(environment(alsa_env(self.alsa_config)))
        return self

    def alsa_text(self, *, microphone: bool = True, speaker: bool = True) -> str:
        """The rig's ALSA config; without ``microphone`` / ``speaker`` that PCM is left out (an
        unplugged device: opening it fails until the full config is written back)."""
        text = data_path("demo-asound.conf").read_text()
        text = text.replace("@MIC@", str(self.mic.path)).replace("@SPEAKER@",
                                                                 str(self.speaker.path))
        gone = [f"pcm.{name} " for name, present in (("edgevoice_mic", microphone),
                                                     ("edgevoice_speaker", speaker))
                if not present]
        return "\n".join(line for line in text.splitlines()
                         if not line.startswith(tuple(gone))) + "\n"

    def set_devices(self, *, microphone: bool = True, speaker: bool = True) -> None:
        """Unplug (False) or plug back (True) the microphone / speaker: the ALSA config is
        rewritten and renamed into place (a new inode: ALSA reads it again at the next open).
        Done under the device layer's lock, as a real device appears at once: a reopen in
        this process must not try some formats against the old config and the rest against
        the new one."""
        tmp = self.alsa_config.with_name(self.alsa_config.name + ".new")
        tmp.write_text(self.alsa_text(microphone=microphone, speaker=speaker))
        with pa_lock():
            os.replace(tmp, self.alsa_config)

    def mute_microphone(self) -> None:
        """The microphone delivers nothing at all, as a hung device, until ``mic.resume()``.
        Blocks 0.1 s: a chunk taken before the pause is written within one period."""
        self.mic.pause()
        time.sleep(0.1)
        self.mic.discard_queued()

    def __exit__(self, *exc: object) -> None:
        self.mic.close()
        self.speaker.close(drain=0.05)
        self._env.close()

    def speaker_pcm(self) -> bytes:
        return self.speaker.data()


@dataclass
class Timeline:
    """Prints timeline entries as they happen (ms since ``t0``), text or JSON lines."""

    out: TextIO
    as_json: bool
    t0: float = field(default_factory=time.monotonic)

    def mark(self, event: str, t: float | None = None, **details: Any) -> None:
        when = time.monotonic() if t is None else t
        entry = {"t_ms": round((when - self.t0) * 1000), "event": event, **details}
        if self.as_json:
            self.out.write(json.dumps(entry, default=str) + "\n")
        else:
            extra = "  ".join(f"{k}={v}" for k, v in details.items())
            self.out.write(f"{entry['t_ms']:>7} ms  {event:<24} {extra}".rstrip() + "\n")
        self.out.flush()

    def telemetry(self, entry: c.Telemetry) -> None:
        if entry.name in QUIET:
            return
        fields = dict(entry.fields)
        if not self.as_json:  # quote text with spaces so the columns stay readable
            fields = {k: json.dumps(v) if isinstance(v, str) and " " in v else v
                      for k, v in fields.items()}
        self.mark(entry.name, entry.t, **fields)


# Shown through their neighbours.
QUIET = frozenset({TelemetryName.TOOL_OUTPUT, TelemetryName.PLAYBACK_STOPPED})


@dataclass
class Running:
    """A daemon running on the virtual sound card (and the simulator it talks to, if any)."""

    daemon: Daemon
    rig: Rig
    simulator: Simulator | None


@contextlib.asynccontextmanager
async def running_daemon(
    cfg: Config,
    directory: Path,
    *,
    script: Script | None = None,
    api_key: Secret | None = None,
    echo: EchoPath | None = None,
    on_telemetry: Callable[[c.Telemetry], None] | None = None,
    ready_timeout_s: float = 20.0,
    strict: bool = False,
    state_dir: Path | None = None,
) -> AsyncIterator[Running]:
    """The :class:`Daemon` on a :class:`Rig` in ``directory``, listening when the block starts
    (raises TimeoutError otherwise), stopped and closed when it ends. With ``script`` it talks
    to an in-process simulator on 127.0.0.1 (its endpoint replaces the configured one; the API
    key is ``api_key`` or a random one; ``strict`` is the simulator's strict mode); else to
    ``cfg.voicelive`` with ``api_key``. ``state_dir``: the daemon's (tool records, token
    counts); None keeps nothing."""
    simulator: Simulator | None = None
    if script is not None:
        api_key = api_key or Secret(_random.token_urlsafe(24))
        simulator = Simulator(script=script, api_key=api_key.reveal(), pace=1.0, strict=strict)
        await simulator.start()
        vl = cfg.voicelive.model_copy(update={"endpoint": simulator.url})
        cfg = cfg.model_copy(update={"voicelive": vl})
    try:
        auth = make_auth(cfg.voicelive, api_key)
        try:
            with Rig(directory, echo=echo) as rig:
                daemon = Daemon(cfg, auth=auth, on_telemetry=on_telemetry, state_dir=state_dir)
                stop = asyncio.Event()
                task = asyncio.create_task(daemon.run(stop))
                try:
                    await asyncio.wait_for(daemon.ready.wait(), ready_timeout_s)
                    yield Running(daemon, rig, simulator)
                finally:
                    stop.set()
                    await task
        finally:
            await auth.close()
    finally:
        if simulator is not None:
            await simulator.close()


async def run_demo(
    cfg: Config,
    *,
    out: TextIO,
    as_json: bool = False,
    endpoint: str | None = None,
    api_key: Secret | None = None,
    output: Path = Path("demo-reply.wav"),
    timeout_s: float = 90.0,
    script_path: Path | None = None,
    offline: bool = False,
) -> int:
    """Run the demo; returns the exit code: 0 when the recording has played and the daemon
    went back to idle (``offline``: and the command was recognised and ran), 1 otherwise.
    ``script_path``: the simulator's script instead of the bundled one (the same recording
    is played: its turns should match it). Raises ValueError for a script that does not load
    (the message names the file and the key) and for an ``output`` whose folder cannot be
    created (a missing one is made)."""
    try:  # before anything runs: a reply WAV that cannot be written is no reason to wait
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--output {output}: cannot create its folder: {exc}") from None
    timeline = Timeline(out, as_json)
    script = None
    plan = RECORDING
    on_telemetry: Callable[[c.Telemetry], None] = timeline.telemetry
    ran_offline: list[c.Telemetry] = []
    # Offline: a port of ours that nobody listens on (connections are refused at once).
    closed_port = socket.socket() if offline else None
    if closed_port is not None:
        closed_port.bind(("127.0.0.1", 0))
        endpoint = f"ws://127.0.0.1:{closed_port.getsockname()[1]}"
        cfg = offline_config(cfg, endpoint)
        api_key = api_key or Secret(_random.token_urlsafe(24))
        plan = OFFLINE_RECORDING

        def note(entry: c.Telemetry) -> None:
            if entry.name is TelemetryName.TOOL_CALL and entry.fields.get("source") == "offline":
                ran_offline.append(entry)
            timeline.telemetry(entry)
        on_telemetry = note
    elif endpoint is None:
        script = Script.load(script_path or data_path("demo-script.toml"))
    else:
        cfg = with_endpoint(cfg, endpoint)
    pcm = recording_pcm(plan)
    try:
        with tempfile.TemporaryDirectory(prefix="edgevoice-demo-") as tmp:
            # Strict: a field of ours that the protocol does not know shows as a service
            # error.
            async with running_daemon(cfg, Path(tmp), script=script, api_key=api_key,
                                      on_telemetry=on_telemetry, strict=True) as run:
                if run.simulator is not None:
                    timeline.mark("simulator", url=run.simulator.url)
                if closed_port is not None:
                    timeline.mark("no service", endpoint=endpoint)
                    await _offline_ready(run.daemon, timeout_s)
                daemon = run.daemon
                timeline.mark("listening", words=",".join(daemon.wake_words))
                t_feed = time.monotonic()
                run.rig.mic.feed(pcm)
                buttons = asyncio.create_task(_press_buttons(daemon, t_feed, plan))
                try:
                    status = await _wait_done(daemon, len(pcm) / 2 / MIC_RATE, t_feed,
                                              timeout_s)
                finally:
                    buttons.cancel()
            reply = run.rig.speaker_pcm()
    finally:
        if closed_port is not None:
            closed_port.close()
    if closed_port is not None and not ran_offline:
        timeline.mark("no offline command ran", recogniser=daemon.offline_status)
        status = 1
    usage = daemon.metrics.status()["usage"]
    timeline.mark("usage", **usage["tokens"], replies=usage["replies"])
    write_wav(output, reply, SPEAKER_RATE)
    timeline.mark("wrote", file=str(output), audio_ms=round(len(reply) / 2 / SPEAKER_RATE * 1000))
    if status:
        timeline.mark("incomplete", turns=len(daemon.turns), errors=daemon.errors)
    return status


async def _offline_ready(daemon: Daemon, timeout_s: float) -> None:
    """Wait until the offline recogniser is loaded (it loads off the loop at start)."""
    deadline = time.monotonic() + timeout_s
    while daemon.offline_status == "loading" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _press_buttons(daemon: Daemon, t_feed: float,
                         plan: tuple[tuple[float, str], ...] = RECORDING) -> None:
    """The virtual push-to-talk button of the recording, pressed at its times."""
    for at in button_presses(plan):
        await asyncio.sleep(max(0.0, t_feed + at - time.monotonic()))
        daemon.press(True, "demo button")
        await asyncio.sleep(BUTTON_HOLD_S)
        daemon.press(False, "demo button")


async def _wait_done(daemon: Daemon, length_s: float, t_feed: float, timeout_s: float) -> int:
    """Wait until the recording has played and the daemon is idle again (or time out)."""
    deadline = t_feed + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        played = time.monotonic() - t_feed >= length_s
        if played and daemon.core.state is c.State.IDLE:
            return 0
    return 1
