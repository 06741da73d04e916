"""The ToolBox with real commands: injection attempts, validation, timeouts that kill, output
caps, environment allowlist, exactly once (also across a restart), rate limit, spoken
confirmation, concurrency and the audit log.

The commands are real Python scripts (tests/fixtures/tools) that record their argv,
environment and working directory; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgevoice.tools import ToolBox, ToolSpec
from edgevoice.tools.actions import DEFAULT_PATH
from edgevoice.tools.confirm import Answer
from edgevoice.tools.store import (
    INTERRUPTED,
    MAX_FILE_BYTES,
    MAX_OUTPUT_CHARS,
    TOO_LARGE,
    CallRecordError,
)
from support import alive, until

pytestmark = pytest.mark.timeout(30)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tools"
RECORD = FIXTURES / "record.py"
HANG = FIXTURES / "hang.py"

# Any text (the call-time checks still refuse NUL and control characters): for tests of what
# a value can do once it is allowed; allow_dash/allow_slash let it start with - and hold /.
TEXT = {"type": "object", "properties": {"text": {"type": "string", "pattern": "^[\\s\\S]*$",
                                                  "maxLength": 20000}},
        "required": ["text"], "additionalProperties": False}
ANY_TEXT: dict[str, Any] = {"allow_dash": ["text"], "allow_slash": ["text"]}
ROOM = {
    "type": "object",
    "properties": {
        "room": {"type": "string", "enum": ["hall", "kitchen"]},
        "level": {"type": "integer", "minimum": 0, "maximum": 100, "default": 50},
    },
    "required": ["room"],
    "additionalProperties": False,
}


class Clock:
    """A hand-moved clock for rate limits and confirmation windows."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def spec(name: str = "t", **fields: Any) -> ToolSpec:
    return ToolSpec.model_validate({"name": name, **fields})


def recorder(out: Path, *templates: str, name: str = "t", env: list[str] | None = None,
             parameters: dict[str, Any] | None = None, **fields: Any) -> ToolSpec:
    command: dict[str, Any] = {"argv": [sys.executable, str(RECORD), str(out), *templates]}
    if env is not None:
        command["env"] = env
    command |= fields.pop("command", {})
    return spec(name, parameters=parameters or ROOM, command=command, **fields)


def runs(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines()]


# --------------------------------------------------------------------------- injection


async def test_injection_attempts_arrive_as_single_literal_arguments(tmp_path: Path) -> None:
    out, marker = tmp_path / "runs.jsonl", tmp_path / "marker"
    box = ToolBox([recorder(out, "{text}", "--tag={text}", parameters=TEXT, **ANY_TEXT)])
    attempts = [
        f"; touch {marker}",
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"| touch {marker}",
        f"&& touch {marker} &",
        "--help",
        f"'\"; touch {marker}; echo \"'",
        "*",
        "~ $HOME ${PATH}",
        "x" * 10000,
    ]
    for i, text in enumerate(attempts):
        output = json.loads(await box.call(f"c{i}", "t", json.dumps({"text": text})))
        assert output["ok"] is True and output["stdout"] == "recorded 2 args", output
    recorded = runs(out)
    assert [r["argv"] for r in recorded] == [[text, f"--tag={text}"] for text in attempts]
    assert not marker.exists()
    # The glob stayed a literal star, not the files of the working directory.
    assert recorded[attempts.index("*")]["argv"][0] == "*"


