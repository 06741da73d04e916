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
from edgevoice.devkit.virtual import EchoPath
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


PROMPT = "Open the {side} window? Say yes to confirm."


async def prompt_played(h: Harness) -> None:
    """Wait until the daemon's question played and it listens for the answer."""
    await until(lambda: h.entries(TelemetryName.CONFIRM_LISTENING), 30,
                what="the confirmation question to play")


def answers(h: Harness) -> list[dict[str, Any]]:
    return [e.fields for e in h.entries(TelemetryName.CONFIRM_ANSWER)]


@pytest.mark.slow
async def test_confirm_tool_runs_after_a_yes_to_the_daemons_own_question(tmp_path):
    window = {"name": "open_window", "arguments": {"side": "left"}}
    script = {"default_after_tools": "The left window is open.", "turn": [
        {"user": "open the window", "calls": [window]},
        # The transcript of the answer; the service's own reply to it is cancelled.
        {"user": "yes", "say": "This reply must never be heard."},
    ]}
    tools = [open_window(tmp_path, confirm=True, confirm_prompt=PROMPT)]
    async with running(tmp_path, script, tools=tools) as h:
        ask(h, "open the window")
        # The question is the declared one, spoken by the service as the daemon wrote it.
        await hear(h, "Open the left window? Say yes to confirm.")
        [create] = [e for e in h.sim.received("response.create")
                    if (e.get("response") or {}).get("pre_generated_assistant_message")]
        assert create["response"]["pre_generated_assistant_message"]["content"][0]["text"] == \
            "Open the left window? Say yes to confirm."
        assert runs(tmp_path) == []
        await prompt_played(h)
        h.say(silence(0.4) + espeak("yes") + silence(1.5))  # an answer, after a breath
        await hear(h, "The left window is open.")
        assert runs(tmp_path) == [["open_window", "left"]], h.dump()
        assert outputs(h)[0][1] == {"ok": True, "exit_status": 0,
                                    "stdout": "did open_window left"}
        assert [a["text"] for a in answers(h)] == ["yes"]
        assert "This reply must never be heard." not in said(h)
        assert h.sim.received("response.cancel")  # the service's own reply to the "yes"
        assert h.daemon.tool_calls[-1]["confirmed_by"] == "user"  # in the status
        assert h.daemon.toolbox.audit(outputs(h)[0][0])["confirmation"] == "yes"  # the journal
        # The input buffer was cleared before the answer's audio.
        kinds = received_types(h)
        assert kinds.index("input_audio_buffer.clear") > kinds.index("response.create")


@pytest.mark.slow
async def test_a_long_okay_declines_and_the_model_is_told(tmp_path):
    window = {"name": "open_window", "arguments": {"side": "left"}}
    script = {"default_after_tools": "All right, I left it closed.", "turn": [
        {"user": "open the window", "calls": [window]},
        {"user": "okay, and what's the weather tomorrow?"},
    ]}
    tools = [open_window(tmp_path, confirm=True, confirm_prompt=PROMPT)]
    async with running(tmp_path, script, tools=tools) as h:
        ask(h, "open the window")
        await prompt_played(h)
        h.say(silence(0.4) + espeak("okay, and what's the weather tomorrow?") + silence(1.5))
        await hear(h, "All right, I left it closed.")
        assert runs(tmp_path) == []
        assert outputs(h)[0][1] == {"ok": False, "error": "not done: declined by the user"}
        assert h.daemon.tool_calls[-1]["outcome"] == "declined"


@pytest.mark.slow
async def test_the_questions_own_echo_never_confirms_and_silence_declines(tmp_path):
    # The speaker leaks into the microphone; the question says "yes", and the simulator would
    # transcribe any committed audio as "yes". Nobody answers: declined when the window ends.
    window = {"name": "open_window", "arguments": {"side": "left"}}
    script = {"default_after_tools": "Nothing was done.", "turn": [
        {"user": "open the window", "calls": [window]},
        {"user": "yes"},
    ]}
    tools = [open_window(tmp_path, confirm=True, confirm_prompt=PROMPT, confirm_window_s=2.0)]
    async with running(tmp_path, script, tools=tools,
                       echo=EchoPath(gain_db=-6.0, delay_ms=60)) as h:
        ask(h, "open the window")
        await hear(h, "Nothing was done.")
        assert runs(tmp_path) == []
        [answer] = answers(h)
        assert answer["text"] is None and answer["why"] == "no answer within 2 s"
        # Nothing but the request was committed: no audio of the question reached it.
        assert len(h.sim.sent("input_audio_buffer.committed")) == 1


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
