"""Benchmark of the whole daemon in conversation: the ``conversation`` section of
``scripts/bench``.

The real :class:`~edgevoice.daemon.Daemon` runs on the demo's virtual sound card (FIFO-paced ALSA
``file`` PCMs: the microphone and the speaker run at the device clock, in real time) against
the loopback simulator (replies paced in real time). Figures:

* ``bargein.latency_ms_p50`` / ``_p95`` — from the onset of the user's speech in the
  microphone audio (the first sample above -36 dBFS of the interrupting speech; its capture
  time is the one the capture module stamps on the frame) to the playback going silent (the
  first playback callback after the speaker was paused: ``Playback.stop_latencies``), over
  ``trials`` interruptions of a playing reply.
* ``wake_to_send_ms_cold`` — wake word detected → first audio written to the socket, with no
  connection open (the connection is made after the wake word); ``wake_to_send_ms_warm`` —
  the same with the connection kept open from the previous conversation (median).
* ``first_delta_to_device_ms`` — first reply audio delta received → its first audio handed
  to the device (median over all replies).
* ``bargein.false_triggers`` — barge-ins while only the assistant's own echo (the speaker's
  output fed back 6 dB down, 60 ms late) was in the microphone; ``bargein.false_pauses``
  counts the shorter speaker pauses of the same trials.

The ``upstream`` section (:func:`run_upstream`) runs one realistic dialog the same way, on the
default configuration: a wake word, a hesitation, a question with a pause inside it; a
follow-up question after the reply; after the follow-up window, the wake word and a request
again. The daemon counts, per turn, the audio bytes it sent upstream and those it would have
sent without the local VAD gate (every captured frame from the end of the wake word until the
reply's ``response.done``: :class:`~edgevoice.daemon.TurnFigures`), so both figures come from the
same audio. ``upstream.bytes_ratio`` is sent ÷ ungated over the dialog;
``upstream.uncounted_bytes`` is what the simulator received beyond what the daemon counted
(0, else the count is wrong). The simulator streams replies in real time, so ``response.done``
comes when the reply has been streamed; a service that streams faster than real time ends
the ungated stream sooner, which makes the ratio larger.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgevoice.audio.convert import read_wav, resample
from edgevoice.config import Config
from edgevoice.conversation.core import State
from edgevoice.conversation.telemetry import Telemetry, TelemetryName
from edgevoice.daemon import Daemon
from edgevoice.devkit.demo import Rig, running_daemon
from edgevoice.devkit.simulator import Simulator
from edgevoice.devkit.simulator.script import Script
from edgevoice.devkit.virtual import EchoPath
from edgevoice.util import data_path

TARGETS: list[tuple[str, str, float]] = [
    ("bargein.latency_ms_p50", "<=", 150.0),
    ("bargein.latency_ms_p95", "<=", 250.0),
    ("wake_to_send_ms_warm", "<=", 30.0),
    ("first_delta_to_device_ms", "<=", 20.0),
    ("bargein.false_triggers", "==", 0),
]

UPSTREAM_TARGETS: list[tuple[str, str, float]] = [
    ("upstream.bytes_ratio", "<=", 0.6),
    ("upstream.uncounted_bytes", "==", 0),
]

LONG = ("Here is a long answer, so that there is time to interrupt it: the morning will be "
        "sunny, the afternoon cloudy and the evening wet, with a cool wind from the west.")
MEDIUM = "You can say hey jarvis whenever you need me. Hey jarvis is my name."
ONSET_LEVEL = 500  # about -36 dBFS


def _clip(name: str) -> bytes:
    pcm, rate = read_wav(data_path(name))
    assert rate == 16000
    return pcm


def _silence(seconds: float) -> bytes:
    return bytes(int(seconds * 16000) * 2)


def _percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


class _Session:
    """One daemon + simulator + virtual sound card, with the hooks the figures need."""

    def __init__(self, rig: Rig, daemon: Daemon, timeline: list[Telemetry],
                 simulator: Simulator | None = None) -> None:
        self.rig = rig
        self.daemon = daemon
        self.timeline = timeline
        self.simulator = simulator
        self.pauses: list[float] = []  # monotonic times the speaker was told to go silent
        self.onsets: list[float] = []
        self._watch_onset = False
        pause, stop = daemon.playback.pause, daemon.playback.stop

        def timed(fn: Callable[[], Any]) -> Callable[[], Any]:
            def call() -> Any:
                if not daemon.playback.paused:
                    self.pauses.append(time.monotonic())
                return fn()
            return call

        daemon.playback.pause = timed(pause)  # type: ignore[method-assign]
        daemon.playback.stop = timed(stop)  # type: ignore[method-assign]
        on_frame = daemon.capture.on_frame

        def frame(pcm: bytes, t: float) -> None:
            if self._watch_onset:
                x = np.abs(np.frombuffer(pcm, "<i2").astype(np.int32))
                loud = np.flatnonzero(x > ONSET_LEVEL)
                if loud.size:
                    self.onsets.append(t + loud[0] / 16000)
                    self._watch_onset = False
            on_frame(pcm, t)

        daemon.capture.on_frame = frame

    def count(self, name: TelemetryName) -> int:
        return sum(1 for e in self.timeline if e.name == name)

    async def wait(self, name: TelemetryName, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count(name) < count:
            if time.monotonic() > deadline:
                seen = ", ".join(e.name for e in self.timeline[-12:])
                raise TimeoutError(f"no {name!r} #{count}; last events: {seen}")
            await asyncio.sleep(0.01)

    async def idle(self, timeout: float = 30.0) -> None:
        await self.reach(State.IDLE, timeout)

    async def reach(self, state: State, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.daemon.core.state is not state:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not {state.value}")
            await asyncio.sleep(0.02)

    def interrupt(self, pcm: bytes) -> None:
        self._watch_onset = True
        self.rig.mic.feed(pcm)


async def _with_daemon(script: dict[str, Any], body: Callable[[_Session], Any], *,
                       echo: EchoPath | None = None, **sections: Any) -> Any:
    timeline: list[Telemetry] = []
    with tempfile.TemporaryDirectory(prefix="edgevoice-bench-") as tmp:
        async with running_daemon(Config.model_validate(sections), Path(tmp),
                                  script=Script.from_dict(script), echo=echo,
                                  on_telemetry=timeline.append, strict=True) as run:
            return await body(_Session(run.rig, run.daemon, timeline, run.simulator))


async def _bargein_and_wake(trials: int, warm_trials: int) -> dict[str, Any]:
    wake, question, stop = _clip("demo/wake.wav"), _clip("question.wav"), _clip("demo/stop.wav")
    turns = [{"say": LONG}] * trials + [{"say": "Okay."}] * (warm_trials + 1)

    async def body(s: _Session) -> dict[str, Any]:
        s.rig.mic.feed(_silence(1.0) + wake + question + _silence(1.0))
        latencies: list[float] = []
        for i in range(trials):
            await s.wait(TelemetryName.FIRST_REPLY_AUDIO, i + 1)
            await asyncio.sleep(1.0)
            first_stop = len(s.daemon.playback.stop_latencies)
            pauses = len(s.pauses)
            s.interrupt(stop + _silence(0.8))
            await s.wait(TelemetryName.BARGE_IN, i + 1)
            while (len(s.daemon.playback.stop_latencies) <= first_stop
                   or len(s.onsets) <= i):
                await asyncio.sleep(0.01)
            silent_at = s.pauses[pauses] + s.daemon.playback.stop_latencies[first_stop]
            latencies.append((silent_at - s.onsets[i]) * 1000)
        cold = s.daemon.turns[0].wake_to_send_ms
        warm: list[float] = []
        for _ in range(warm_trials):
            await s.idle()
            before = len(s.daemon.turns)
            s.rig.mic.feed(_silence(1.0) + wake + question + _silence(1.0))
            await s.wait(TelemetryName.WAKE, s.count(TelemetryName.WAKE) + 1)
            while len(s.daemon.turns) <= before or s.daemon.turns[-1].wake_to_send_ms is None:
                await asyncio.sleep(0.01)
            warm.append(s.daemon.turns[-1].wake_to_send_ms or float("nan"))
            await s.wait(TelemetryName.REPLY_DONE, s.count(TelemetryName.REPLY_DONE) + 1)
        deltas = [t.first_delta_to_device_ms for t in s.daemon.turns
                  if t.first_delta_to_device_ms is not None]
        return {
            "bargein.trials": len(latencies),
            "bargein.latency_ms_p50": _percentile(latencies, 50),
            "bargein.latency_ms_p95": _percentile(latencies, 95),
            "bargein.latency_ms_max": round(max(latencies), 1),
            "wake_to_send_ms_cold": round(cold, 1) if cold is not None else None,
            "wake_to_send_ms_warm": round(statistics.median(warm), 1),
            "first_delta_to_device_ms": round(statistics.median(deltas), 1),
            "first_delta_to_device_ms_max": round(max(deltas), 1),
            "playback.underruns": s.daemon.playback.underruns,
        }

    return await _with_daemon({"turn": turns, "default_say": "Okay."}, body,
                              conversation={"follow_up_s": 1.0})


async def _echo_only(trials: int) -> dict[str, Any]:
    wake, question = _clip("demo/wake.wav"), _clip("question.wav")

    async def body(s: _Session) -> dict[str, Any]:
        for i in range(trials):
            await s.idle()
            s.rig.mic.feed(_silence(1.0) + wake + question + _silence(1.0))
            await s.wait(TelemetryName.REPLY_DONE, i + 1, timeout=40)
        await s.idle()
        return {"bargein.echo_trials": trials,
                "bargein.false_triggers": s.count(TelemetryName.BARGE_IN),
                "bargein.false_pauses": s.count(TelemetryName.SPEAKER_PAUSED),
                "bargein.false_wakes": s.count(TelemetryName.WAKE) - trials}

    return await _with_daemon({"default_say": MEDIUM}, body,
                              echo=EchoPath(gain_db=-6.0, delay_ms=60),
                              conversation={"follow_up_s": 1.0})


def run_conversation(trials: int = 20, warm_trials: int = 5, echo_trials: int = 5
                     ) -> dict[str, Any]:
    """Run both parts (a few minutes of real-time audio) and return the figures."""
    values = asyncio.run(_bargein_and_wake(trials, warm_trials))
    values.update(asyncio.run(_echo_only(echo_trials)))
    return values


# ---------------------------------------------------------------------------- upstream bytes

#: The dialog's replies, turn by turn (lengths of real answers: a few seconds each).
DIALOG_REPLIES = (
    "Tomorrow in Paris will be sunny in the morning and cloudy later, with a high of twenty "
    "one degrees.",
    "The weekend looks dry and a little warmer, good weather for a walk.",
    "The kitchen light is on.",
)


def _espeak(text: str) -> bytes:
    """espeak-ng speech for ``text`` as 16 kHz PCM16, without leading or trailing silence.
    Raises RuntimeError without espeak-ng (scripts/setup installs it)."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (scripts/setup installs it)")
    with tempfile.TemporaryDirectory(prefix="edgevoice-bench-") as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True,
                       capture_output=True, timeout=30)
        pcm, rate = read_wav(wav)
    pcm = resample(pcm, rate, 16000)
    # espeak-ng pads its output with silence: cut it, so that the dialog's pauses are exact.
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, "<i2").astype(np.int32)) > ONSET_LEVEL)
    return pcm[2 * int(loud[0]): 2 * int(loud[-1] + 1)] if loud.size else pcm


