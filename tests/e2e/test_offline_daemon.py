"""Offline commands through the whole daemon, all real: the service is out of reach (the
simulator closed: connections are refused), the user speaks a declared sentence (espeak-ng
after the wake word), the local recogniser understands it, the real ``command`` tool runs
through the same ToolBox, the answer is said on the device, and when the service is back the
model is told what happened."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from harness import running, silence, wake_word
from test_tools_daemon import command_tool, runs

from edgevoice import daemon as daemon_module
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.link.backoff import Backoff
from support import espeak, until

pytestmark = [pytest.mark.timeout(120), pytest.mark.realtime]

LIGHT_PARAMETERS = {
    "type": "object",
    "properties": {"room": {"type": "string", "enum": ["kitchen", "hall"]},
                   "state": {"type": "string", "enum": ["on", "off"]}},
    "required": ["room", "state"],
    "additionalProperties": False,
}
#: The voice the commands are spoken in (one the recogniser's bench covers).
VOICE = "en-us+f3"


def light(tmp_path: Path, **extra: object) -> dict[str, object]:
    return command_tool(tmp_path, "set_light", LIGHT_PARAMETERS,
                        sentences=["turn {state} [the] {room} light[s]",
                                   "switch [the] {room} light[s] {state}"],
                        slots={"state": ["on", "off"], "room": ["kitchen", "hall"]},
                        offline_reply="The {room} light is {state}.", **extra)


async def test_a_command_in_an_outage_runs_on_the_device_and_the_model_learns_of_it(tmp_path):
    async with running(tmp_path, {"turn": []}, tools=[light(tmp_path)],
                       conversation={"follow_up_s": 0}) as h:
        await h.sim.close()  # the service is out of reach: connections are refused
        h.daemon.link.backoff = Backoff([0.5], jitter=0.0)
        await until(lambda: h.daemon.offline_status == "ready", 30, what="the recogniser")
        h.say(wake_word() + silence(0.3) + espeak("turn on the kitchen light", voice=VOICE)
              + silence(1.5))
        said = await h.event(TelemetryName.LOCAL_REPLY, timeout=30)
        assert said.fields["text"] == "Offline. The kitchen light is on.", h.dump()
        assert runs(tmp_path) == [["set_light", "kitchen", "on"]]
        [heard] = h.entries(TelemetryName.OFFLINE_COMMAND)
        [call] = h.entries(TelemetryName.TOOL_CALL)
        assert call.fields["source"] == "offline"
        audit = h.daemon.toolbox.audit(call.fields["call_id"])
        assert audit is not None and audit["source"] == "offline" and audit["outcome"] == "ok"
        assert h.sim.connection_count == 0  # nothing ever reached the service
        await h.event(TelemetryName.IDLE, timeout=20)
        # The light shows the conversation on the device, then "offline" again.
        states = [e.fields["state"] for e in h.entries(TelemetryName.STATE)]
        assert "speaking" in states and states[-1] == "offline", states

        # The service is back: the next connection carries the offline turn as text items.
        await h.sim.start()
        await h.event(TelemetryName.SESSION_READY, timeout=20)
        # Ready means the replay was sent; the simulator may not have read it yet.
        await h.sim.wait_for_event("conversation.item.create", count=2)
        items = [e["item"] for e in h.sim.connections[0].received("conversation.item.create")]
        user = [i for i in items if i.get("role") == "user"]
        system = [i for i in items if i.get("role") == "system"]
        assert [u["content"][0]["text"] for u in user] == [heard.fields["text"]]
        assert len(system) == 1 and "set_light" in system[0]["content"][0]["text"]
        assert '"room":"kitchen"' in system[0]["content"][0]["text"]
        assert runs(tmp_path) == [["set_light", "kitchen", "on"]]  # once, never again


async def test_a_confirm_tool_asks_on_the_device_and_runs_on_a_spoken_yes(tmp_path,
                                                                       monkeypatch):
    monkeypatch.setattr(daemon_module, "OFFLINE_RESTART_S", 2.0)
    tools = [light(tmp_path, confirm=True, confirm_prompt="Switch the {room} light {state}?")]
    async with running(tmp_path, {"turn": []}, tools=tools,
                       conversation={"follow_up_s": 0, "offline": "always"}) as h:
        await until(lambda: h.daemon.offline_status == "ready", 30, what="the recogniser")
        # The recogniser's process dies (the OOM killer, a crash): another takes its place,
        # at once the first time, then no sooner than OFFLINE_RESTART_S after the last.
        first = h.daemon.recognizer
        os.kill(first.pid, signal.SIGKILL)
        await until(lambda: h.daemon.recognizer not in (first, None)
                    and h.daemon.offline_status == "ready", 30, what="another recogniser")
        assert not first.alive and "exited with status -9" in first.why
        second = h.daemon.recognizer
        killed = time.monotonic()
        os.kill(second.pid, signal.SIGKILL)
        await until(lambda: h.daemon.offline_status.startswith("restarting"), 10,
                    what="the restart")
        await until(lambda: h.daemon.recognizer not in (second, None)
                    and h.daemon.offline_status == "ready", 30, what="a third recogniser")
        assert time.monotonic() - killed >= 1.0
        h.say(wake_word() + silence(0.3) + espeak("switch the hall light off", voice=VOICE)
              + silence(1.5))
        asked = await h.event(TelemetryName.CONFIRM_ASKED, timeout=30)
        assert asked.fields["prompt"] == "Switch the hall light off?"
        assert runs(tmp_path) == []
        await h.event(TelemetryName.CONFIRM_LISTENING, timeout=20)
        h.say(silence(0.4) + espeak("yes", voice=VOICE) + silence(1.5))
        said = await h.event(TelemetryName.LOCAL_REPLY, 2, timeout=30)
        assert said.fields["text"] == "The hall light is off.", h.dump()
        assert runs(tmp_path) == [["set_light", "hall", "off"]]
        [call] = h.entries(TelemetryName.TOOL_CALL)
        audit = h.daemon.toolbox.audit(call.fields["call_id"])
        assert audit is not None and audit["confirmation"] == "yes"
        assert audit["source"] == "offline"
        # "always": the service is never asked, and "offline" is never said.
        assert h.sim.connection_count == 0
        assert not any(e.fields["text"].startswith("Offline")
                       for e in h.entries(TelemetryName.LOCAL_REPLY))

