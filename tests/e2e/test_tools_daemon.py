"""Tools through the whole daemon, all real: the loopback simulator plays the model and calls
declared tools; the daemon runs them as real ``command`` tools (a Python script that appends
its argv to a log file, so every run can be counted) and sends the outputs back.

The harness is :func:`harness.running` (simulator + virtual sound card + the real Daemon
in-process); the user speaks with espeak-ng after the wake word, the simulator's server VAD
commits the turn, and its script (``user`` = the transcript it reports) decides the calls."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from harness import Harness, hear, running, said, silence, wake_word

from edgevoice.conversation.core import State
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.link.backoff import Backoff
from support import espeak, quiet, until

# The whole daemon on the real-time rig: every test speaks and listens in real time.
pytestmark = [pytest.mark.timeout(120), pytest.mark.realtime]

TOOL = """\
import json, sys, time
log, delay, *args = sys.argv[1:]
with open(log, "a", encoding="utf-8") as f:
    f.write(json.dumps(args) + "\\n")
time.sleep(float(delay))
print("did " + " ".join(args))
"""

WINDOW_PARAMETERS = {
    "type": "object",
    "properties": {"side": {"type": "string", "enum": ["left", "right"]}},
    "required": ["side"],
    "additionalProperties": False,
}
FAN_PARAMETERS = {
    "type": "object",
    "properties": {"on": {"type": "boolean"}},
    "required": ["on"],
    "additionalProperties": False,
}


# -- helpers ------------------------------------------------------------------------------


def command_tool(tmp_path: Path, name: str, parameters: dict[str, Any], *, delay_s: float = 0.0,
                 **extra: Any) -> dict[str, Any]:
    """A ``[[tools]]`` entry whose command logs ``[name, *arguments]`` to ``runs.jsonl``,
    waits ``delay_s`` and prints ``did name arguments…``."""
    script = tmp_path / "tool.py"
    script.write_text(TOOL, encoding="utf-8")
    placeholders = [f"{{{p}}}" for p in parameters["properties"]]
    return {"name": name, "description": f"The {name} action.", "parameters": parameters,
            "command": {"argv": [sys.executable, str(script), str(tmp_path / "runs.jsonl"),
                                 str(delay_s), name, *placeholders]},
            **extra}


def runs(tmp_path: Path) -> list[list[str]]:
    """Every run of a tool so far: its name and arguments, in order."""
    log = tmp_path / "runs.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def calls(h: Harness) -> list[dict[str, Any]]:
    """The function calls the simulator (the model) made, over every connection."""
    return h.sim.sent("response.function_call_arguments.done")


def outputs(h: Harness, connection: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``(call_id, parsed output)`` of every function_call_output the simulator received."""
    conns = h.sim.connections if connection is None else [h.sim.connections[connection]]
    return [(e["item"]["call_id"], json.loads(e["item"]["output"]))
            for c in conns for e in c.received("conversation.item.create")
            if e["item"]["type"] == "function_call_output"]


def received_types(h: Harness, connection: int = 0) -> list[str]:
    """Client event types on one connection, audio appends left out; an item.create is
    written as ``item:<item type>``."""
    out = []
    for e in h.sim.connections[connection].received_events:
        if e["type"] == "input_audio_buffer.append":
            continue
        out.append(f"item:{e['item']['type']}" if e["type"] == "conversation.item.create"
                   else e["type"])
    return out


async def settled(h: Harness, tmp_path: Path) -> None:
    """Wait until nothing more happens: no new client event (audio appends aside), tool run
    or connection for 0.5 s. The caller then asserts on all of it."""
    def progress() -> tuple[int, int, int]:
        events = sum(len(received_types(h, i)) for i in range(h.sim.connection_count))
        return events, len(runs(tmp_path)), h.sim.connection_count

    await quiet(progress, 0.5, what="the daemon's requests and tool runs")


def ask(h: Harness, text: str) -> None:
    """Wake word, then ``text`` spoken, then silence so that the server VAD commits it."""
    h.say(wake_word() + silence(0.3) + espeak(text) + silence(1.5))


