"""SIGTERM and SIGHUP at random points of a turn, to ``edgevoice run`` as a child process
(:func:`harness.service`: the simulator, the virtual sound card and a notify socket), all
real. A turn here is: the wake word, the user's request, a declared ``command`` tool that runs
for 0.6 s (it logs each run), the spoken reply after the tool, the follow-up window.

The points are drawn among those phases by a seeded generator; the seed is in every failure
message (set ``EDGEVOICE_TEST_SEED`` to replay one).

- SIGTERM: ``STOPPING=1``, exit 0 within a few seconds, no traceback, the speaker stops at
  once; after a restart on the same state directory, a call that already ran (or was cut
  short) is never run again — the model gets its recorded output instead.
- SIGHUP with a changed, valid config (another wake word): the turn in progress completes
  undisturbed (its reply plays to the end), the new config takes effect only after the turn
  (``READY=1`` after ``RELOADING=1``), and the next turn is served with it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import FIXTURES, MS24, START_TIMEOUT, Service, nonzero, service, silence

from edgevoice.audio.convert import read_wav
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.tools.store import INTERRUPTED
from support import alive, espeak, quiet, until

# A child daemon on the real-time rig, signalled at points of a spoken turn.
pytestmark = [pytest.mark.timeout(90), pytest.mark.realtime, pytest.mark.slow]

PHASES = ("wake", "speaking", "tool", "reply", "follow-up")
#: Phases at which the turn's tool call has already started.
TOOL_STARTED = ("tool", "reply", "follow-up")
TOOL_S = 0.6
REQUEST = "open the window"
REPLY = "It is open now."
#: The SIGHUP test's replies, one per turn (told apart in the simulator's events).
REPLIES = ("It is open now.", "That one is open too.")
STOP_S = 5.0  # "exit within a few seconds"
#: Nonzero speaker audio allowed after SIGTERM: the pipe and device buffers, not the reply.
AFTER_STOP_MS = 400
JARVIS = "listening for 'hey jarvis'"
RHASSPY = "listening for 'hey rhasspy'"
WAKE_RHASSPY = '[wake]\nmodels = [{ name = "hey_rhasspy" }]\n'

TOOL = """\
import json, os, sys, time
log, delay, tag = sys.argv[1:]
with open(log, "a", encoding="utf-8") as f:
    f.write(json.dumps({"tag": tag, "pid": os.getpid()}) + "\\n")
