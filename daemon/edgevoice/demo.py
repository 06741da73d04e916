"""``edgevoice demo``: the whole daemon on a virtual sound card, talking to the simulator.

It runs the same :class:`~edgevoice.app.Daemon` as ``edgevoice run``, on the embedded defaults,
with two differences only: the sound card is virtual (the bundled ALSA config
``data/demo-asound.conf``: ``file``-plugin PCMs on FIFOs paced in real time, see
:class:`Rig`) and, without ``--endpoint``, Voice Live is the loopback simulator in-process
(127.0.0.1, a random port and API key) with the matching script ``data/demo-script.toml``.

The microphone plays the demo recording (:data:`RECORDING`): "hey jarvis", a question, a pause
long enough for the reply and the follow-up window, "hey jarvis" again, a request that makes
the model call a tool, and an interruption during the spoken reply. The speaker's output is
written to a WAV. The timeline (ms since start) shows the wake word, speech start and end,
first reply audio, the barge-in with the truncated milliseconds, the tool call and the return
to idle; ``--json`` prints one JSON object per line instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets as _random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from edgevoice.app import Daemon, ToolRunner, data_path
from edgevoice.audio.convert import read_wav, resample, write_wav
from edgevoice.audio.virtual import SYSTEM_ALSA_CONF, EchoPath, FifoSink, FifoSource
from edgevoice.config import Config
from edgevoice.conversation import core as c
from edgevoice.secrets import Secret
from edgevoice.voicelive.auth import make_auth
from edgevoice.voicelive.script import Script
from edgevoice.voicelive.simulator import Simulator

MIC_RATE = 16000
SPEAKER_RATE = 24000

#: The demo recording: (silence before, clip) in order; clips are 16 kHz WAVs in data/.
RECORDING: tuple[tuple[float, str], ...] = (
    (1.0, "demo/wake.wav"),
    (0.3, "question.wav"),
    (13.0, "demo/wake.wav"),  # the reply (~5 s) and the follow-up window (6 s) pass
    (0.3, "demo/light.wav"),
    (3.6, "demo/stop.wav"),  # into the reply that follows the tool call
)


def recording_pcm(plan: tuple[tuple[float, str], ...] = RECORDING) -> tuple[bytes, list[float]]:
    """The recording as 16 kHz PCM16 and the start time (s) of each clip."""
    out = bytearray()
    starts: list[float] = []
    for gap, name in plan:
        out += bytes(int(gap * MIC_RATE) * 2)
        starts.append(len(out) / 2 / MIC_RATE)
        pcm, rate = read_wav(data_path(name))
        out += pcm if rate == MIC_RATE else resample(pcm, rate, MIC_RATE)
    return bytes(out), starts


class Rig:
    """A virtual microphone and speaker from the bundled ALSA config, paced in real time.

    Entering creates the FIFOs and their pacers (before any ``PyAudio()``, see
    :mod:`edgevoice.audio.virtual`) and points ALSA at the config; leaving closes them and
    restores the environment. ``mic.feed(pcm)`` plays 16 kHz audio into the microphone
    (silence otherwise); ``speaker_pcm()`` is what the speaker played (24 kHz). With
    ``echo``, the speaker's output also comes back into the microphone (a room).
    """

    def __init__(self, directory: str | Path, *, echo: EchoPath | None = None,
                 speed: float = 1.0) -> None:
        self.directory = Path(directory)
        self.echo = echo
        self.speed = speed
        self.mic: FifoSource
        self.speaker: FifoSink
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> Rig:
        self.directory.mkdir(parents=True, exist_ok=True)
        echo = self.echo
        self.mic = FifoSource(self.directory / "mic.fifo", MIC_RATE, speed=self.speed,
                              mix=echo.take if echo else None)
        self.speaker = FifoSink(self.directory / "speaker.fifo", SPEAKER_RATE, speed=self.speed,
                                on_read=echo.heard if echo else None)
        text = data_path("demo-asound.conf").read_text()
        conf = self.directory / "asound.conf"
        conf.write_text(text.replace("@MIC@", str(self.mic.path))
                        .replace("@SPEAKER@", str(self.speaker.path)))
        env = {"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{conf}", "JACK_NO_START_SERVER": "1"}
        self._saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        return self

    def __exit__(self, *exc: object) -> None:
        self.mic.close()
        self.speaker.close(drain=0.05)
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def speaker_pcm(self) -> bytes:
        return self.speaker.data()


@dataclass
class Timeline:
    """Prints timeline entries as they happen (ms since ``t0``), text or JSON lines."""

    out: TextIO
    as_json: bool
    t0: float = field(default_factory=time.monotonic)
    entries: list[dict[str, Any]] = field(default_factory=list)

    def mark(self, event: str, t: float | None = None, **details: Any) -> None:
        when = time.monotonic() if t is None else t
        entry = {"t_ms": round((when - self.t0) * 1000), "event": event, **details}
        self.entries.append(entry)
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


QUIET = {"tool output", "playback stopped"}  # shown through their neighbours


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="edgevoice-demo-") as tmp:
        yield Path(tmp)


async def run_demo(
    cfg: Config,
    *,
    out: TextIO,
    as_json: bool = False,
    endpoint: str | None = None,
    api_key: Secret | None = None,
    output: Path = Path("demo-reply.wav"),
    timeout_s: float = 90.0,
    tools: ToolRunner | None = None,
    workdir: Path | None = None,
) -> int:
    """Run the demo; returns the exit code: 0 when every turn of the recording was answered
    and the daemon went back to idle, 1 otherwise."""
    timeline = Timeline(out, as_json)
    simulator: Simulator | None = None
    vl = cfg.voicelive
    if endpoint is None:
        key = api_key or Secret(_random.token_urlsafe(24))
        simulator = Simulator(script=Script.load(data_path("demo-script.toml")),
                              api_key=key.reveal(), pace=1.0)
        await simulator.start()
        vl = vl.model_copy(update={"endpoint": simulator.url})
        api_key = key
        timeline.mark("simulator", url=simulator.url)
    else:
        vl = type(vl).model_validate({**vl.model_dump(exclude_unset=True), "endpoint": endpoint})
    cfg = cfg.model_copy(update={"voicelive": vl})
    pcm, starts = recording_pcm()
    status = 1
    try:
        with _workdir(workdir) as tmp, Rig(tmp) as rig:
            auth = make_auth(vl, api_key)
            daemon = Daemon(cfg, auth=auth, tools=tools, on_telemetry=timeline.telemetry,
                            on_state=lambda s: None)
            stop = asyncio.Event()
            task = asyncio.create_task(daemon.run(stop))
            try:
                await asyncio.wait_for(daemon.ready.wait(), 20)
                timeline.mark("listening", words=",".join(daemon.wake.detector.names))
                t_feed = time.monotonic()
                rig.mic.feed(pcm)
                for start, (_, name) in zip(starts, RECORDING, strict=True):
                    timeline.entries.append({"t_ms": round((t_feed + start - timeline.t0) * 1000),
                                             "event": "mic plays", "clip": name})
                status = await _wait_done(daemon, len(pcm) / 2 / MIC_RATE, t_feed, timeout_s)
            finally:
                stop.set()
                await task
                await auth.close()
            reply = rig.speaker_pcm()
    finally:
        if simulator is not None:
            await simulator.close()
    write_wav(output, reply, SPEAKER_RATE)
    timeline.mark("wrote", file=str(output), audio_ms=round(len(reply) / 2 / SPEAKER_RATE * 1000))
    if status:
        timeline.mark("incomplete", turns=len(daemon.turns), errors=daemon.errors)
    return status


async def _wait_done(daemon: Daemon, length_s: float, t_feed: float, timeout_s: float) -> int:
    """Wait until the recording has played and the daemon is idle again (or time out)."""
    deadline = t_feed + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        played = time.monotonic() - t_feed >= length_s
        if played and daemon.core.state is c.State.IDLE:
            return 0
    return 1
