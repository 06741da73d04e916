"""Tool faults through the whole daemon, all real: the loopback simulator plays the model and
calls declared ``command`` tools that hang, crash, get killed, print megabytes or are called a
hundred times in one response; the in-process daemon (:func:`harness.running`) runs them as
real subprocesses and sends the outputs back.

What must hold whatever a tool does: the model gets exactly one output per call_id naming what
went wrong, exactly one ``response.create`` follows, nothing runs twice, the reply after the
tools is spoken, the conversation goes on — and the daemon's event loop (the same loop as this
test's) never blocks: the microphone frames keep flowing and the watchdog check stays healthy.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import Harness, hear, running, said, silence, wake_word

from edgevoice.conversation.core import State
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.daemon import Daemon
from support import alive, espeak, quiet, until

# The whole daemon on the real-time rig; the loop's lag is measured in wall-clock time.
pytestmark = [pytest.mark.timeout(60), pytest.mark.realtime]

#: One program for every tool: it logs each run (name, arguments, its pids) to a JSON-lines
#: file first, then misbehaves as its mode says.
TOOL = """\
import json, os, signal, subprocess, sys, time
log, name, mode, *args = sys.argv[1:]
pids = [os.getpid()]
if mode == "hang":  # a grandchild in the same process group, as a shell script would leave
    pids.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid)
with open(log, "a", encoding="utf-8") as f:
    f.write(json.dumps({"name": name, "args": args, "pids": pids}) + "\\n")
if mode == "hang":
    time.sleep(60)
elif mode == "crash":
    sys.stderr.write("boom: the relay is stuck\\n")
    sys.exit(3)
elif mode == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
elif mode == "megabytes":
    for _ in range(MEGABYTES):
        sys.stdout.buffer.write(b"x" * (1 << 20))
else:
    print("did", name, *args)
"""
MEGABYTES = 32
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {},
                                 "additionalProperties": False}
NUMBERED = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
            "additionalProperties": False}
MAX_LAG_S = 0.5  # a blocked loop stalls for the tool's whole run (1 s and more)


# -- helpers ------------------------------------------------------------------------------


def tool(tmp_path: Path, name: str, mode: str, *, parameters: dict[str, Any] = NO_PARAMETERS,
         command: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A ``[[tools]]`` entry running :data:`TOOL` in ``mode``; each parameter is passed on."""
    script = tmp_path / "tool.py"
    script.write_text(TOOL.replace("MEGABYTES", str(MEGABYTES)), encoding="utf-8")
    placeholders = [f"{{{p}}}" for p in parameters["properties"]]
    argv = [sys.executable, str(script), str(tmp_path / "runs.jsonl"), name, mode,
            *placeholders]
    return {"name": name, "description": f"The {name} action.", "parameters": parameters,
            "command": {"argv": argv, **(command or {})}, **extra}


def runs(tmp_path: Path, name: str | None = None) -> list[dict[str, Any]]:
    """Every run of a tool so far (of ``name`` only, if given)."""
    log = tmp_path / "runs.jsonl"
    if not log.exists():
        return []
    every = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    return [r for r in every if name is None or r["name"] == name]


def calls(h: Harness) -> list[dict[str, Any]]:
    """The function calls the simulator (the model) made."""
    return h.sim.sent("response.function_call_arguments.done")


def outputs(h: Harness) -> list[tuple[str, str]]:
    """``(call_id, raw output)`` of every function_call_output the simulator received."""
    return [(e["item"]["call_id"], e["item"]["output"])
            for e in h.sim.received("conversation.item.create")
            if e["item"]["type"] == "function_call_output"]


def by_call(h: Harness) -> dict[str, dict[str, Any]]:
    """Each call's parsed output by the call's name and position: ``{"hang": {...}}`` or, for
    repeated names, ``{"bump#3": {...}}``."""
    got = dict(outputs(h))
    out: dict[str, dict[str, Any]] = {}
    for i, c in enumerate(calls(h)):
        key = c["name"] if c["name"] not in out else f"{c['name']}#{i}"
        out[key] = json.loads(got[c["call_id"]])
    return out


def received_types(h: Harness) -> list[str]:
    """Client event types (audio appends left out); an item.create is ``item:<type>``."""
    return [f"item:{e['item']['type']}" if e["type"] == "conversation.item.create" else e["type"]
            for c in h.sim.connections for e in c.received_events
            if e["type"] != "input_audio_buffer.append"]


