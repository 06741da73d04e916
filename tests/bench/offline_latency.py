"""End of speech → tool through the conversation core, for the ``offline`` section.

Each command of the corpus (clean) goes frame by frame through a real :class:`Core` with the
daemon's upstream gate and local endpointer (``conversation.offline = "always"``, the
default VAD settings), as the microphone would deliver it after the wake word. When the core
asks for a recognition (early, at a pause, or at the endpointer's end of utterance), the
recogniser says what the audio so far was. It decodes as the daemon's recogniser process
does (:class:`~edgevoice.offline.worker.Listening`, fed each frame as the core hands it
over), on this machine, and its work queues up on the audio clock: one thing at a time, a
result handed back once the process is done with it and with all it was given before
(frames go on meanwhile, so speech that resumes voids an early result, as in the daemon).
The latency is from the end of the speech (the last sample above the microphone floor) to
the moment the core runs the tool. The pipe to the process is not in it (a request and its
reply take well under a millisecond).

The reference (``whole``): each request decodes the audio so far as a whole, as the daemon
did before it decoded while the user spoke.

Figures: the latencies (ms), whether each ended early, and right tool and arguments through
this path (early ends decide on part of the audio).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgevoice.config import Config
from edgevoice.conversation import core as c
from edgevoice.conversation.echo import EchoGuard
from edgevoice.daemon import core_settings
from edgevoice.listen import setup
from edgevoice.offline.recognizer import Command, OfflineRecognizer
from edgevoice.offline.worker import Listening

RATE = 16000
FRAME = 640  # 20 ms of PCM16
TAIL_S = 1.0  # silence after the utterance: room for the endpointer's end
SPEECH_LEVEL = 500  # above the bench's microphone floor (-70 dBFS), below any speech


@dataclass(frozen=True)
class Live:
    latency_ms: float | None  # None: no tool ran
    early: bool
    right: bool


def speech_end_s(pcm: bytes) -> float:
    x = np.abs(np.frombuffer(pcm, "<i2").astype(np.int32))
    loud = np.flatnonzero(x > SPEECH_LEVEL)
    return (int(loud[-1]) + 1) / RATE if loud.size else 0.0


def live_core(config: Config) -> c.Core:
    cfg = config.model_copy(update={"conversation": config.conversation.model_copy(
        update={"offline": "always"})})
    return c.Core(dataclasses.replace(core_settings(cfg, 0.0), earcon=False),
                  upstream=setup.upstream_gate(cfg), echo=EchoGuard(),
                  endpointer=setup.endpointer(cfg))


def run_live(config: Config, recognizer: OfflineRecognizer, pcm: bytes, tool: str,
             arguments: dict[str, Any], whole: bool = False) -> Live:
    """One utterance (see the module docs); ``whole``: the reference, each request decoding
    the audio so far as a whole (as the daemon did before it decoded while the user
    spoke)."""
    end = speech_end_s(pcm)
    pcm = pcm + bytes(int(TAIL_S * RATE) * 2)
    core = live_core(config)
    listening = Listening(recognizer)
    buffer = bytearray()  # for ``whole``
    busy_until = 0.0  # the recogniser's process works on what it was given until then
    waiting: list[tuple[float, c.Recognise, Any]] = []  # (ready at, request, result)

    def work(fn: Callable[[], Any], t: float) -> tuple[Any, float]:
        """``fn`` in the recogniser's process, given it at ``t``: the result, and when it
        is done (the process does one thing at a time)."""
        nonlocal busy_until
        started = time.perf_counter()
        result = fn()
        busy_until = max(busy_until, t) + time.perf_counter() - started
        return result, busy_until

    def act(actions: list[Any], t: float) -> list[c.RunTool]:
        nonlocal buffer
        runs = []
        for a in actions:
            if isinstance(a, c.LocalAudio):
                if whole:
                    buffer += a.pcm
                else:
                    work(functools.partial(listening.feed, a.pcm), t)
            elif isinstance(a, c.LocalReset):
                buffer = bytearray()
                listening.reset()
            elif isinstance(a, c.Recognise):
                if whole:
                    audio = bytes(buffer)
                    if a.early_at is None:
                        buffer = bytearray()
                    result, ready = work(functools.partial(recognizer.recognize, audio), t)
                else:
                    result, ready = work(listening.look if a.early_at is not None
                                         else listening.finish, t)
                waiting.append((ready, a, result))
            elif isinstance(a, c.RunTool):
                runs.append(a)
        return runs

    def ran(runs: list[c.RunTool], t: float, early: bool) -> Live | None:
        if not runs:
            return None
        command = last[0]
        right = command is not None and (command.tool, command.arguments) == (tool, arguments)
        return Live((t - end) * 1000, early, right)

    last: list[Any] = [None]  # the last command recognised (its result)
    act(core.on_wake("bench", 1.0, 0.0, word_end=0.0), 0.0)
    for i in range(0, len(pcm) - FRAME + 1, FRAME):
        t = i / 2 / RATE
        for ready, request, result in [w for w in waiting if w[0] <= t]:
            waiting.remove((ready, request, result))
            command = result if isinstance(result, Command) else None
            if command is not None:
                last[0] = command
            done = ran(act(core.on_recognised(
                request.turn, command.tool if command else None,
                command.arguments if command else {}, result.text, ready,
                early_at=request.early_at), ready), ready, request.early_at is not None)
            if done is not None:
                return done
            if core.state is not c.State.LISTENING:
                return Live(None, False, False)
        done = ran(act(core.on_frame(pcm[i:i + FRAME], t), t), t, True)  # a held early one
        if done is not None:
            return done
    return Live(None, False, False)


def live_figures(outcomes: Sequence[Live], suffix: str = "") -> dict[str, object]:
    """The section's live figures from :func:`run_live` outcomes (``suffix`` after each
    name: the reference's)."""
    ran = [o for o in outcomes if o.latency_ms is not None]
    lat = sorted(o.latency_ms for o in ran if o.latency_ms is not None)
    return {
        f"offline.end_of_speech_to_tool_ms_p50{suffix}": round(float(np.percentile(lat, 50)), 1)
        if lat else None,
        f"offline.end_of_speech_to_tool_ms_p95{suffix}": round(float(np.percentile(lat, 95)), 1)
        if lat else None,
        f"offline.early_end_share{suffix}": round(sum(o.early for o in ran) / max(1, len(ran)),
                                                  3),
        f"offline.command_accuracy_live{suffix}": round(sum(o.right for o in outcomes)
                                                        / max(1, len(outcomes)), 3),
    }
