"""The daemon's per-turn upstream byte counts (``TurnFigures.upstream_bytes`` and
``ungated_bytes``, the figures behind ``scripts/bench``'s ``upstream.bytes_ratio``), checked
exactly against what the loopback simulator received and against every frame the microphone
delivered. The real daemon runs on the virtual sound card (paced in real time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgevoice.audio.convert import read_wav
from edgevoice.config import Config
from edgevoice.conversation import core as c
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.devkit.demo import running_daemon
from edgevoice.devkit.simulator.script import Script
from edgevoice.util import data_path
from support import assert_no_client_errors, espeak, until

# The daemon on the real-time rig: two spoken turns.
pytestmark = [pytest.mark.timeout(60), pytest.mark.realtime, pytest.mark.slow]

TURN_STARTS = (TelemetryName.WAKE, TelemetryName.FOLLOW_UP_SPEECH)


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * 16000) * 2)


async def test_upstream_and_ungated_bytes_per_turn_are_exact(tmp_path: Path) -> None:
    wake, rate = read_wav(data_path("demo/wake.wav"))
    assert rate == 16000
    # The record of what happened, in order: frames as the microphone delivered them, the
    # audio sent at a turn's start from before its frame, and the daemon's timeline.
    record: list[tuple[str, Any]] = []
    cfg = Config.model_validate({"conversation": {"follow_up_s": 6.0}})
    script = Script.from_dict({"turn": [{"say": "Okay."}, {"say": "Fine."}]})
    async with running_daemon(cfg, tmp_path / "rig", script=script,
                              on_telemetry=lambda e: record.append(("telemetry", e.name)),
                              strict=True) as run:
        daemon, sim, mic = run.daemon, run.simulator, run.rig.mic
        assert sim is not None
        frame_t = [0.0]
        on_frame = daemon.capture.on_frame

        def frame(pcm: bytes, t: float) -> None:
            frame_t[0] = t
            record.append(("frame", len(pcm)))
            on_frame(pcm, t)

        daemon.capture.on_frame = frame

        def catch_up(method: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> list[c.Action]:
                out = method(*args, **kwargs)
                if any(isinstance(a, c.Telemetry) and a.name in TURN_STARTS for a in out):
                    record.append(("catch-up", sum(len(a.pcm) for a in out if isinstance(
                        a, c.SendAudio) and a.t < frame_t[0])))
                return out
            return call

        daemon.core.on_wake = catch_up(daemon.core.on_wake)  # type: ignore[method-assign]
        daemon.core.on_frame = catch_up(daemon.core.on_frame)  # type: ignore[method-assign]

        def done(n: int) -> bool:
            return sum(1 for kind, name in record if name == TelemetryName.REPLY_DONE) >= n

        # A wake word, a hesitation longer than the gate's tail (it closes, then opens again
        # with its prefix padding when the question starts), the question.
        mic.feed(silence(0.5) + wake + silence(1.5) + espeak("what time is it") + silence(2.0))
        await until(lambda: done(1), timeout=20, what="the first reply")
        first = daemon.turns[0]
        assert len(daemon.turns) == 1 and first.wake_word == "hey_jarvis"
        # Nothing is sent while the reply is generated: all of the turn is in the simulator.
        assert first.upstream_bytes == len(sim.appended_audio) > 0

        await until(lambda: daemon.core.state is c.State.FOLLOW_UP, timeout=10,
                    what="the follow-up window")
        mic.feed(silence(0.7) + espeak("and tomorrow") + silence(2.0))
        await until(lambda: done(2), timeout=20, what="the second reply")
        second = daemon.turns[1]
        assert len(daemon.turns) == 2 and second.wake_word is None
        await sim.wait_until(lambda: len(sim.appended_audio)
                             >= first.upstream_bytes + second.upstream_bytes, timeout=2)
        assert len(sim.appended_audio) == first.upstream_bytes + second.upstream_bytes
        assert second.upstream_bytes > 0
        assert_no_client_errors(sim)

    # Ungated: the audio sent from before the turn's first frame, then every frame the
    # microphone delivered from that frame until the reply was done — and nothing after.
    expected = []
    for _ in range(2):
        start = next(i for i, (kind, _) in enumerate(record) if kind == "catch-up")
        end = next(i for i, (kind, name) in enumerate(record)
                   if kind == "telemetry" and name == TelemetryName.REPLY_DONE)
        turn_frame = max(i for i, (kind, _) in enumerate(record[:start]) if kind == "frame")
        expected.append(record[start][1] + sum(n for kind, n in record[turn_frame:end]
                                               if kind == "frame"))
        del record[:end + 1]
    assert [first.ungated_bytes, second.ungated_bytes] == expected
    # The gate held back part of the hesitation and everything while the reply was generated.
    assert first.ungated_bytes - first.upstream_bytes > 0.5 * 32000
    assert second.ungated_bytes > second.upstream_bytes
    assert daemon.errors == 0