time.sleep(float(delay))
print("did " + tag)
"""


# -- helpers ------------------------------------------------------------------------------


def seed() -> int:
    value = os.environ.get("EDGEVOICE_TEST_SEED")
    return int(value) if value else random.SystemRandom().randrange(1 << 32)


@contextlib.contextmanager
def replayable(seed_value: int, points: object) -> Iterator[None]:
    """Any failure inside names the seed and the points drawn from it."""
    try:
        yield
    except Exception as exc:
        raise AssertionError(f"[EDGEVOICE_TEST_SEED={seed_value}, points {points}] "
                             f"{type(exc).__name__}: {exc}") from exc


def tool_config(root: Path) -> str:
    """A ``[[tools]]`` table: ``open_window(tag)`` logs ``{tag, pid}`` to ``runs.jsonl``,
    runs :data:`TOOL_S` and prints ``did TAG``."""
    script = root / "tool.py"
    script.write_text(TOOL, encoding="utf-8")
    argv = [sys.executable, str(script), str(root / "runs.jsonl"), str(TOOL_S), "{tag}"]
    return ('[[tools]]\nname = "open_window"\ndescription = "Open the window."\n'
            'parameters = { type = "object", properties = { tag = { type = "string", '
            'pattern = "^[a-z0-9_-]+$", maxLength = 64 } }, '
            'required = ["tag"], additionalProperties = false }\n'
            f"command = {{ argv = {json.dumps(argv)} }}\n")


def runs(root: Path) -> list[dict[str, Any]]:
    log = root / "runs.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def tags_run(root: Path) -> list[str]:
    return [r["tag"] for r in runs(root)]


def window_call(tag: str) -> dict[str, Any]:
    return {"name": "open_window", "arguments": {"tag": tag}, "call_id": f"call_{tag}"}


def turn(tag: str, reply: str = REPLY) -> dict[str, Any]:
    return {"user": REQUEST, "calls": [window_call(tag)], "after_tools": reply}


def wake_clip(name: str) -> bytes:
    """The fixture's wake word after a second of silence, and 0.1 s after it (the word is
    detected within 0.2 s of its end): a shorter turn."""
    pcm, rate = read_wav(FIXTURES / f"{name}_en-us.wav")
    assert rate == 16000
    pcm = bytes(2 * rate) + pcm + bytes(2 * rate)  # the clips hold the speech only
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, "<i2").astype(np.int32)) > 300)
    return pcm[:(int(loud[-1]) + rate // 10) * 2]


def ask(svc: Service, wake: str = "jarvis", text: str = REQUEST) -> None:
    # A pause shorter than the server VAD's silence (0.5 s): should the stream begin with the
    # word's last syllable, it joins the request instead of making a turn of its own.
    svc.rig.mic.feed(wake_clip(wake) + silence(0.3) + espeak(text) + silence(0.8))


def lines(svc: Service, text: str) -> int:
    """How many lines of the daemon's log contain ``text``."""
    return sum(text in line for line in list(svc.lines))


def line_index(svc: Service, text: str, start: int = 0, nth: int = 1) -> int | None:
    """The index of the ``nth`` line from ``start`` on that contains ``text``."""
    seen = 0
    for i, line in enumerate(list(svc.lines)[start:], start):
        if text in line:
            seen += 1
            if seen == nth:
                return i
    return None


def outputs(svc: Service) -> dict[str, dict[str, Any]]:
    """The function_call_outputs the simulator received, by call_id."""
    return {e["item"]["call_id"]: json.loads(e["item"]["output"])
            for e in svc.sim.received("conversation.item.create")
            if e["item"]["type"] == "function_call_output"}


async def reach(svc: Service, phase: str, n: int, tag: str, root: Path) -> None:
    """Wait until the ``n``-th turn of this process is in ``phase``, and assert it still is
    (checked just before the caller sends its signal, with no await in between)."""
    sim = svc.sim
    started = {
        "wake": lambda: lines(svc, "wake word=") >= n,
        "speaking": lambda: len(sim.sent("input_audio_buffer.speech_started")) >= n,
        "tool": lambda: tag in tags_run(root),
        "reply": lambda: lines(svc, TelemetryName.FIRST_AUDIO_AT_SPEAKER) >= n,
        "follow-up": lambda: lines(svc, "-> follow_up") >= n,
    }[phase]
    try:
        await until(started, 25, what=f"turn {n} to reach {phase}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{svc.explain()}") from None
    if phase == "reply":  # into the reply, not at its first sample: 0.3 s more of it heard
        heard = len(nonzero(svc.rig.speaker_pcm()))
        await until(lambda: len(nonzero(svc.rig.speaker_pcm())) >= heard + 300 * MS24, 5,
                    what=f"turn {n}: 0.3 s more of the reply at the speaker")
    still = {
        # Right after the wake word: still listening, the request not committed yet.
        "wake": lambda: len(sim.sent("input_audio_buffer.speech_stopped")) < n,
        "speaking": lambda: len(sim.sent("input_audio_buffer.speech_stopped")) < n,
        "tool": lambda: f"call_{tag}" not in outputs(svc),
        "reply": lambda: lines(svc, "-> follow_up") < n,
        "follow-up": lambda: lines(svc, "follow_up -> idle") < n,
    }[phase]
    assert still(), f"turn {n} was already past {phase}\n{svc.explain()}"


