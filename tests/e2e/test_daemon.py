"""The whole daemon, all real: ALSA ``file`` PCMs on FIFOs paced in real time (the demo's
virtual sound card), espeak-ng speech in the microphone, the loopback simulator on 127.0.0.1,
and for ducking a real PulseAudio server with another program playing."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest
from harness import (
    LONG_REPLY,
    MS16,
    MS24,
    Harness,
    nonzero,
    onset,
    reply_prefix_ms,
    running,
    silence,
    wake_word,
)

from edgevoice.conversation.core import State
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.devkit.demo import Rig
from edgevoice.devkit.simulator import Simulator
from edgevoice.devkit.simulator.script import Script
from edgevoice.devkit.virtual import EchoPath
from support import (
    PulseServer,
    assert_no_client_errors,
    espeak,
    quiet,
    stop_process,
    until,
    wait_for,
)

# The whole daemon on the real-time rig: every test speaks and listens in real time.
pytestmark = [pytest.mark.timeout(90), pytest.mark.realtime]


async def heard_past(h: Harness, n: int, seconds: float) -> None:
    """Wait until the microphone played ``n`` bytes and the daemon then took ``seconds`` more
    of audio: everything up to byte ``n`` went through the wake word detector (the FIFO and
    the device buffer hold well under a second)."""
    await until(lambda: h.rig.mic.written >= n, timeout=10, what="the speech to play")
    frames = h.daemon.capture.frames
    more = round(seconds * 1000 / h.daemon.cfg.audio.frame_ms)
    await until(lambda: h.daemon.capture.frames >= frames + more, timeout=10 + seconds,
                what=f"{seconds} s more of audio at the daemon")


async def reply_played(h: Harness, ms: float) -> None:
    """Wait until ``ms`` of the current reply were handed to the speaker."""
    item = h.entries(TelemetryName.FIRST_REPLY_AUDIO)[-1].fields["item"]
    await until(lambda: h.daemon.playback.played_ms(item) >= ms, timeout=10,
                what=f"{ms} ms of the reply played")


async def check_truncate_against_speaker(h: Harness) -> int:
    """The truncate names the item that was playing and exactly the milliseconds of it that
    reached the speaker: the output holds that prefix of the reply and not 60 ms more."""
    # What PortAudio already took is still on its way to the FIFO: wait until no new audio
    # reaches the speaker.
    await quiet(lambda: len(nonzero(h.rig.speaker_pcm())), 0.3, what="audio at the speaker")
    truncate = h.sim.received("conversation.item.truncate")[0]
    end_ms = truncate["audio_end_ms"]
    reply = h.reply_audio(truncate["item_id"])
    speaker = nonzero(h.rig.speaker_pcm())
    assert h.entries(TelemetryName.REPLY_DONE)[0].fields["status"] == "cancelled"
    if nonzero(reply[: end_ms * MS24]) not in speaker:
        lo = reply_prefix_ms(reply[: end_ms * MS24], speaker)
        raise AssertionError(f"truncate {end_ms} ms, but only {lo} ms of the reply are in the "
                             f"speaker output; stats {h.daemon.playback.stats}")
    more = reply[: (end_ms + 60) * MS24]
    tail = np.frombuffer(more[end_ms * MS24:], "<i2")
    if len(more) == (end_ms + 60) * MS24 and np.abs(tail).max() > 300:
        assert nonzero(more) not in speaker, "audio after the truncate point reached the speaker"
    return end_ms


@pytest.mark.slow
async def test_wake_question_reply_then_follow_up_and_nothing_sent_while_idle(tmp_path):
    script = {"turn": [{"user": "what's the weather", "say": "Sunny and warm."},
                       {"user": "and tomorrow", "say": "Rain tomorrow."}]}
    async with running(tmp_path, script, conversation={"follow_up_s": 6.0}) as h:
        # Idle: speech that is not the wake word goes nowhere — no connection, no byte.
        n = h.say(espeak("the kettle is boiling"))
        await heard_past(h, n, 1.0)
        assert "wake" not in h.names(), h.dump()
        assert h.sim.connection_count == 0 and h.sim.appended_audio == b""

        h.say(wake_word() + silence(0.3) + espeak("what's the weather like today")
              + silence(1.5))
        await h.event(TelemetryName.REPLY_DONE, timeout=25)
        await until(lambda: h.daemon.core.state is State.FOLLOW_UP, what="follow-up")
        speaker = np.frombuffer(h.rig.speaker_pcm(), "<i2")
        assert np.count_nonzero(np.abs(speaker) > 300) > 24000 * 0.5  # the spoken reply

        # Follow-up: a question without the wake word continues the conversation.
        h.say(espeak("and what about tomorrow") + silence(1.5))
        await h.event(TelemetryName.FOLLOW_UP_SPEECH, timeout=10)
        await h.event(TelemetryName.REPLY_DONE, count=2, timeout=25)
        assert h.names().count(TelemetryName.WAKE) == 1
        assert [e.fields["text"] for e in h.entries(TelemetryName.ASSISTANT_SAID)] == [
            "Sunny and warm.", "Rain tomorrow."]
        assert len(h.sim.received("response.create")) == 0  # server VAD made both responses
        assert h.daemon.turns[-1].first_delta_to_device_ms is not None


async def test_first_word_reaches_the_service_intact_on_a_cold_connection(tmp_path):
    question = espeak("seven apples are on the table")
    async with running(tmp_path, {"turn": [{"say": "Okay."}]}) as h:
        assert h.sim.connection_count == 0  # cold: nothing connected before the wake word
        h.say(wake_word() + question + silence(1.5))  # no pause after the wake word
        wake = await h.event(TelemetryName.WAKE)
        ready = await h.event(TelemetryName.SESSION_READY)
        assert ready.t > wake.t  # the connection was made after the wake word
        await h.event(TelemetryName.REPLY_DONE, timeout=25)
        sent = h.sim.appended_audio
        start = onset(question)
        # Byte-exact: from 100 ms before the first word to its end, nothing lost or altered
        # although the socket was still connecting when the user started to speak.
        assert question[max(0, start - 100 * MS16):] in sent
        ww = wake_word()
        middle = onset(ww) + 150 * MS16
        assert ww[middle : middle + 200 * MS16] not in sent  # the wake word stayed local
        assert h.daemon.turns[0].wake_to_send_ms is not None


@pytest.mark.slow
async def test_barge_in_by_local_speech_stops_cancels_and_truncates_what_was_played(tmp_path):
    script = {"turn": [{"say": LONG_REPLY}, {"say": "Okay."}]}
    async with running(tmp_path, script) as h:
        h.say(wake_word() + espeak("tell me about the weather") + silence(1.5))
        await h.event(TelemetryName.FIRST_REPLY_AUDIO, timeout=25)
        await reply_played(h, 2000)  # the user lets the reply play for 2 s, then interrupts
        h.say(espeak("no wait, stop, I have another question") + silence(1.5))
        barge = await h.event(TelemetryName.BARGE_IN)
        assert barge.fields["by"] == "local speech"
        await until(lambda: h.sim.received("conversation.item.truncate"), what="truncate")
        types = [e["type"] for e in h.sim.connections[0].received_events]
        assert types.index("response.cancel") < types.index("conversation.item.truncate")
        end_ms = await check_truncate_against_speaker(h)
        assert 1500 < end_ms < 6000
        # The interruption is the next turn: streamed and answered.
        await h.event(TelemetryName.REPLY_DONE, count=2, timeout=25)
        assert h.entries(TelemetryName.ASSISTANT_SAID)[-1].fields["text"] == "Okay."


@pytest.mark.slow
async def test_barge_in_by_server_speech_started(tmp_path):
    script = {"turn": [{"say": LONG_REPLY, "speech_started_at_ms": 1500}]}
    async with running(tmp_path, script, bargein={"local_vad": False},
                       conversation={"listen_timeout_s": 2.0}) as h:
        h.say(wake_word() + espeak("tell me about the weather") + silence(1.5))
        barge = await h.event(TelemetryName.BARGE_IN, timeout=30)
        assert barge.fields["by"] == "server speech"
        await until(lambda: h.sim.received("conversation.item.truncate"), what="truncate")
        end_ms = await check_truncate_against_speaker(h)
        assert 1000 < end_ms <= 1600  # what had played when the service heard the user


async def test_stop_word_silences_the_reply_without_the_cloud_deciding(tmp_path):
    script = {"turn": [{"say": LONG_REPLY}]}
    async with running(tmp_path, script, bargein={"local_vad": False, "server_vad": False,
                                                  "wake_word": "stop"}) as h:
        h.say(wake_word() + espeak("tell me about the weather") + silence(1.5))
        await h.event(TelemetryName.FIRST_REPLY_AUDIO, timeout=25)
        await reply_played(h, 1500)  # the stop word comes 1.5 s into the reply
        h.say(wake_word())
        barge = await h.event(TelemetryName.BARGE_IN)
        assert barge.fields["by"] == "stop word"
        assert h.daemon.core.state is State.FOLLOW_UP  # stopped, not a new question
        await until(lambda: h.sim.received("conversation.item.truncate"), what="truncate")
        assert h.sim.received("response.cancel")
        await check_truncate_against_speaker(h)


@pytest.mark.slow
async def test_echo_of_the_reply_neither_barges_in_nor_wakes(tmp_path):
    # The assistant's reply says the wake word; the speaker's output comes back into the
    # microphone 6 dB down and 60 ms late, as from a speaker next to the microphone.
    say = ("You can say hey jarvis whenever you need me. Hey jarvis, that is my name, and "
           "I will listen when you call me.")
    echo = EchoPath(gain_db=-6.0, delay_ms=60)
    taken: list[bytes] = []
    take = echo.take
    echo.take = lambda n: taken.append(take(n)) or taken[-1]  # type: ignore[method-assign]
    async with running(tmp_path, {"turn": [{"say": say}]}, echo=echo,
                       conversation={"follow_up_s": 2.0}) as h:
        # The question follows the wake word at once (the clip's 1 s of trailing silence
        # cut): the chime's own echo then joins the user's turn. After a pause longer than
        # the server's silence_duration_ms it would be a turn of its own (see the README).
        h.say(wake_word()[: -int(0.8 * 16000) * 2] + espeak("what is your name")
              + silence(1.5))
        await h.event(TelemetryName.REPLY_DONE, timeout=30)
        await h.event(TelemetryName.IDLE, timeout=15)
        names = h.names()
        assert TelemetryName.BARGE_IN not in names, h.dump()
        # At most one early pause (two voiced frames judged the user's when the paced virtual
        # card's timing jitters on a loaded machine), resumed within a few frames: no gap the
        # user hears as a cut.
        paused = h.entries(TelemetryName.SPEAKER_PAUSED)
        resumed = h.entries(TelemetryName.SPEAKER_RESUMED)
        assert len(paused) <= 1 and len(resumed) == len(paused), h.dump()
        assert all(r.t - p.t <= 0.12 for p, r in zip(paused, resumed, strict=True)), h.dump()
        assert names.count(TelemetryName.WAKE) == 1 and TelemetryName.FOLLOW_UP_SPEECH not in names, names
        assert h.entries(TelemetryName.REPLY_DONE)[0].fields["status"] == "completed"
        # The echo was really there: the microphone heard the reply at a speech level.
        mic_echo = np.frombuffer(b"".join(taken), "<i2").astype(np.float32)
        assert np.abs(mic_echo).max() > 3000


# -- ducking against a real PulseAudio server ---------------------------------------------


def pulse_config(pulse: PulseServer, **conversation: Any) -> dict[str, Any]:
    return {"ducking": {"backend": "pulse", "duck_db": 15.0,
                        "pulse": {"server": pulse.server}},
            "conversation": {"follow_up_s": 1.0, **conversation}}


async def test_ducking_lowers_other_audio_during_the_conversation_and_restores_it(
        tmp_path, pulse, players):
    pulse.play("music", players)
    pulse.set_volume("music", 50000, 30000)
    async with running(tmp_path, {"turn": [{"say": "Sunny and warm."}]},
                       **pulse_config(pulse)) as h:
        h.say(wake_word() + espeak("what's the weather like") + silence(1.5))
        await h.event(TelemetryName.WAKE)
        await until(lambda: pulse.volume("music") != (50000, 30000), what="ducked")
        assert all(a < b for a, b in zip(pulse.volume("music"), (50000, 30000), strict=True))
        await h.event(TelemetryName.IDLE, timeout=30)
        await until(lambda: pulse.volume("music") == (50000, 30000), what="restored")


def test_ducking_is_restored_when_the_daemon_gets_sigterm(tmp_path, pulse, players):
    pulse.play("music", players)
    pulse.set_volume("music", 50000, 30000)
    key = secrets.token_urlsafe(16)

    async def main() -> int:
        sim = Simulator(script=Script.from_dict({"turn": [{"say": LONG_REPLY}]}),
                        api_key=key, pace=1.0, strict=True)
        await sim.start()
        conf = tmp_path / "edgevoice.toml"
        # The devices by name: with PULSE_SERVER set, ALSA's "default" may be PulseAudio's.
        conf.write_text(f'[audio]\ninput_device = "edgevoice_mic"\n'
                        f'output_device = "edgevoice_speaker"\n'
                        f'[voicelive]\nendpoint = "{sim.url}"\n'
                        f'[ducking]\nbackend = "pulse"\n[ducking.pulse]\n'
                        f'server = "{pulse.server}"\n')
        try:
            with Rig(tmp_path / "rig") as rig:
                env = {**pulse.env, "VOICELIVE_API_KEY": key,
                       "ALSA_CONFIG_PATH": os.environ["ALSA_CONFIG_PATH"],
                       "PYTHONPATH": os.pathsep.join(sys.path)}
                child = subprocess.Popen(
                    [sys.executable, "-m", "edgevoice", "run", "--config", str(conf)],
                    env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                lines: list[str] = []
                assert child.stderr is not None
                reader = threading.Thread(target=lambda: lines.extend(child.stderr or []),
                                          daemon=True)
                reader.start()
                try:
                    await until(lambda: any("listening for" in ln for ln in lines), 20,
                                what="the daemon to listen")
                    rig.mic.feed(wake_word() + espeak("tell me about the weather")
                                 + silence(1.5))
                    try:
                        await until(lambda: pulse.volume("music") != (50000, 30000), 20,
                                    what="ducked")
                    except AssertionError as exc:
                        raise AssertionError("".join(lines)) from exc
                    await until(lambda: sim.sent("response.audio.delta"), 25,
                                what="the reply to play")
                    child.send_signal(signal.SIGTERM)
                    code = await asyncio.to_thread(child.wait, 10)
                finally:
                    stop_process(child)
                reader.join(2)
                assert not any("Traceback" in ln for ln in lines), "".join(lines)
                assert_no_client_errors(sim, "".join(lines))
                return code
        finally:
            await sim.close()

    assert asyncio.run(main()) == 0
    wait_for(lambda: pulse.volume("music") == (50000, 30000), what="restored after SIGTERM")
