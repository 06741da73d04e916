"""The recognisers' own process, real: espeak-ng speech fed frame by frame as the microphone
would deliver it, the child decoding on its own core, replies in order, a child that dies
failing what waits on it, and the event loop never waiting on a decode."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import replace

import pytest

from bench.offline import speak
from bench.offline_latency import FRAME
from edgevoice.config import ToolConfig
from edgevoice.devkit.demo import OFFLINE_TOOL
from edgevoice.offline.recognizer import OfflineRecognizer
from edgevoice.offline.results import Command, Rejection
from edgevoice.offline.worker import (
    CMN_WINDOW_S,
    Listening,
    RecognizerError,
    RecognizerProcess,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TOOLS = [ToolConfig.model_validate(OFFLINE_TOOL)]


async def fed(process: RecognizerProcess, pcm: bytes) -> None:
    for i in range(0, len(pcm), FRAME):
        process.feed(pcm[i:i + FRAME])
        await asyncio.sleep(0)


async def test_a_command_fed_as_it_is_spoken_is_recognised_and_answers_come_in_order() -> None:
    process = await RecognizerProcess.open(TOOLS, ["yes"])
    try:
        await fed(process, speak("turn on the kitchen light", "en-us"))
        looked, finished = await asyncio.gather(process.look(), process.finish())
        assert isinstance(looked, Command), looked
        assert (looked.tool, looked.arguments) == ("set_light",
                                                   {"room": "kitchen", "state": "on"})
        assert finished == looked  # no audio after the look: the same result
        # The next utterance starts afresh: an answer to a question.
        await fed(process, speak("yes", "en-us"))
        assert await process.answer() == "yes"
        # Nothing fed: nothing heard.
        assert isinstance(await process.finish(), Rejection)
    finally:
        await process.close()
    with pytest.raises(RecognizerError, match="closed"):
        await process.finish()


def test_speech_after_a_look_is_decoded_with_all_that_came_before() -> None:
    """The user only paused: the whole utterance counts, decoded again from its start."""
    recognizer = OfflineRecognizer(TOOLS)
    pcm = speak("switch the bedroom lights off", "en-us+f3")
    cut = (len(pcm) // 2) & ~1
    assert cut >= CMN_WINDOW_S * 32000  # decoding began before the look
    listening = Listening(recognizer)
    listening.feed(pcm[:cut])
    early = listening.look()
    assert listening.look() is early  # nothing new: not decoded again
    listening.feed(pcm[cut:])
    whole = listening.finish()
    assert not isinstance(early, Command) or early.arguments != whole.arguments, early
    assert isinstance(whole, Command), whole
    assert whole.arguments == {"room": "bedroom", "state": "off"}
    assert listening.finish() == Rejection("no-speech")  # the next utterance: none yet


def test_an_utterance_shorter_than_the_window_is_decoded_as_a_whole() -> None:
    recognizer = OfflineRecognizer(TOOLS)
    pcm = speak("turn on the hall light", "en-us")[3200:]  # less of the leading floor
    short = pcm[:int(CMN_WINDOW_S * 32000) - 2]
    listening = Listening(recognizer)
    listening.feed(short)
    streamed, whole = listening.finish(), recognizer.recognize(short)
    assert replace(streamed, decode_ms=0) == replace(whole, decode_ms=0)


async def test_the_loop_goes_on_while_a_long_utterance_is_decoded() -> None:
    """In the daemon's thread, the same decode stalled the loop for as long as PocketSphinx
    held the GIL (~140 ms per call here, ten times that on a Pi Zero 2 W)."""
    sentence = "turn on the kitchen light and then switch off the hall light please "
    pcm = speak(sentence * 3, "en-us")
    process = await RecognizerProcess.open(TOOLS)
    try:
        for i in range(0, len(pcm), 16000):  # a second at a time: as a slow loop would
            process.feed(pcm[i:i + 16000])
        gaps: list[float] = []
        done = asyncio.ensure_future(process.finish())
        last = time.perf_counter()
        while not done.done():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
        await done
        assert len(gaps) > 20  # the decode took a while: the loop ran meanwhile
        assert max(gaps) < 0.1, max(gaps)
    finally:
        await process.close()


async def test_a_child_that_dies_fails_what_waits_and_reports_once() -> None:
    lost: list[RecognizerProcess] = []
    process = await RecognizerProcess.open(TOOLS, on_lost=lost.append)
    try:
        await fed(process, speak("turn on the kitchen light", "en-us"))
        waiting = asyncio.ensure_future(process.finish())
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(RecognizerError, match="exited with status -9"):
            await waiting
        assert not process.alive
        with pytest.raises(RecognizerError, match="exited"):
            await process.look()
        process.feed(b"\0\0" * 320)  # no error: nobody listens
        await asyncio.sleep(0)
        assert lost == [process]
    finally:
        await process.close()
    assert lost == [process]  # closing is no second loss


async def test_the_child_gets_none_of_the_daemons_secrets(monkeypatch) -> None:
    monkeypatch.setenv("EDGEVOICE_TEST_SECRET", "s3cr3t")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/edgevoice.service")
    process = await RecognizerProcess.open(TOOLS)
    try:
        environ = open(f"/proc/{process.pid}/environ", "rb").read()
    finally:
        await process.close()
    assert b"s3cr3t" not in environ and b"CREDENTIALS_DIRECTORY" not in environ
    assert b"PATH=" in environ


async def test_a_recogniser_that_cannot_be_built_says_why() -> None:
    with pytest.raises(RecognizerError, match="no tool declares sentences"):
        await RecognizerProcess.open([])
