"""Device faults through the whole daemon, all real: the demo's virtual sound card (ALSA
``file`` PCMs on FIFOs paced in real time, opened by PortAudio), espeak-ng speech, the loopback
simulator on 127.0.0.1, and ``edgevoice run`` as a child process.

A device vanishes as a USB one does: its PCM leaves the ALSA configuration (so every reopen
fails) and its running stream dies — the speaker's FIFO loses its reader (the write fails),
the microphone stops delivering (the stream stalls). It comes back when both are restored.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from harness import (
    LONG_REPLY,
    MANAGER_VARS,
    MS16,
    MS24,
    Harness,
    onset,
    reply_prefix_ms,
    running,
    silence,
    wake_word,
)

from edgevoice.audio.devices import DeviceState
from edgevoice.conversation.core import State
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.devkit.demo import SPEAKER_RATE
from edgevoice.devkit.virtual import FifoSink
from edgevoice.service.status import status_line
from support import espeak, until

pytestmark = pytest.mark.timeout(60)

# Fast reopen attempts: the device comes back within a fraction of a second of its return.
DEVICES = {"reopen_backoff_s": [0.2]}
# The wake word clip without most of its trailing second of silence: the request follows.
WAKE = wake_word()[: -int(0.8 * 16000) * 2]


def status(h: Harness) -> str:
    return status_line(h.daemon.snapshot())


@pytest.mark.realtime  # the daemon on the real-time rig
@pytest.mark.slow
async def test_microphone_vanishes_mid_request_the_turn_is_answered_and_it_comes_back(tmp_path):
    script = {"turn": [{"say": "I heard you."}, {"say": "Welcome back."}]}
    async with running(tmp_path, script, audio=DEVICES,
                       conversation={"follow_up_s": 1.0}) as h:
        question = espeak("please switch on the lights in the kitchen and then")
        cut = onset(question) + 900 * MS16  # the user is in mid-sentence when it vanishes
        n = h.say(WAKE + question[:cut])
        await h.event(TelemetryName.WAKE, timeout=15)
        await until(lambda: h.rig.mic.written >= n, 10, "the request up to the cut")
        h.rig.set_devices(microphone=False)
        await asyncio.to_thread(h.rig.mute_microphone)  # the stream stalls: no callback any more

        lost = await h.event(TelemetryName.MICROPHONE_LOST, timeout=5)
        assert lost.fields["state"] == "listening", h.dump()
        assert h.daemon.capture.state is DeviceState.MISSING
        assert h.daemon.snapshot()["devices"]["microphone"]["state"] == "missing"
        assert status(h) == "microphone missing"
        # What was captured before the loss reached the service, byte-exact up to the cut
        # (less the last partial frame and what the pipe held), and the turn was closed.
        sent = h.sim.appended_audio
        assert question[onset(question) - 100 * MS16 : cut - 200 * MS16] in sent
        await until(lambda: h.sim.received("response.create"), 5, "response.create")
        assert len(h.sim.received("input_audio_buffer.commit")) == 1

        # The turn is answered although the microphone is still gone; nothing hangs.
        await h.event(TelemetryName.REPLY_DONE, timeout=15)
        assert h.entries(TelemetryName.ASSISTANT_SAID)[0].fields["text"] == "I heard you."
        assert h.daemon.capture.state is DeviceState.MISSING
        assert status(h) == "microphone missing"
        await h.event(TelemetryName.IDLE, timeout=10)
        assert h.daemon.core.state is State.IDLE

        # Back: the wake word works again and the next turn is answered.
        h.rig.set_devices()
        h.rig.mic.resume()
        await h.event(TelemetryName.MICROPHONE_BACK, timeout=5)
        await until(lambda: status(h) == "listening for 'hey jarvis'", 2, "listening status")
        h.say(WAKE + espeak("are you there") + silence(1.5))
        await h.event(TelemetryName.WAKE, count=2, timeout=15)
        await h.event(TelemetryName.REPLY_DONE, count=2, timeout=15)
        assert h.entries(TelemetryName.ASSISTANT_SAID)[1].fields["text"] == "Welcome back."
        assert h.daemon.capture.stats.reopens == 1
        assert h.names().count(TelemetryName.MICROPHONE_LOST) == 1, h.dump()


@pytest.mark.realtime  # the daemon on the real-time rig
@pytest.mark.slow
async def test_speaker_vanishes_mid_reply_the_model_learns_what_was_heard_and_it_comes_back(
        tmp_path):
    script = {"turn": [{"say": LONG_REPLY}, {"say": "Welcome back."}]}
    async with running(tmp_path, script, audio=DEVICES,
                       conversation={"follow_up_s": 1.0}) as h:
        h.say(WAKE + espeak("tell me about the weather") + silence(1.5))
        first = await h.event(TelemetryName.FIRST_REPLY_AUDIO, timeout=20)
        # The speaker is unplugged once 1.5 s of the reply went to it.
        await until(lambda: h.daemon.playback.played_ms(first.fields["item"]) >= 1500, 10,
                    "1.5 s of the reply played")
        h.rig.set_devices(speaker=False)
        heard = h.rig.speaker.close(drain=0)  # unplugged: the stream's next write fails

        lost = await h.event(TelemetryName.SPEAKER_LOST, timeout=5)
        assert lost.fields["state"] == "responding", h.dump()
        # No hang in RESPONDING: the reply is cancelled and the conversation ends.
        idle = await h.event(TelemetryName.IDLE, timeout=5)
        assert idle.fields["why"] == "speaker lost"
        assert h.daemon.core.state is State.IDLE
        assert h.daemon.playback.state is DeviceState.MISSING
        assert h.daemon.snapshot()["devices"]["speaker"]["state"] == "missing"
        assert status(h) == "speaker missing"
        await until(lambda: h.sim.received("conversation.item.truncate"), 5, "truncate")
        assert h.sim.received("response.cancel")
        await h.event(TelemetryName.REPLY_DONE, timeout=5)
        assert h.entries(TelemetryName.REPLY_DONE)[0].fields["status"] == "cancelled"

        # The model is told what the user heard: what was handed to the device, which is
        # what reached the speaker plus at most what the device and its pipe held.
        truncate = h.sim.received("conversation.item.truncate")[0]
        item = first.fields["item"]
        assert truncate["item_id"] == item
        reply = h.reply_audio(item)
        got_ms = reply_prefix_ms(reply, heard)
        end_ms = truncate["audio_end_ms"]
        assert got_ms > 1000, got_ms
        assert got_ms <= end_ms + 1 and end_ms <= got_ms + 300, (got_ms, end_ms)
        print(f"speaker lost: {got_ms} ms of the reply reached it, truncated at {end_ms} ms")
        truncated = await until(lambda: h.sim.sent("conversation.item.truncated"), 5,
                                "the service to apply the truncate")
        assert truncated[0]["audio_end_ms"] == end_ms  # type: ignore[index]

        # Back: the next reply plays.
        h.rig.speaker = FifoSink(h.rig.speaker.path, SPEAKER_RATE)  # the reader first
        h.rig.set_devices()
        await h.event(TelemetryName.SPEAKER_BACK, timeout=5)
        assert status(h) == "listening for 'hey jarvis'"
        h.say(WAKE + espeak("are you back") + silence(1.5))
        await h.event(TelemetryName.REPLY_DONE, count=2, timeout=20)
        await until(lambda: h.daemon.core.state is not State.RESPONDING, 10, "played out")
        second = h.entries(TelemetryName.FIRST_REPLY_AUDIO)[1].fields["item"]
        assert h.entries(TelemetryName.ASSISTANT_SAID)[-1].fields["text"] == "Welcome back."
        again = h.reply_audio(second)
        await until(lambda: reply_prefix_ms(again, h.rig.speaker_pcm()) >=
                    len(again) // MS24 - 100, 3, "the second reply at the speaker")
        assert h.daemon.playback.stats.reopens == 1


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_a_bad_wake_word_model_stops_the_start_with_one_line_naming_the_file(tmp_path, kind):
    model = tmp_path / "models" / "hey_kitchen.tflite"
    if kind == "corrupt":
        model.parent.mkdir()
        model.write_bytes(b"TFL3 this is not a flatbuffer" + bytes(64))
    config = tmp_path / "edgevoice.toml"
    config.write_text('[voicelive]\nendpoint = "ws://127.0.0.1:9"\n'
                      f'[[wake.models]]\nname = "{model}"\n'
                      '[service]\nlog_target = "stderr"\nstatus_socket = ""\n')
    env = {k: v for k, v in os.environ.items() if k not in MANAGER_VARS}
    env.update({"VOICELIVE_API_KEY": "test-key", "PYTHONPATH": os.pathsep.join(sys.path)})
    proc = subprocess.run([sys.executable, "-m", "edgevoice", "run", "--config", str(config)],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert str(model) in lines[0] and "hey_kitchen" in lines[0], lines
    reason = "model file not found" if kind == "missing" else "not a valid TFLite model"
    assert reason in lines[0], lines
    assert "Traceback" not in proc.stderr
