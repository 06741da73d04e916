"""Bad server input through the whole daemon, all real: one daemon on the virtual sound card
talks to the loopback simulator on 127.0.0.1 while the simulator also sends hypothesis-made
bad frames on the live connection (:meth:`Simulator.inject`), first during a real spoken
reply, then after it. After every batch the daemon must still run, its 100 ms ticker must
still tick and it must not have counted a single error (an exception it caught is a bug
too); at the end a new spoken question must be answered, its reply audible at the speaker.

The batches are mutations of this conversation's own events (so they hit the live response
and item ids: audio that is not base64 or has an odd length, a response.done before its
time, ...) and of a recorded one with a function call (see ``tests/server_input.py``). They
are drawn with ``derandomize=True``; the live ids differ a little between runs, so a failure
prints the offending batch itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from harness import Harness, nonzero, running, silence, wake_word
from hypothesis import HealthCheck, Phase, given, settings

from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.daemon import Daemon
from edgevoice.metrics import MAX_TURNS_KEPT
from server_input import Event, Frame, bad_frames, describe, error_records, record_frames
from support import espeak, until

# The daemon on the real-time rig, through a spoken reply and a spoken question.
pytestmark = [pytest.mark.timeout(90), pytest.mark.realtime, pytest.mark.slow]

BATCHES_DURING_REPLY = 25
BATCHES_AFTER_REPLY = 25
FRAMES_PER_BATCH = 12
FIRST_REPLY = ("Here is a fairly long answer, so that there is time to send a good number of "
               "bad frames while it plays.")
NEXT_REPLY = "It is ten past four in the afternoon."
SCRIPT = {"default_say": NEXT_REPLY, "turn": [{"say": FIRST_REPLY}]}


def draw_batches(corpus: list[Event], n: int) -> list[list[Frame]]:
    """``n`` batches of bad frames from ``corpus``, drawn by hypothesis (bounded, repeatable:
    derandomized, no example database, generation only: one long-lived daemon cannot replay
    an example to shrink it)."""
    batches: list[list[Frame]] = []

    @settings(max_examples=n, derandomize=True, database=None, phases=[Phase.generate],
              deadline=None, suppress_health_check=list(HealthCheck))
    @given(bad_frames(corpus, max_size=FRAMES_PER_BATCH))
    def collect(frames: list[Frame]) -> None:
        batches.append(frames)

    collect()
    return batches


def daemon_task(daemon: Daemon) -> asyncio.Task[Any]:
    """The task running ``daemon.run()`` (the harness keeps it to itself)."""
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        if frame is not None and frame.f_code.co_name == "run" \
                and frame.f_locals.get("self") is daemon:
            return task
    raise AssertionError("no task runs the daemon")


def sentinel(n: int) -> str:
    """A valid event the core reports on the timeline ("user said"): once it is there, the
    daemon has handled every frame sent before it (the link keeps their order)."""
    return json.dumps({"type": "conversation.item.input_audio_transcription.completed",
                       "item_id": f"item_sentinel_{n}", "content_index": 0,
                       "transcript": f"sentinel {n}"})


async def send_batch(h: Harness, task: asyncio.Task[Any], n: int, batch: list[Frame],
                     errors: list[logging.LogRecord]) -> None:
    """Inject one batch and a sentinel; then the daemon must be up, ticking and error-free
    (no error counted, none logged)."""
    sent = await h.sim.inject([*batch, sentinel(n)])
    what = f"batch {n}:\n{describe(batch)}"
    assert sent == len(batch) + 1, f"the connection ended during {what}"
    try:
        await until(lambda: any(e.fields.get("text") == f"sentinel {n}"
                                for e in h.entries(TelemetryName.USER_SAID)), 10, what=f"sentinel {n}")
    except AssertionError as exc:
        raise AssertionError(f"{exc} after {what}\n{h.dump()}") from None
    assert not task.done(), f"the daemon stopped after {what}"
    assert h.daemon.healthy(), f"the ticker stopped after {what}"
    assert h.daemon.errors == 0, f"the daemon counted an error for {what}"
    assert not errors, f"{[r.getMessage() for r in errors]} logged for {what}"


def aimed_at_the_reply(live: list[Event]) -> list[Frame]:
    """Frames aimed at the reply being played: its last audio delta with audio that is not
    base64, that has an odd byte count, that is empty; a late duplicate of it; a done for a
    response that does not exist. (Bad base64 here once raised out of the core.)"""
    delta = [e for e in live if e["type"] == "response.audio.delta"][-1]
    odd = base64.b64encode(bytes(4801)).decode("ascii")
    return [json.dumps({**delta, "delta": bad}) for bad in ("!!!!", "AAA", odd, "")] + [
        json.dumps(delta),
        json.dumps({"type": "response.done", "response": {"id": "resp_nobody",
                                                          "status": "completed"}})]


def unknown_items(live: list[Event], n: int) -> list[Frame]:
    """Valid audio deltas of ``n`` items (and responses) that never existed."""
    delta = [e for e in live if e["type"] == "response.audio.delta"][-1]
    return [json.dumps({**delta, "response_id": f"resp_ghost_{i}", "item_id": f"item_ghost_{i}"})
            for i in range(n)]


def reply_audio(h: Harness, response_id: str) -> bytes:
    """The audio the simulator sent for ``response_id`` (24 kHz PCM16)."""
    return b"".join(base64.b64decode(e["delta"]) for e in h.sim.sent("response.audio.delta")
                    if e["response_id"] == response_id)


async def test_bad_frames_never_stop_the_daemon_and_the_next_question_is_answered(tmp_path):
    recorded = [json.loads(f) for f in await record_frames()]  # with a function call
    with error_records() as errors:
        await converse(tmp_path, recorded, errors)


async def converse(tmp_path: Path, recorded: list[Event],
                   errors: list[logging.LogRecord]) -> None:
    async with running(tmp_path, SCRIPT, conversation={"follow_up_s": 1.0}) as h:
        task = daemon_task(h.daemon)
        h.say(wake_word() + silence(0.3) + espeak("what's the weather like today")
              + silence(1.5))
        await h.event(TelemetryName.FIRST_REPLY_AUDIO, timeout=25)
        # This conversation's events so far (its live response and item ids) and the recorded
        # ones; drawn off the loop, which plays the reply meanwhile.
        live = list(h.sim.connections[-1].sent_events)
        corpus = live + recorded
        batches = await asyncio.to_thread(draw_batches, corpus,
                                          BATCHES_DURING_REPLY + BATCHES_AFTER_REPLY)
        assert len(batches) == BATCHES_DURING_REPLY + BATCHES_AFTER_REPLY
        batches.insert(0, aimed_at_the_reply(live))
        deltas = len(h.sim.sent("response.audio.delta"))
        finished = len(h.sim.sent("response.done"))
        for n, batch in enumerate(batches[: BATCHES_DURING_REPLY + 1]):
            await send_batch(h, task, n, batch, errors)
        # Interleaved for real: the reply kept streaming while the batches went in.
        assert len(h.sim.sent("response.audio.delta")) > deltas
        # The rest once the service is through with the reply (whatever the core made of the
        # frames in between: a bad frame may have ended or "interrupted" the reply).
        await until(lambda: len(h.sim.sent("response.done")) > finished, 25,
                    what="the first reply to end")
        for n, batch in enumerate(batches[BATCHES_DURING_REPLY + 1 :], BATCHES_DURING_REPLY + 1):
            await send_batch(h, task, n, batch, errors)
        assert h.daemon.link.stats["malformed"] > 0  # the parser did see bad frames
        # Deltas of items that never play leave nothing behind without bound (the daemon once
        # kept a first-delta time per item id until the item played: forever for these).
        await send_batch(h, task, len(batches), unknown_items(live, 3 * MAX_TURNS_KEPT), errors)
        assert h.daemon.metrics.awaiting_first_audio <= MAX_TURNS_KEPT

        # The next spoken question is answered, audibly: a reply that the service started
        # after it committed the question plays at the speaker.
        commits = len(h.sim.sent("input_audio_buffer.committed"))
        speaker_mark = len(h.rig.speaker_pcm())
        h.say(wake_word() + silence(0.3) + espeak("what time is it") + silence(1.5))

        def answered() -> bool:
            sent = [e for c in h.sim.connections for e in c.sent_events]
            committed = [i for i, e in enumerate(sent)
                         if e["type"] == "input_audio_buffer.committed"]
            if len(committed) <= commits:
                return False
            after = sent[committed[commits]:]
            started = {e["response"]["id"] for e in after if e["type"] == "response.created"}
            heard = nonzero(h.rig.speaker_pcm()[speaker_mark:])
            for e in after:
                if e["type"] == "response.done" and e["response"]["id"] in started \
                        and e["response"]["status"] == "completed":
                    audio = reply_audio(h, e["response"]["id"])
                    middle = nonzero(audio[len(audio) // 4 : len(audio) // 4 + 24000])  # 0.5 s
                    if middle and middle in heard:
                        return True
            return False

        await until(answered, 30, what="the reply to the next question at the speaker")
        assert not task.done() and h.daemon.healthy()
        assert h.daemon.errors == 0 and not errors
