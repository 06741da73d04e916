"""Push-to-talk, the privacy mute and state feedback through the whole daemon, all real: the
virtual sound card in real time, espeak-ng speech, the loopback simulator, real hook
processes; the GPIO button and switch are gpiozero's MockFactory pins (no pins here)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin
from harness import LONG_REPLY, running, service, silence, wake_word

from edgevoice.conversation.core import State
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.triggers.keys import input_event, key_code
from support import espeak, until

pytestmark = [pytest.mark.timeout(90), pytest.mark.realtime]


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    """gpiozero's default pin factory for the daemon under test: mock pins."""
    before = Device.pin_factory
    factory = MockFactory(pin_class=MockPWMPin)
    Device.pin_factory = factory
    yield factory
    factory.reset()
    Device.pin_factory = before


def states(h: object) -> list[str]:
    return [e.fields["state"] for e in h.entries(TelemetryName.STATE)]  # type: ignore[attr-defined]


def record_hook(path: Path) -> list[str]:
    return [sys.executable, "-c",
            "import os,sys; open(sys.argv[1],'a').write(os.environ['EDGEVOICE_STATE']+'\\n')",
            str(path)]


@pytest.mark.slow
async def test_hold_to_talk_turn_barge_in_and_follow_up_end_by_the_button(
        tmp_path: Path, pins: MockFactory) -> None:
    hook_log = tmp_path / "hooks.txt"
    script = {"turn": [{"user": "what time is it", "say": LONG_REPLY},
                       {"user": "thanks", "say": "You are welcome."}]}
    async with running(
            tmp_path, script, conversation={"follow_up_s": 30.0},
            # Only the release ends a held turn (a server VAD would end it at the pause).
            session={"turn_detection": {"type": "none"}},
            push_to_talk={"mode": "hold"},
            triggers=[{"source": "gpio", "pin": 17, "name": "hat button", "bounce_ms": 0}],
            feedback={"on_listening": record_hook(hook_log), "on_thinking": record_hook(hook_log),
                      "on_speaking": record_hook(hook_log), "on_idle": record_hook(hook_log),
                      "light": {"pins": [5, 6, 13]}}) as h:
        button = pins.pin(17)
        assert h.daemon.snapshot()["triggers"][0]["state"] == "ok"
        # Held: the question, then a pause longer than any VAD tail, then the release.
        button.drive_low()
        press = await h.event(TelemetryName.PUSH_TO_TALK)
        assert press.fields == {"source": "hat button"}
        h.say(espeak("what time is it") + silence(2.5))
        await asyncio.sleep(3.5)
        assert h.daemon.core.state is State.LISTENING  # still held: no turn end
        sent_before = len(h.sim.appended_audio)
        button.drive_high()
        released = await h.event(TelemetryName.PUSH_TO_TALK_RELEASED)
        assert released.fields["committed"] is True
        assert len(h.sim.received("input_audio_buffer.commit")) == 1
        assert sent_before >= 3.0 * 32000  # every frame while held (3.5 s, less connecting)
        await h.event(TelemetryName.FIRST_REPLY_AUDIO, timeout=20)
        await asyncio.sleep(1.0)
        # A press while the assistant speaks is a barge-in.
        button.drive_low()
        barge = await h.event(TelemetryName.BARGE_IN)
        assert barge.fields["by"] == "button"
        h.say(espeak("thanks") + silence(0.5))
        await asyncio.sleep(1.5)
        button.drive_high()
        await h.event(TelemetryName.REPLY_DONE, count=2, timeout=20)
        await until(lambda: h.daemon.core.state is State.FOLLOW_UP, timeout=20,
                    what="the follow-up window")
        # A press in the follow-up window ends the conversation (end_follow_up).
        button.drive_low()
        idle = await h.event(TelemetryName.IDLE)
        assert idle.fields["why"] == "ended by the button"
        button.drive_high()
        await until(lambda: states(h)[-1] == "idle")
        seq = states(h)
        # The state sequence: listening while held, thinking after the release, speaking,
        # listening again after the barge-in press, ..., the follow-up, idle.
        assert seq[:3] == ["listening", "thinking", "speaking"], seq
        assert seq[3] == "listening" and seq[-2:] == ["listening", "idle"], seq
        await until(lambda: hook_log.exists() and hook_log.read_text().split()[-1:] == ["idle"],
                    timeout=10, what="the hooks")
        # on_idle at start (the daemon shows its state from the start), then the turn's.
        assert hook_log.read_text().split()[:4] == ["idle", "listening", "thinking", "speaking"]
        await until(lambda: [pins.pin(p).state for p in (5, 6, 13)] == [0, 0, 0],
                    what="the light off when idle")
        turns = h.daemon.snapshot()["turns"]
        assert turns[0]["button"] == "hat button" and turns[0]["wake_to_send_ms"] is not None