async def follow_up(h: Harness, text: str) -> None:
    """Once the reply is over, ``text`` spoken in the follow-up window (no wake word)."""
    await until(lambda: h.daemon.core.state is State.FOLLOW_UP, 20, what="the follow-up")
    h.say(espeak(text) + silence(1.5))


def open_window(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return command_tool(tmp_path, "open_window", WINDOW_PARAMETERS, **extra)


# -- 1. one call --------------------------------------------------------------------------


async def test_spoken_request_runs_the_tool_returns_its_output_then_the_reply_confirms(tmp_path):
    script = {"turn": [{"user": "open the left window", "say": "Opening it.",
                        "calls": [{"name": "open_window", "arguments": {"side": "left"}}],
                        "after_tools": "The left window is open."}]}
    async with running(tmp_path, script, tools=[open_window(tmp_path)]) as h:
        ask(h, "open the left window")
        await hear(h, "The left window is open.")

        # The service only learns name, description and parameters, never the command.
        (update,) = h.sim.connections[0].received("session.update")
        (declared,) = update["session"]["tools"]
        assert declared["name"] == "open_window" and "command" not in declared
        assert declared["parameters"] == WINDOW_PARAMETERS

        # The tool ran once, with the model's arguments.
        assert runs(tmp_path) == [["open_window", "left"]]
        (call,) = calls(h)
        assert call["name"] == "open_window"
        # Its output went back under the model's call_id, then one response.create.
        assert outputs(h) == [(call["call_id"], {"ok": True, "exit_status": 0,
                                                 "stdout": "did open_window left"})]
        types = received_types(h)
        assert types.count("response.create") == 1
        assert types.index("item:function_call_output") < types.index("response.create")

        # The timeline: the user's words, the call, its output, then the spoken confirmation.
        assert [e.fields["text"] for e in h.entries(TelemetryName.USER_SAID)] == ["open the left window"]
        names = h.names()
        assert names.index(TelemetryName.USER_SAID) < names.index(TelemetryName.TOOL_CALL) < names.index(TelemetryName.TOOL_OUTPUT)
        assert said(h) == ["Opening it.", "The left window is open."]
        confirmation = [e for e in h.entries(TelemetryName.ASSISTANT_SAID)
                        if e.fields["text"] == "The left window is open."][0]
        assert confirmation.t > h.entries(TelemetryName.TOOL_OUTPUT)[0].t
        (record,) = h.daemon.tool_calls
        assert record["ok"] is True and record["call_id"] == call["call_id"]
        assert h.daemon.turns[-1].tools == ["open_window"]


# -- 2. two calls in one response ---------------------------------------------------------


@pytest.mark.slow
async def test_two_calls_in_one_response_both_run_then_exactly_one_response_create(tmp_path):
    script = {"turn": [{"user": "open the left window and turn on the fan",
                        "calls": [{"name": "open_window", "arguments": {"side": "left"}},
                                  {"name": "set_fan", "arguments": {"on": True}}],
                        "after_tools": "The window is open and the fan is on."}]}
    # The first call is the slower one: its output comes last, and only then response.create.
    tools = [open_window(tmp_path, delay_s=0.4),
             command_tool(tmp_path, "set_fan", FAN_PARAMETERS)]
    async with running(tmp_path, script, tools=tools) as h:
        ask(h, "open the left window and turn on the fan")
        await hear(h, "The window is open and the fan is on.")
        await settled(h, tmp_path)

        assert sorted(runs(tmp_path)) == [["open_window", "left"], ["set_fan", "true"]]
        window, fan = calls(h)
        got = dict(outputs(h))
        assert len(outputs(h)) == 2 and set(got) == {window["call_id"], fan["call_id"]}
        assert got[window["call_id"]]["stdout"] == "did open_window left"
        assert got[fan["call_id"]]["stdout"] == "did set_fan true"
        assert all(o["ok"] for o in got.values())
        assert [cid for cid, _ in outputs(h)] == [fan["call_id"], window["call_id"]]
        types = received_types(h)
        assert types.count("response.create") == 1
        assert h.sim.received("response.create") == h.sim.connections[0].received(
            "response.create")
        last_output = len(types) - 1 - types[::-1].index("item:function_call_output")
        assert last_output < types.index("response.create")
        assert len(h.sim.sent("response.created")) == 2  # the calls' and the spoken reply's


# -- 3. a drop while the tool runs --------------------------------------------------------


@pytest.mark.parametrize(("tool_s", "backoff_s", "output_while_down"), [
    pytest.param(0.5, 1.5, True, id="output-ready-during-the-outage"),
    pytest.param(1.5, 0.05, False, id="output-ready-after-the-reconnect"),
])
async def test_drop_while_the_tool_runs_reconnects_sends_the_output_once_and_runs_it_once(
        tmp_path, tool_s, backoff_s, output_while_down):
    script = {"turn": [{"user": "open the left window",
                        "calls": [{"name": "open_window", "arguments": {"side": "left"}}],
                        "after_tools": "The left window is open.",
                        "drop": "after-function-call"}]}
    async with running(tmp_path, script, tools=[open_window(tmp_path, delay_s=tool_s)]) as h:
        # A fixed reconnect delay (no jitter) decides whether the output is ready before
        # the new connection or only after it: two different paths through the link.
        h.daemon.link.backoff = Backoff([backoff_s], jitter=0.0)
        ask(h, "open the left window")
        await hear(h, "The left window is open.", timeout=40)
        await settled(h, tmp_path)

        assert h.sim.connection_count == 2
        assert h.entries(TelemetryName.LINK_DOWN)
        reconnected = [e for e in h.entries(TelemetryName.SESSION_READY) if e.fields["reconnected"]]
        assert len(reconnected) == 1
        tool_output = await h.event(TelemetryName.TOOL_OUTPUT)
        assert (tool_output.t < reconnected[0].t) is output_while_down, h.dump()

        # The action ran exactly once and was not started again by the reconnect.
        assert runs(tmp_path) == [["open_window", "left"]]
        assert len(h.entries(TelemetryName.TOOL_CALL)) == 1
        (call,) = calls(h)
        # The output reached the service once, on the new connection, then one response.
        assert outputs(h, 0) == []
        assert outputs(h) == [(call["call_id"], {"ok": True, "exit_status": 0,
                                                 "stdout": "did open_window left"})]
        types = received_types(h, 1)
        assert types.count("item:function_call") == 1  # the replayed call
        assert types.index("item:function_call") < types.index("item:function_call_output")
        assert types.index("item:function_call_output") < types.index("response.create")
        assert len(h.sim.received("response.create")) == 1
        assert said(h) == ["The left window is open."]
        assert h.daemon.tool_calls[-1]["ok"] is True


# -- 4. spoken confirmation ---------------------------------------------------------------


@pytest.mark.slow
async def test_confirm_tool_runs_only_after_the_user_says_yes_and_never_twice_on_one_yes(
        tmp_path):
    window = {"name": "open_window", "arguments": {"side": "left"}}
    script = {"turn": [
        # The model asks for the action: not done, the reply asks the user.
        {"user": "open the window", "calls": [window],
         "after_tools": "Should I open the left window?"},
        # The user's spoken yes, then the same call: it runs.
        {"user": "yes, open it", "calls": [window], "after_tools": "The left window is open."},
        # The user says "okay" (before the model's new call: it confirms nothing), then the
        # model calls twice with no user turn in between: neither runs.
        {"user": "okay, thanks", "calls": [window, window],
         "after_tools": "I need your confirmation first."},
    ]}
    tools = [open_window(tmp_path, confirm=True)]
    async with running(tmp_path, script, tools=tools,
                       conversation={"follow_up_s": 8.0}) as h:
        ask(h, "open the window")
        await hear(h, "Should I open the left window?")
        (first,) = outputs(h)
        assert first[1]["ok"] is False and first[1]["needs_confirmation"] is True
        assert runs(tmp_path) == []

        await follow_up(h, "yes, open it")
        await hear(h, "The left window is open.")
        assert runs(tmp_path) == [["open_window", "left"]]
        second = outputs(h)[1][1]
        assert second == {"ok": True, "exit_status": 0, "stdout": "did open_window left"}

        await follow_up(h, "okay, thanks")
        await hear(h, "I need your confirmation first.")
        assert runs(tmp_path) == [["open_window", "left"]]  # still the one run
        assert len(outputs(h)) == 4
        for _, output in outputs(h)[2:]:
            assert output["ok"] is False and output["needs_confirmation"] is True

        assert [e.fields["text"] for e in h.entries(TelemetryName.USER_SAID)] == [
            "open the window", "yes, open it", "okay, thanks"]
        assert [cid for cid, _ in outputs(h)] == [c["call_id"] for c in calls(h)]
        assert len(h.sim.received("response.create")) == 3  # one per set of outputs
        assert h.names().count(TelemetryName.WAKE) == 1  # one conversation


@pytest.mark.slow
async def test_a_late_transcript_of_a_yes_said_before_the_question_confirms_nothing(
        tmp_path, monkeypatch):
    # The service transcribes asynchronously: here the transcript of the user's first turn
    # ("yes, and open the left window", said before the model asked) arrives late, once the
    # user has started speaking again (the service's next speech_started), before that turn
    # is committed. It must still count as said before.
    from edgevoice.devkit.simulator import connection as simmod

    send = simmod.Connection.send
    held: list[tuple[Any, dict[str, Any]]] = []

    async def late_yes(self: Any, event: dict[str, Any]) -> None:
        if (event.get("type") == "conversation.item.input_audio_transcription.completed"
                and str(event.get("transcript", "")).startswith("yes")):
            held.append((self, event))
            return
        await send(self, event)
        if event.get("type") == "input_audio_buffer.speech_started":
            while held:
                session, late = held.pop(0)
                await send(session, late)

    monkeypatch.setattr(simmod.Connection, "send", late_yes)
    window = {"name": "open_window", "arguments": {"side": "left"}}
    script = {"turn": [
        {"user": "yes, and open the left window", "calls": [window], "after_tools": "Should I?"},
        {"user": "hmm", "calls": [window], "after_tools": "Not without a yes."},
    ]}
    async with running(tmp_path, script, tools=[open_window(tmp_path, confirm=True)],
                       conversation={"follow_up_s": 8.0}) as h:
        ask(h, "yes, and open the left window")
        await hear(h, "Should I?")
        await follow_up(h, "hmm")
        await hear(h, "Not without a yes.")
        assert not held, "the late transcript was never sent"
        # It came while the user spoke again, before the model's second call.
        sent = [e["type"] if "transcript" not in e or not e["transcript"].startswith("yes")
                else "late yes" for e in h.sim.connections[0].sent_events]
        second_speech = [i for i, t in enumerate(sent)
                         if t == "input_audio_buffer.speech_started"][1]
        second_call = [i for i, t in enumerate(sent)
                       if t == "response.function_call_arguments.done"][1]
        assert second_speech < sent.index("late yes") < second_call, sent
        assert runs(tmp_path) == []
        assert all(o["needs_confirmation"] for _, o in outputs(h))


# -- 5. invalid arguments and an unknown tool ----------------------------------------------


async def test_invalid_arguments_and_unknown_tool_run_nothing_and_the_errors_reach_the_model(
        tmp_path):
    script = {"turn": [{"user": "open the top window and close the garage", "calls": [
        {"name": "open_window", "arguments": {"side": "top"}},
        {"name": "open_window", "arguments": {"side": "left", "force": True}},
        {"name": "open_window", "arguments": '{"side": "left"'},
        {"name": "close_garage", "arguments": {}},
    ], "after_tools": "Sorry, I could not do that."}]}
    async with running(tmp_path, script, tools=[open_window(tmp_path)]) as h:
        ask(h, "open the top window and close the garage")
        await hear(h, "Sorry, I could not do that.")
        await settled(h, tmp_path)

        assert runs(tmp_path) == []
        enum, extra, malformed, unknown = (dict(outputs(h))[c["call_id"]] for c in calls(h))
        assert enum["ok"] is False and enum["field"] == "side"
        assert enum["error"].startswith("invalid arguments: side: 'top' is not one of")
        assert extra["ok"] is False and "force" in extra["error"]
        assert malformed["ok"] is False
        assert malformed["error"].startswith("invalid arguments: not valid JSON")
        assert unknown == {"ok": False,
                           "error": "unknown tool 'close_garage' (known: open_window)"}
        assert len(outputs(h)) == 4
        assert len(h.sim.received("response.create")) == 1
        assert [r["ok"] for r in h.daemon.tool_calls] == [False] * 4