def reply_audio(svc: Service, text: str) -> bytes:
    """The audio the simulator sent for its reply ``text`` (24 kHz PCM16)."""
    items = {e["item_id"] for e in svc.sim.sent("response.audio_transcript.done")
             if e["transcript"] == text}
    assert len(items) == 1, f"{len(items)} replies {text!r}\n{svc.explain()}"
    (item,) = items
    return b"".join(base64.b64decode(e["delta"]) for e in svc.sim.sent("response.audio.delta")
                    if e["item_id"] == item)


async def sigterm(svc: Service) -> None:
    """SIGTERM now: STOPPING=1, exit code 0 within :data:`STOP_S`, no traceback, and the
    speaker falls silent at once (the reply is not played out)."""
    mark = len(svc.notify)
    heard = len(nonzero(svc.rig.speaker_pcm()))
    t0 = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(svc.proc.wait, STOP_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"no exit within {STOP_S} s of SIGTERM\n{svc.explain()}") from None
    took = time.monotonic() - t0
    # The last datagrams, log lines and the speaker audio still in the pipe come in after the
    # exit: wait until none of them changes any more.
    await quiet(lambda: (len(svc.notify), len(svc.lines), len(nonzero(svc.rig.speaker_pcm()))),
                0.3, what="what the daemon sent before it exited")
    assert svc.notify.find("STOPPING", "1", mark) is not None, svc.explain()
    assert code == 0, f"exit code {code}\n{svc.explain()}"
    assert "Traceback" not in svc.stderr(), svc.explain()
    more_ms = (len(nonzero(svc.rig.speaker_pcm())) - heard) / MS24
    assert more_ms <= AFTER_STOP_MS, (f"{more_ms:.0f} ms of audio reached the speaker after "
                                      f"SIGTERM (exit after {took:.2f} s)\n{svc.explain()}")


# -- SIGTERM ------------------------------------------------------------------------------


async def test_sigterm_at_random_points_of_a_turn_stops_cleanly_and_no_call_runs_twice() -> None:
    s = seed()
    rng = random.Random(s)
    # Two points per run, at least one after the tool started, so that the restart below
    # always meets a call that already ran.
    pairs = [p for p in itertools.permutations(PHASES, 2)
             if any(x in TOOL_STARTED for x in p)]
    points = rng.choice(pairs)
    tags = [f"t{i}" for i in range(len(points))]
    with replayable(s, points), tempfile.TemporaryDirectory(prefix="ev-sig-") as tmp:
        root = Path(tmp)
        tools = tool_config(root)
        state = root / "state"
        state.mkdir()
        seen: dict[str, dict[str, Any]] = {}  # what each process's model got, by call_id
        for tag, phase in zip(tags, points, strict=True):
            async with service({"turn": [turn(tag)]}, extra=tools, state_dir=state) as svc:
                await svc.message("READY", "1", timeout=START_TIMEOUT)
                ask(svc)
                await reach(svc, phase, 1, tag, root)
                await sigterm(svc)
                seen |= outputs(svc)
            # The tool ran at most once, and nothing of it outlives the daemon.
            assert tags_run(root).count(tag) == int(phase in TOOL_STARTED), runs(root)
            await until(lambda: not any(alive(r["pid"]) for r in runs(root)), 5,
                        what="the tool processes to end")

        # A restart on the same state directory; the model calls every earlier call again.
        script = {"turn": [{"user": REQUEST, "calls": [window_call(t) for t in tags],
                            "after_tools": REPLY}]}
        async with service(script, extra=tools, state_dir=state) as svc:
            await svc.message("READY", "1", timeout=START_TIMEOUT)
            ask(svc)
            await until(lambda: len(outputs(svc)) == len(tags), 25,
                        what="the outputs after the restart")
            again = outputs(svc)
            await svc.stop_with_sigterm()
        for tag, phase in zip(tags, points, strict=True):
            cid = f"call_{tag}"
            # Run exactly once over all the processes.
            assert tags_run(root).count(tag) == 1, (phase, runs(root))
            if phase == "tool":  # cut short by SIGTERM: never run again, the model is told
                assert again[cid] == json.loads(INTERRUPTED), again[cid]
            else:  # the output recorded by the run (before or after the restart)
                assert again[cid] == {"ok": True, "exit_status": 0, "stdout": f"did {tag}"}
                if phase in TOOL_STARTED:
                    assert seen[cid] == again[cid]