async def test_schema_violations_and_unknown_tools_run_nothing(tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    box = ToolBox([recorder(out, "{room}", "{level}")])
    cases = [
        ("light", '{"room": "hall"}', "unknown tool 'light' (known: t)", None),
        ("t", '{"room": "hall"', "invalid arguments: not valid JSON", None),
        ("t", '["hall"]', "invalid arguments: ['hall'] is not of type 'object'", None),
        ("t", '{"room": "attic"}', "invalid arguments: room: 'attic' is not one of "
                                   "['hall', 'kitchen']", "room"),
        ("t", '{"room": "hall", "level": 101}', "invalid arguments: level: 101 is greater "
                                                "than the maximum of 100", "level"),
        ("t", '{"room": "hall", "level": "5"}', "invalid arguments: level: '5' is not of "
                                                "type 'integer'", "level"),
        ("t", '{"level": 5}', "invalid arguments: 'room' is a required property", "room"),
        ("t", '{"room": "hall", "then": "rm -rf /"}', "invalid arguments: Additional "
                                                      "properties are not allowed", None),
    ]
    for i, (name, arguments, error, field) in enumerate(cases):
        output = json.loads(await box.call(f"c{i}", name, arguments))
        assert output["ok"] is False and output["error"].startswith(error), output
        assert output.get("field") == field
    assert runs(out) == []
    # The same tool with good arguments does run: the refusals above were the arguments.
    output = json.loads(await box.call("good", "t", '{"room": "hall", "level": 7.0}'))
    assert output["ok"] is True
    assert runs(out)[0]["argv"] == ["hall", "7"]  # 7.0 is an integer: passed as 7


async def test_defaults_fill_optional_placeholders_and_empty_arguments_mean_none(
        tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    box = ToolBox([recorder(out, "{room}", "--level={level}"),
                   spec("now", builtin="get_time")])
    assert json.loads(await box.call("a", "t", '{"room": "kitchen"}'))["ok"] is True
    assert runs(out)[0]["argv"] == ["kitchen", "--level=50"]
    assert json.loads(await box.call("b", "now", ""))["ok"] is True  # "" from the model: {}


# --------------------------------------------------------------------------- process


@pytest.mark.realtime  # a 1 s timeout, bounded in wall-clock time
async def test_a_command_is_killed_with_its_process_group_at_the_timeout(
        tmp_path: Path) -> None:
    pids = tmp_path / "pids.json"
    box = ToolBox([spec("hang", timeout_s=1.0,
                        command={"argv": [sys.executable, str(HANG), str(pids)]})])
    t0 = time.monotonic()
    output = json.loads(await box.call("c1", "hang", "{}"))
    elapsed = time.monotonic() - t0
    assert output == {"ok": False, "error": "timed out after 1 s and was stopped"}
    assert 1.0 <= elapsed < 3.0
    started = json.loads(pids.read_text())
    assert not alive(started["pid"])  # reaped before call() returned
    # The grandchild was in the same group: killed too (init reaps it).
    await until(lambda: not alive(started["child"]), timeout=5, what="the grandchild to die")


async def test_processes_left_behind_are_killed_when_the_command_exits(tmp_path: Path) -> None:
    pids = tmp_path / "pids.json"
    box = ToolBox([spec("bg", timeout_s=10,
                        command={"argv": [sys.executable, str(HANG), str(pids), "--exit"]})])
    t0 = time.monotonic()
    output = json.loads(await box.call("c1", "bg", "{}"))
    # It returns when the program exits, not when the child holding stdout would (60 s).
    assert output == {"ok": True, "exit_status": 0, "stdout": "started"}
    assert time.monotonic() - t0 < 5
    child = json.loads(pids.read_text())["child"]
    await until(lambda: not alive(child), timeout=5, what="the left-behind child to die")


async def test_stdout_is_capped_and_the_exit_status_reported(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    out = tmp_path / "runs.jsonl"
    monkeypatch.setenv("RECORD_STDOUT_BYTES", "200000")  # more than a pipe buffer
    box = ToolBox([recorder(out, env=["RECORD_STDOUT_BYTES"],
                            command={"max_output_bytes": 100})])
    output = json.loads(await box.call("c1", "t", '{"room": "hall"}'))
    assert output["ok"] is True and output["truncated"] is True
    assert output["stdout"] == "recorded 0 args\n" + "x" * (100 - 16)

    monkeypatch.setenv("RECORD_EXIT", "3")
    box = ToolBox([recorder(out, env=["RECORD_EXIT"])])
    output = json.loads(await box.call("c2", "t", '{"room": "hall"}'))
    assert output == {"ok": False, "exit_status": 3, "stdout": "recorded 0 args",
                      "error": f"{sys.executable} exited with status 3: record: asked to fail"}

    box = ToolBox([spec("gone", command={"argv": [str(tmp_path / "no-such-program")]})])
    output = json.loads(await box.call("c3", "gone", "{}"))
    assert output == {"ok": False, "error": f"cannot run {tmp_path / 'no-such-program'}: "
                                            "No such file or directory"}


async def test_only_allowlisted_variables_reach_the_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "runs.jsonl"
    monkeypatch.setenv("EDGEVOICE_TEST_LANG", "de_DE.UTF-8")
    monkeypatch.setenv("EDGEVOICE_TEST_TOKEN", "s3cr3t-value")
    monkeypatch.delenv("EDGEVOICE_TEST_UNSET", raising=False)
    box = ToolBox([recorder(out, env=["EDGEVOICE_TEST_LANG", "EDGEVOICE_TEST_UNSET"],
                            command={"cwd": str(tmp_path)})])
    caplog.set_level(logging.DEBUG, "edgevoice.tools")
    assert json.loads(await box.call("c1", "t", '{"room": "hall"}'))["ok"] is True
    run = runs(out)[0]
    # LC_CTYPE may be added by the recording Python itself (PEP 538 locale coercion).
    assert {k: v for k, v in run["env"].items() if k != "LC_CTYPE"} == {
        "EDGEVOICE_TEST_LANG": "de_DE.UTF-8", "PATH": DEFAULT_PATH}
    assert run["cwd"] == str(tmp_path)
    assert "s3cr3t-value" not in caplog.text and "de_DE" not in caplog.text

    # PATH itself can be passed through.
    box = ToolBox([recorder(out, env=["PATH"])])
    assert json.loads(await box.call("c2", "t", '{"room": "hall"}'))["ok"] is True
    assert runs(out)[1]["env"]["PATH"] == os.environ["PATH"]


# --------------------------------------------------------------------------- exactly once


async def test_a_call_id_runs_once(tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    box = ToolBox([recorder(out, "{room}")])
    first = await box.call("call_1", "t", '{"room": "hall"}')
    again = await box.call("call_1", "t", '{"room": "hall"}')
    assert again == first and len(runs(out)) == 1
    # Even with other arguments or another name: the id was answered.
    assert await box.call("call_1", "t", '{"room": "kitchen"}') == first
    # Concurrent duplicates share one run.
    outputs = await asyncio.gather(*(box.call("call_2", "t", '{"room": "kitchen"}')
                                     for _ in range(5)))
    assert len(set(outputs)) == 1 and len(runs(out)) == 2
    await box.call("call_3", "t", '{"room": "kitchen"}')
    assert len(runs(out)) == 3


async def test_exactly_once_holds_across_a_restart(tmp_path: Path) -> None:
    out, state = tmp_path / "runs.jsonl", tmp_path / "state"
    tools = [recorder(out, "{room}")]
    box = ToolBox(tools, state_dir=state, remember=3)
    first = await box.call("call_1", "t", '{"room": "hall"}')
    box = ToolBox(tools, state_dir=state, remember=3)  # the daemon restarted
    assert await box.call("call_1", "t", '{"room": "hall"}') == first
    assert len(runs(out)) == 1
    for i in range(2, 6):
        await box.call(f"call_{i}", "t", '{"room": "hall"}')
    saved = json.loads((state / "tool-calls.json").read_text())
    assert [c["call_id"] for c in saved["calls"]] == ["call_3", "call_4", "call_5"]  # bounded
    assert not [p for p in state.iterdir() if p.name.endswith(".tmp")]


async def test_a_call_cut_short_is_never_run_again(tmp_path: Path) -> None:
    pids, state = tmp_path / "pids.json", tmp_path / "state"
    tools = [spec("hang", timeout_s=20,
                  command={"argv": [sys.executable, str(HANG), str(pids)]})]
    box = ToolBox(tools, state_dir=state)
    task = asyncio.create_task(box.call("call_1", "hang", "{}"))
    await until(pids.exists, timeout=10, what="the command to start")
    # Recorded as started before it ran: a crash now would not run it again.
    saved = json.loads((state / "tool-calls.json").read_text())
    assert saved["calls"] == [{"call_id": "call_1", "output": None}]
    started = json.loads(pids.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(started["pid"])
    assert await box.call("call_1", "hang", "{}") == INTERRUPTED
    pids.unlink()
    box = ToolBox(tools, state_dir=state)  # restarted
    assert await box.call("call_1", "hang", "{}") == INTERRUPTED
    await box.aclose()
    assert not pids.exists()  # never started again


@pytest.mark.parametrize("content", [
    "{not json", "[" * 100000 + "]" * 100000, '{"version": 1, "calls": 3}',
    '{"version": 2, "calls": []}', '"x"', '{"version": 1, "calls": [{"call_id": 5}]}'])
async def test_an_unreadable_record_fails_closed(tmp_path: Path, content: str) -> None:
    # Starting empty could run a recorded call again: the ToolBox (so the daemon) refuses
    # to start, in one line that names the file and says what to do; the file is left alone.
    state = tmp_path / "state"
    state.mkdir()
    (state / "tool-calls.json").write_text(content)
    with pytest.raises(CallRecordError) as info:
        ToolBox([spec("now", builtin="get_time")], state_dir=state)
    message = str(info.value)
    assert "\n" not in message and str(state / "tool-calls.json") in message
    assert "move it aside" in message
    assert (state / "tool-calls.json").read_text() == content


async def test_the_record_is_capped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    box = ToolBox([spec("now", builtin="get_time")], state_dir=state, remember=300)
    huge = "x" * (MAX_OUTPUT_CHARS * 2)
    for i in range(300):
        box._store.remember(f"c{i}", json.dumps({"ok": True, "stdout": huge}))
    await box._store.save()
    assert (state / "tool-calls.json").stat().st_size < MAX_FILE_BYTES
    again = ToolBox([spec("now", builtin="get_time")], state_dir=state, remember=300)
    assert json.loads(await again.call("c5", "now", "{}")) == json.loads(TOO_LARGE)
    too_big = state / "tool-calls.json"
    too_big.write_text('{"version": 1, "calls": []}' + " " * MAX_FILE_BYTES)
    with pytest.raises(CallRecordError, match="larger than"):
        ToolBox([spec("now", builtin="get_time")], state_dir=state)


# --------------------------------------------------------------------------- limits


async def test_rate_limit_refuses_runs_beyond_the_limit(tmp_path: Path) -> None:
    out, clock = tmp_path / "runs.jsonl", Clock()
    box = ToolBox([recorder(out, "{room}", rate_limit={"max_calls": 2, "per_s": 10})],
                  clock=clock)
    good = '{"room": "hall"}'
    assert json.loads(await box.call("c1", "t", good))["ok"] is True
    assert json.loads(await box.call("bad", "t", '{"room": 1}'))["ok"] is False  # not a run
    clock.t += 4
    assert json.loads(await box.call("c2", "t", good))["ok"] is True
    refused = json.loads(await box.call("c3", "t", good))
    assert refused == {"ok": False, "error": "rate limit: at most 2 call(s) per 10 s; try "
                                             "again in 6 s"}
    assert len(runs(out)) == 2
    clock.t += 6  # the first run left the window
    assert json.loads(await box.call("c4", "t", good))["ok"] is True
    assert len(runs(out)) == 3


class Asker:
    """Stands for the daemon's spoken prompt: records what is asked, answers as told."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, str, float]] = []

    async def __call__(self, call_id: str, prompt: str, window_s: float) -> Answer:
        self.asked.append((call_id, prompt, window_s))
        return self.answers.pop(0)


async def test_confirmation_runs_only_on_a_short_yes_to_the_daemons_own_question(
        tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    ask = Asker(Answer("Yes, go ahead.", 1000.0), Answer("Okay, and what's the weather?", 1.0),
                Answer("no", 2.0), Answer(None, why="no answer within 8 s"),
                Answer("yes please", 3.0))
    tool = recorder(out, "{room}", confirm=True, confirm_prompt="Open the {room} window?")
    box = ToolBox([tool], ask=ask)

    async def call(call_id: str, room: str = "hall") -> dict[str, Any]:
        return json.loads(await box.call(call_id, "t", json.dumps({"room": room})))

    assert (await call("c1"))["ok"] is True
    # The question is the declared template with the validated arguments, not the model's.
    assert ask.asked[0] == ("c1", "Open the hall window?", 8.0)
    declined = {"ok": False, "error": "not done: declined by the user"}
    for call_id in ("c2", "c3", "c4"):  # a long "okay...", a no, silence
        assert await call(call_id, "kitchen") == declined
    assert (await call("c5", "kitchen"))["ok"] is True
    assert [r["argv"] for r in runs(out)] == [["hall"], ["kitchen"]]
    # The audit names the answer, also for a decline.
    assert box.audit("c1")["confirmed_by"] == "user"
    assert box.audit("c1")["confirmation"] == "Yes, go ahead."
    assert box.audit("c3")["outcome"] == "declined" and box.audit("c3")["confirmation"] == "no"
    assert box.audit("c4")["confirmation"] == "(no answer within 8 s)"
    # Invalid arguments are refused before anybody is asked; a repeated call id is not
    # asked again.
    bad = json.loads(await box.call("c6", "t", '{"room": "-rf"}'))
    assert bad["ok"] is False and len(ask.asked) == 5
    assert (await call("c1"))["ok"] is True and len(ask.asked) == 5


async def test_without_anybody_to_ask_a_confirm_tool_never_runs(tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    box = ToolBox([recorder(out, "{room}", confirm=True)])
    result = json.loads(await box.call("c1", "t", '{"room": "hall"}'))
    assert result == {"ok": False, "error": "not done: declined by the user"}
    assert runs(out) == [] and "nobody can be asked" in box.audit("c1")["error"]


async def test_a_declined_call_does_not_use_up_the_rate_limit(tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    ask = Asker(Answer("no"), Answer("yes"))
    box = ToolBox([recorder(out, "{room}", confirm=True,
                            rate_limit={"max_calls": 1, "per_s": 60})], ask=ask)
    assert json.loads(await box.call("c1", "t", '{"room": "hall"}'))["ok"] is False
    assert json.loads(await box.call("c2", "t", '{"room": "hall"}'))["ok"] is True
    # Rate limited: refused before the user is asked.
    assert "rate limit" in json.loads(await box.call("c3", "t", '{"room": "hall"}'))["error"]
    assert len(ask.asked) == 2


@pytest.mark.realtime  # elapsed wall-clock time and loop ticks
async def test_calls_run_concurrently_without_blocking_the_loop(tmp_path: Path) -> None:
    sleep = {"type": "object", "properties": {"s": {"type": "number", "maximum": 2}},
             "required": ["s"]}
    box = ToolBox([spec("sleep", parameters=sleep, command={"argv": ["sleep", "{s}"]}),
                   spec("now", builtin="get_time")])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)  # the probe: a blocked loop would stop the ticks
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    t0 = time.monotonic()
    slow = [asyncio.create_task(box.call(f"s{i}", "sleep", '{"s": 0.6}')) for i in range(4)]
    quick = json.loads(await box.call("n", "now", ""))
    quick_s = time.monotonic() - t0
    outputs = await asyncio.gather(*slow)
    elapsed = time.monotonic() - t0
    tick_task.cancel()
    assert quick["ok"] is True and quick_s < 0.3  # not queued behind the sleepers
    assert all(json.loads(o)["ok"] for o in outputs)
    assert elapsed < 1.8  # four 0.6 s commands side by side, not one after another (2.4 s)
    assert ticks >= elapsed / 0.01 * 0.5  # the loop kept turning


# --------------------------------------------------------------------------- audit


async def test_every_call_is_audited_with_structured_fields(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "runs.jsonl"
    box = ToolBox([recorder(out, "{room}")])
    caplog.set_level(logging.INFO, "edgevoice.tools")
    await box.call("c1", "t", '{"room": "hall"}')
    await box.call("c1", "t", '{"room": "hall"}')
    await box.call("c2", "t", '{"room": "cellar"}')
    await box.call("c3", "nope", "{}")
    records = [r for r in caplog.records if r.name == "edgevoice.tools"]
    got = [(r.call_id, r.tool, r.outcome, r.arguments) for r in records]  # type: ignore[attr-defined]
    # Arguments as compact JSON: the validated ones (defaults filled in) of a call that got
    # that far, else what the model sent.
    assert got == [
        ("c1", "t", "ok", '{"level":50,"room":"hall"}'),
        ("c1", "t", "duplicate", '{"room":"hall"}'),
        ("c2", "t", "invalid", '{"room":"cellar"}'),
        ("c3", "nope", "unknown_tool", "{}"),
    ]
    assert all(isinstance(r.duration_ms, int) for r in records)  # type: ignore[attr-defined]
    assert records[0].levelno == logging.INFO and records[2].levelno == logging.WARNING
    assert "cellar" in records[2].error  # type: ignore[attr-defined]