def _dialog() -> list[bytes]:
    """What the user says in each turn, with natural pauses (16 kHz PCM16)."""
    wake = _clip("demo/wake.wav")
    return [
        # The wake word, a hesitation longer than the gate's tail, a question with a pause.
        _silence(1.0) + wake + _silence(1.2) + _espeak("what's the weather like")
        + _silence(0.3) + _espeak("in Paris tomorrow?"),
        # After the reply: a moment's thought, then a follow-up without the wake word.
        _silence(1.5) + _espeak("and what about the weekend?"),
        # Later, after the follow-up window: the wake word and a request.
        _silence(1.0) + wake + _silence(0.5) + _clip("demo/light.wav"),
    ]


async def _upstream_dialog() -> dict[str, Any]:
    said = _dialog()

    async def body(s: _Session) -> dict[str, Any]:
        for i, pcm in enumerate(said):
            # A follow-up once the reply has played; the others once the window is over.
            await s.reach(State.FOLLOW_UP if i == 1 else State.IDLE, timeout=40)
            s.rig.mic.feed(pcm)
            await s.wait(TelemetryName.REPLY_DONE, i + 1, timeout=40)
        turns = list(s.daemon.turns)
        if len(turns) != len(said) or s.daemon.errors:
            seen = ", ".join(e.name for e in s.timeline)
            raise RuntimeError(f"the dialog went wrong: {len(turns)} turns, "
                               f"{s.daemon.errors} errors; events: {seen}")
        sent = [t.upstream_bytes for t in turns]
        ungated = [t.ungated_bytes for t in turns]
        await asyncio.sleep(0.2)  # nothing is in flight after a reply; be sure of it
        if s.simulator is None:
            raise RuntimeError("the dialog needs the in-process simulator")
        received = len(s.simulator.appended_audio)
        return {
            "upstream.bytes_ratio": round(sum(sent) / sum(ungated), 3),
            "upstream.turns": len(turns),
            "upstream.bytes_per_turn": sent,
            "upstream.ungated_bytes_per_turn": ungated,
            "upstream.uncounted_bytes": received - sum(sent),
        }

    script = {"turn": [{"say": text} for text in DIALOG_REPLIES]}
    return await _with_daemon(script, body)


def run_upstream() -> dict[str, Any]:
    """Run the dialog (about half a minute of real-time audio) and return the figures."""
    return asyncio.run(_upstream_dialog())