# -- SIGHUP -------------------------------------------------------------------------------


async def test_sighup_at_random_points_of_a_turn_lets_the_turn_finish_then_reloads() -> None:
    s = seed()
    points = random.Random(s).sample(PHASES, 2)
    tags = [f"h{i}" for i in range(len(points))]
    # The config alternates the wake word: each reload is visible in what wakes the daemon.
    # Each turn but the first is the next turn after a reload, served with the new config.
    wakes = ["jarvis", "rhasspy", "jarvis"]
    status = {"jarvis": JARVIS, "rhasspy": RHASSPY}
    script = {"turn": [turn(t, r) for t, r in zip(tags, REPLIES, strict=True)]}
    with replayable(s, points), tempfile.TemporaryDirectory(prefix="ev-hup-") as tmp:
        root = Path(tmp)
        tools = tool_config(root)
        # A short follow-up window (0.6 s): the turn, and so the test, ends sooner.
        async with service(script, extra=tools, follow_up_s=0.6) as svc:
            await svc.message("READY", "1", timeout=START_TIMEOUT)
            for n, (tag, phase) in enumerate(zip(tags, points, strict=True), 1):
                new_wake = wakes[n]
                ask(svc, wakes[n - 1])
                await reach(svc, phase, n, tag, root)
                svc.write_config(extra=tools + (WAKE_RHASSPY if new_wake == "rhasspy" else ""))
                mark, log_mark = len(svc.notify), len(svc.lines)
                svc.proc.send_signal(signal.SIGHUP)
                reloading = await svc.message("RELOADING", "1", start=mark, timeout=3)
                ready = await svc.message("READY", "1", start=reloading + 1, timeout=25)
                # In effect now: the new wake word.
                assert svc.fields(ready).get("STATUS") == status[new_wake], svc.explain()

                # The turn went on undisturbed: the tool ran once, its output went to the
                # model and the reply after it played to the end.
                assert tags_run(root).count(tag) == 1, runs(root)
                assert outputs(svc)[f"call_{tag}"]["stdout"] == f"did {tag}"
                reply = nonzero(reply_audio(svc, REPLIES[n - 1]))
                assert len(reply) > 300 * MS24
                try:  # the virtual speaker reads its pipe in real time: a moment's grace
                    await until(lambda r=reply: r in nonzero(svc.rig.speaker_pcm()), 2)
                except AssertionError:
                    raise AssertionError(f"the reply was cut\n{svc.explain()}") from None
                # The daemon's own log: the reload was taken, then the turn ended, and only
                # then did the daemon listen with the new config.
                # (The log line comes through a pipe, READY=1 through a datagram: it may lag.)
                await until(lambda m=log_mark: line_index(svc, "listening for", m) is not None, 5,
                            what="the new daemon's first log line")
                taken = line_index(svc, "reloading: the new configuration", log_mark)
                idle = line_index(svc, "follow_up -> idle", log_mark)
                listening = line_index(svc, "listening for", log_mark)
                assert taken is not None and idle is not None and listening is not None, \
                    svc.explain()
                assert taken < idle < listening, svc.explain()
                assert f"hey_{new_wake}" in svc.lines[listening], svc.lines[listening]

            assert tags_run(root) == tags
            assert [lines(svc, f"assistant said text={r}") for r in REPLIES] == [1, 1]
            await svc.stop_with_sigterm()