async def test_muted_no_byte_leaves_no_frame_reaches_the_wake_word_and_it_survives_a_restart(
        tmp_path: Path, pins: MockFactory) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    triggers = [{"source": "gpio", "pin": 27, "action": "mute", "switch": True,
                 "name": "mute switch", "bounce_ms": 0},
                {"source": "gpio", "pin": 17, "name": "talk"}]
    script = {"turn": [{"user": "hello", "say": "Hi."}]}
    async with running(tmp_path / "a", script, state_dir=state_dir, triggers=triggers) as h:
        switch = pins.pin(27)
        switch.drive_low()  # closed: muted
        await h.event(TelemetryName.MUTED)
        assert h.daemon.muted and h.daemon.snapshot()["feedback_state"] == "muted"
        earcons = h.daemon._earcons
        assert earcons == 1  # the mute chime
        frames = h.daemon.listener.stats.frames
        n = h.say(wake_word() + espeak("hello there") + silence(1.0))
        pins.pin(17).drive_low()  # the talk button does nothing either
        await asyncio.sleep(0.2)
        pins.pin(17).drive_high()
        await until(lambda: h.rig.mic.written >= n, timeout=15, what="the speech")
        await asyncio.sleep(1.0)
        # Nothing reached the wake word's detector; not one byte reached the service.
        assert h.daemon.listener.stats.frames == frames
        assert h.daemon.muted_frames > 200
        assert h.sim.connection_count == 0 and h.sim.appended_audio == b""
        assert TelemetryName.WAKE not in h.names() and TelemetryName.PUSH_TO_TALK not in h.names()
        assert (state_dir / "muted").read_text().strip() == "1"
    # A restart (a new daemon on the same state directory, no switch now): still muted. Its
    # mute key is on an input device that is not there at start (a remote not plugged in):
    # reported, waited for, then used. (No /dev/uinput here: the device is a FIFO of real
    # input_event records, read by the same reader as an evdev device.)
    pins.reset()
    remote = tmp_path / "remote-event"
    keys = [{"source": "input", "device": str(remote), "key": "KEY_MICMUTE",
             "action": "mute", "name": "remote"}]
    async with running(tmp_path / "b", script, state_dir=state_dir, triggers=keys,
                       audio={"reopen_backoff_s": [0.1]}) as h:
        assert h.daemon.muted
        await until(lambda: h.daemon.snapshot()["triggers"][0]["state"] == "missing")
        h.say(wake_word() + silence(0.5))
        await asyncio.sleep(3.0)
        assert h.sim.appended_audio == b"" and TelemetryName.WAKE not in h.names()
        os.mkfifo(remote)
        fd = os.open(remote, os.O_RDWR | os.O_NONBLOCK)
        try:
            await until(lambda: h.daemon.snapshot()["triggers"][0]["state"] == "ok",
                        what="the remote plugged in")
            code = key_code("KEY_MICMUTE")
            os.write(fd, input_event(code, 1) + input_event(code, 0))  # a press toggles
            await h.event(TelemetryName.UNMUTED)
        finally:
            os.close(fd)
        assert h.entries(TelemetryName.UNMUTED)[0].fields == {"source": "remote"}
        assert (state_dir / "muted").read_text().strip() == "0"
        assert h.daemon._earcons == 1  # the unmute chime (the restart's mute played none)
        h.say(wake_word() + espeak("hello") + silence(1.5))
        await h.event(TelemetryName.WAKE, timeout=15)
        await h.event(TelemetryName.REPLY_DONE, timeout=20)
        assert len(h.sim.appended_audio) > 0


@pytest.mark.slow
async def test_mute_command_through_the_status_socket_of_edgevoice_run(tmp_path: Path) -> None:
    async with service({"turn": [{"say": "Okay."}]}, state_dir=tmp_path) as svc:
        await svc.message("READY", "1", timeout=30)

        async def mute(what: str) -> str:
            out = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edgevoice", "mute", what, "--socket",
                str(svc.status_socket), env=svc.env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            stdout, stderr = await out.communicate()
            assert out.returncode == 0, stderr.decode() + svc.explain()
            return stdout.decode().strip()

        assert await mute("on") == "muted"
        status = await svc.status()
        assert status["muted"] is True and status["feedback_state"] == "muted"
        await svc.message("STATUS", "muted", timeout=5)
        assert (tmp_path / "muted").read_text().strip() == "1"
        assert await mute("toggle") == "unmuted"
        assert (await svc.status())["muted"] is False
        # A bad command is refused by the socket with a message.
        from edgevoice.service.status import request

        reply = await asyncio.to_thread(request, svc.status_socket, "mute sideways")
        assert "unknown request" in json.dumps(reply)


async def test_offline_and_error_states_reach_their_hooks(tmp_path: Path, pins: MockFactory) -> None:
    hook_log = tmp_path / "hooks.txt"
    hooks = {f"on_{s}": record_hook(hook_log) for s in ("offline", "error", "idle")}
    async with running(tmp_path, {"turn": [{"say": "Back online."}]},
                       triggers=[{"source": "gpio", "pin": 17, "bounce_ms": 0}],
                       feedback=hooks) as h:
        # The service cannot be reached when the button starts a turn: offline.
        await h.sim.close()
        pins.pin(17).drive_low()
        await until(lambda: h.daemon.state == "offline", timeout=10, what="offline")
        pins.pin(17).drive_high()
        await h.sim.start()  # reachable again: the link reconnects and the turn goes on
        h.say(espeak("are you there") + silence(1.5))
        await h.event(TelemetryName.REPLY_DONE, timeout=20)
        await until(lambda: h.daemon.core.state is State.IDLE, timeout=15, what="idle")
        # The microphone is unplugged: error, until it is back.
        h.rig.set_devices(microphone=False)
        await asyncio.to_thread(h.rig.mute_microphone)
        await until(lambda: h.daemon.state == "error", timeout=10, what="error")
        h.rig.set_devices()
        h.rig.mic.resume()
        await until(lambda: h.daemon.state == "idle", timeout=10, what="idle again")
        await until(lambda: hook_log.exists() and hook_log.read_text().split()[-1:] == ["idle"]
                    and "error" in hook_log.read_text(), timeout=10, what="the hooks")
        seq = states(h)
        assert "offline" in seq and seq.index("offline") < seq.index("error"), seq
        ran = hook_log.read_text().split()
        assert ran[0] == "idle" and "offline" in ran and ran[-2:] == ["error", "idle"], ran