def ask(h: Harness, text: str) -> None:
    """The wake word, then ``text``; the simulator's server VAD commits it. The clip's second
    of trailing silence is cut (the word is detected within 0.2 s of its end): a shorter turn."""
    word = wake_word()
    loud = np.flatnonzero(np.abs(np.frombuffer(word, "<i2").astype(np.int32)) > 300)
    h.say(word[:(int(loud[-1]) + 1600) * 2] + silence(0.3) + espeak(text) + silence(0.8))


async def follow_up(h: Harness, text: str) -> None:
    await until(lambda: h.daemon.core.state is State.FOLLOW_UP, 20, what="the follow-up")
    h.say(espeak(text) + silence(0.8))


class LoopWatch:
    """While active, samples how late this event loop — the daemon's — wakes up from a 20 ms
    sleep, whether the daemon's watchdog check holds, and how many microphone frames arrive."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.max_lag = 0.0
        self.unhealthy = 0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopWatch:
        self._t0 = time.monotonic()
        self._frames0 = self.daemon.capture.frames
        self._dropped0 = self.daemon.capture.stats.dropped_buffers
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.elapsed = time.monotonic() - self._t0
        self.frames = self.daemon.capture.frames - self._frames0
        self.dropped = self.daemon.capture.stats.dropped_buffers - self._dropped0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.02)  # the probe: how late this wakes up is the loop's lag
            self.max_lag = max(self.max_lag, loop.time() - t - 0.02)
            self.samples += 1
            self.unhealthy += not self.daemon.healthy()

    def check(self) -> None:
        """The loop stayed responsive and the microphone delivered throughout."""
        frame_s = self.daemon.cfg.audio.frame_ms / 1000
        summary = (f"{self.elapsed:.2f} s: max loop lag {self.max_lag * 1000:.0f} ms, "
                   f"{self.frames} frames, {self.dropped} dropped, {self.unhealthy} unhealthy")
        assert self.samples >= 5, summary
        assert self.max_lag < MAX_LAG_S, summary
        assert self.unhealthy == 0, summary
        assert self.dropped == 0, summary
        # Paced in real time; half of the frames is slack for a loaded machine.
        assert self.frames >= 0.5 * self.elapsed / frame_s, summary


# -- 1. tools that hang, crash, get killed or print megabytes ---------------------------


async def test_hung_crashed_and_killed_tools_answer_errors_and_megabytes_of_output_are_capped(
        tmp_path: Path) -> None:
    cap = 3000
    script = {"turn": [
        {"user": "the garage", "calls": [{"name": "hang"}, {"name": "crash"},
                                         {"name": "killed"}],
         "after_tools": "Sorry, no."},
        {"user": "the log", "calls": [{"name": "dump_log"}], "after_tools": "Long log."},
    ]}
    tools = [tool(tmp_path, "hang", "hang", timeout_s=1.0),
             tool(tmp_path, "crash", "crash"), tool(tmp_path, "killed", "kill"),
             tool(tmp_path, "dump_log", "megabytes", command={"max_output_bytes": cap})]
    async with running(tmp_path, script, tools=tools, conversation={"follow_up_s": 8.0}) as h:
        ask(h, "the garage")
        await h.event(TelemetryName.TOOL_CALL, 3)
        async with LoopWatch(h.daemon) as watch:
            await h.event(TelemetryName.TOOL_OUTPUT, 3, timeout=10)
        watch.check()
        await hear(h, "Sorry, no.")

        out = by_call(h)
        # The hung tool: stopped at its timeout, and the model is told so.
        assert out["hang"] == {"ok": False, "error": "timed out after 1 s and was stopped"}
        hang = {r["name"]: r for r in h.daemon.tool_calls}["hang"]
        assert 1000 <= hang["ms"] < 3500, hang
        # Its whole process group is gone: the tool and the grandchild it started.
        (run,) = runs(tmp_path, "hang")
        assert len(run["pids"]) == 2
        await until(lambda: not any(alive(p) for p in run["pids"]), 5,
                    what=f"the hung tool's processes {run['pids']} to die")
        # The crashed tool: its exit status and stderr's last line.
        assert out["crash"]["ok"] is False and out["crash"]["exit_status"] == 3
        assert out["crash"]["error"].endswith("exited with status 3: boom: the relay is stuck")
        # The killed tool: the signal.
        assert out["killed"]["ok"] is False and out["killed"]["exit_status"] == -9
        assert out["killed"]["error"].endswith("killed by signal 9")
        # No retry: each ran once; one output per call, then one response.create.
        assert sorted(r["name"] for r in runs(tmp_path)) == ["crash", "hang", "killed"]
        assert sorted(cid for cid, _ in outputs(h)) == sorted(c["call_id"] for c in calls(h))
        types = received_types(h)
        assert types.count("item:function_call_output") == 3
        assert types.count("response.create") == 1
        assert types.index("response.create") > max(
            i for i, t in enumerate(types) if t == "item:function_call_output")

        # The conversation goes on: a follow-up request (no wake word) runs a tool that
        # pours out megabytes. Python allocations meanwhile: a buffered copy of the output
        # would show as a peak of its size.
        espeak("the log")  # synthesized (a blocking subprocess) before the watch starts
        tracemalloc.start()
        try:
            async with LoopWatch(h.daemon) as watch:
                await follow_up(h, "the log")
                await h.event(TelemetryName.TOOL_OUTPUT, 4, timeout=15)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        watch.check()
        await hear(h, "Long log.")
        assert peak < MEGABYTES * (1 << 20) // 4, f"peak {peak / 1e6:.1f} MB"
        raw = dict(outputs(h))[calls(h)[-1]["call_id"]]
        assert len(raw) < cap + 200, len(raw)  # what went to the model is capped
        assert json.loads(raw) == {"ok": True, "exit_status": 0, "stdout": "x" * cap,
                                   "truncated": True}

        assert said(h) == ["Sorry, no.", "Long log."]
        assert h.names().count(TelemetryName.WAKE) == 1
        assert len(runs(tmp_path)) == 4  # nothing ran again
        assert len(h.sim.received("response.create")) == 2  # one per set of outputs


# -- 2. a hundred calls at once ------------------------------------------------------------


async def test_a_hundred_calls_at_once_are_rate_limited_each_answered_once_with_one_response(
        tmp_path: Path) -> None:
    n_calls, repeats, limit = 100, 10, 5
    # One response with 100 calls; the last 10 repeat the first 10 (same call_id and
    # arguments), as a glitching model or a replay would.
    burst = [{"name": "bump", "arguments": {"n": i % (n_calls - repeats)},
              "call_id": f"call_bump_{i % (n_calls - repeats)}"} for i in range(n_calls)]
    distinct = n_calls - repeats
    script = {"turn": [{"user": "bump it", "calls": burst, "after_tools": "Bumped."}]}
    tools = [tool(tmp_path, "bump", "ok", parameters=NUMBERED,
                  rate_limit={"max_calls": limit, "per_s": 10})]
    async with running(tmp_path, script, tools=tools) as h:
        espeak("bump it")  # synthesized (a blocking subprocess) before the watch starts
        # The whole turn: the burst itself takes a few tens of milliseconds.
        async with LoopWatch(h.daemon) as watch:
            ask(h, "bump it")
            await h.event(TelemetryName.TOOL_OUTPUT, distinct, timeout=20)
            await hear(h, "Bumped.")
        watch.check()
        # Anything more the daemon would send or run: wait until nothing new comes for 0.5 s.
        await quiet(lambda: (len(received_types(h)), len(runs(tmp_path))), 0.5,
                    what="the daemon's requests and tool runs")

        made = calls(h)
        assert len(made) == n_calls
        number = {c["call_id"]: json.loads(c["arguments"])["n"] for c in made}
        assert len(number) == distinct
        got = outputs(h)
        # Each call_id answered exactly once, the repeated ones too.
        assert sorted(cid for cid, _ in got) == sorted(number)
        parsed = {cid: json.loads(o) for cid, o in got}
        done = sorted(number[cid] for cid, o in parsed.items() if o["ok"])
        refused = [o for o in parsed.values() if not o["ok"]]
        # The limit let `limit` run — the first ones — and refused the rest, saying why.
        assert done == list(range(limit)), done
        assert len(refused) == distinct - limit
        assert all(o["error"].startswith(f"rate limit: at most {limit} call(s) per 10 s")
                   for o in refused), refused[0]
        # Nothing ran twice (nor the repeated calls), and only what the outputs say ran.
        ran = [int(r["args"][0]) for r in runs(tmp_path)]
        assert sorted(ran) == done
        for cid, o in parsed.items():
            if o["ok"]:
                assert o["stdout"] == f"did bump {number[cid]}"
        # All outputs, then exactly one response.create.
        types = received_types(h)
        assert types.count("response.create") == 1
        assert types[-distinct - 1:] == ["item:function_call_output"] * distinct + [
            "response.create"]
        assert said(h) == ["Bumped."]
