"""Network faults through the whole daemon, all real: the loopback simulator on 127.0.0.1
drops, refuses, throttles or ignores the daemon at each point of the protocol while a user
speaks into the virtual sound card, and the daemon must get through on its own.

Every case checks the same five things:

1. **Recovery within the backoff.** The time from the fault to the session being ready again
   lies between the configured delay and the delay plus what detecting the fault takes
   (connect timeout, keepalive) plus :data:`MARGIN_S`.
2. **Context kept.** The new connection gets every earlier turn replayed, in order, as
   ``conversation.item.create`` events (and nothing else).
3. **No tool runs twice.** A real ``command`` tool logs each run.
4. **No user audio lost.** The question spoken into the microphone reaches the simulator
   whole (byte-exact from 100 ms before its first word) on the connection that commits it,
   and it is committed once; no turn is abandoned.
5. **The status says what is happening.** During the outage ``Daemon.snapshot()['link']``
   is in ``backoff`` (or ``auth_failed``) with a short reason, and ``status_line`` says it.

One daemon serves the whole module (starting one per case would not fit the time budget):
each case waits until the daemon is idle and disconnected, then puts a fresh simulator with
its own script on the same port, so every case has its own script and its own record of the
wire. What carries over is the conversation, and that is what check 2 is about: every case
is a turn of the same conversation, and :attr:`Shared.history` is what the test knows was
said so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from harness import MS16, onset, silence, wake_word

from edgevoice.config import Config
from edgevoice.conversation.core import State, Telemetry
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.daemon import Daemon
from edgevoice.devkit.demo import Rig, running_daemon
from edgevoice.devkit.simulator import ConnectionRecord, Simulator
from edgevoice.devkit.simulator.script import Script
from edgevoice.link.client import LinkState
from edgevoice.secrets import Secret
from edgevoice.service.status import status_line
from support import assert_no_client_errors, espeak, until

# One daemon on the real-time rig for the whole module (about a minute): backoffs and
# outages are timed in wall-clock time.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60),
              pytest.mark.realtime, pytest.mark.slow]

KEY = secrets.token_urlsafe(16)
BACKOFF_S = 0.25  # one step, no jitter: every reconnect delay is exactly this
AUTH_BACKOFF_S = 1.0
RETRY_AFTER_S = 2  # longer than the backoff, so honouring it shows
CONNECT_TIMEOUT_S = 1.0
# Generous against a loaded machine (a normal pong must never be late), short enough that a
# peer that stops answering is found while the user is still speaking the long question.
PING_INTERVAL_S = 0.5
PING_TIMEOUT_S = 1.0
# Longer than the backoff: after a drop at the end of a conversation the link is still
# wanted when the backoff ends, so it reconnects (and only then lets go).
IDLE_DISCONNECT_S = 0.5
MARGIN_S = 0.75  # connecting, configuring and a busy machine
EARLY_S = 0.05  # the watcher's sampling lag: a wait may look this much shorter

QUESTION = "what time is it"
LONG_QUESTION = "what is the weather like in the city today"

TOOL = """\
import json, sys
log, *args = sys.argv[1:]
with open(log, "a", encoding="utf-8") as f:
    f.write(json.dumps(args) + "\\n")
print("did " + " ".join(args))
"""
WINDOW = {"type": "object", "properties": {"side": {"type": "string", "enum": ["left", "right"]}},
          "required": ["side"], "additionalProperties": False}
WINDOW_OUTPUT = {"ok": True, "exit_status": 0, "stdout": "did open_window left"}

Entry = tuple[str, str]  # (kind, text) of one conversation item, see replayed()


# -- what the simulator saw -----------------------------------------------------------------


def replayed(conn: ConnectionRecord) -> list[Entry]:
    """The conversation items the daemon created on ``conn``, as (kind, text)."""
    out: list[Entry] = []
    for event in conn.received("conversation.item.create"):
        item = event["item"]
        if item["type"] == "message":
            out.append((item["role"], " ".join(c.get("text") or "" for c in item["content"])))
        elif item["type"] == "function_call":
            out.append(("function_call", f"{item['name']} {item['arguments']}"))
        else:
            out.append(("function_call_output", _canonical(item["output"])))
    return out


def _canonical(output: str) -> str:
    return json.dumps(json.loads(output), sort_keys=True)


@dataclass
class Sample:
    """What the status said at ``t`` (recorded when it changed)."""

    t: float
    state: str
    reason: str | None
    line: str
    retry_in: float | None


@dataclass
class Watch:
    """Samples the daemon's status and the simulator's record every few ms, with times, so
    that a short outage is seen and the fault's moment is known on the server's side."""

    daemon: Daemon
    sim: Simulator
    samples: list[Sample] = field(default_factory=list)
    attempts: list[tuple[float, int]] = field(default_factory=list)  # (t, HTTP status)
    accepted: dict[int, float] = field(default_factory=dict)  # connection index → t
    closed: dict[int, float] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.003)

    def sample(self) -> None:
        now = time.monotonic()
        snap = self.daemon.snapshot()
        link = snap["link"]
        line = status_line(snap)
        last = self.samples[-1] if self.samples else None
        if last is None or (last.state, last.reason, last.line) != (
                link["state"], link["reason"], line):
            self.samples.append(Sample(now, link["state"], link["reason"], line,
                                       link["retry_in"]))
        for attempt in self.sim.attempts[len(self.attempts):]:
            self.attempts.append((now, attempt.status))
        for conn in self.sim.connections:
            self.accepted.setdefault(conn.index, now)
            if conn.closed:
                self.closed.setdefault(conn.index, now)


# -- the shared daemon ----------------------------------------------------------------------


@dataclass
class Shared:
    daemon: Daemon
    rig: Rig
    sim: Simulator
    timeline: list[Telemetry]
    tmp: Path
    port: int  # where the daemon connects: every case's simulator listens here
    #: The conversation so far, as the replay must show it.
    history: list[Entry] = field(default_factory=list)

    def runs(self) -> list[list[str]]:
        log = self.tmp / "runs.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]

    async def idle(self) -> None:
        """Wait until the conversation is over and the link has let the connection go."""
        daemon = self.daemon

        def quiet() -> bool:
            return daemon.core.state is State.IDLE and daemon.link.state is LinkState.IDLE

        try:
            await until(quiet, 10, what="the daemon to be idle and disconnected")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: core {daemon.core.state}, link "
                                 f"{daemon.link.state}; a previous case left it busy") from None

    async def case(self, script: dict[str, Any], *, start: bool = True) -> Case:
        """A fresh simulator with ``script`` on the daemon's port (started with ``start``)."""
        await self.idle()
        await self.sim.close()
        self.sim = Simulator(port=self.port, script=Script.from_dict(script), api_key=KEY,
                             pace=1.0, strict=True)
        if start:
            await self.sim.start()
        watch = Watch(self.daemon, self.sim)
        watch.start()
        return Case(self, self.sim, len(self.timeline), watch, self.daemon.errors, self.runs(),
                    list(self.history))


@dataclass
class Case:
    shared: Shared
    sim: Simulator
    mark: int  # where this case starts in the timeline
    watch: Watch
    errors: int
    runs: list[list[str]]  # the tool's runs before this case
    history: list[Entry]  # the conversation before this case
    question: bytes = b""
    t0: float = field(default_factory=time.monotonic)

    def entries(self, name: TelemetryName) -> list[Telemetry]:
        return [e for e in self.shared.timeline[self.mark:] if e.name == name]

    def dump(self) -> str:
        entries = self.shared.timeline[self.mark:]
        status = "\n".join(f"{s.t - self.t0:8.3f} {s.state} {s.reason!r} {s.line!r}"
                           for s in self.watch.samples)
        return ("\n".join(f"{e.t - self.t0:8.3f} {e.name} {e.fields}" for e in entries)
                + f"\nstatus:\n{status}")

    def ask(self, text: str = QUESTION, *, trim: bool = True) -> None:
        """The wake word, the question, then the silence that makes the server's VAD commit
        it. ``trim`` cuts the wake word's padding (the model needs the leading second only
        right after the start, while its window fills)."""
        self.question = espeak(text)
        ww = wake_word()
        if trim:
            ww = ww[int(0.85 * 16000) * 2: int(1.9 * 16000) * 2]
        # The pause keeps the question clear of where the wake word's end is estimated.
        self.shared.rig.mic.feed(ww + silence(0.3) + self.question + silence(1.0))

    async def said(self, text: str, timeout: float = 20.0) -> None:
        """Wait until the assistant said ``text`` (its transcript came with the audio)."""
        try:
            await until(lambda: any(e.fields["text"] == text
                                    for e in self.entries(TelemetryName.ASSISTANT_SAID)),
                        timeout, what=f"the reply {text!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.dump()}") from None

    async def finish(self, *entries: Entry) -> None:
        """The case's turn is over: wait for idle, stop watching, and record what was said."""
        await self.shared.idle()
        await self.watch.stop()
        self.shared.history.extend(entries)

    # -- the five checks --

    def check_recovered(self, fault_t: float, wait_s: float, detect_s: float = 0.0) -> None:
        """1: the session was ready again (after the link went down) no sooner than
        ``wait_s`` after ``fault_t`` (the delay the daemon owed) and no later than that plus
        ``detect_s`` (noticing the fault) and the margin."""
        down = self.entries(TelemetryName.LINK_DOWN)
        assert down, f"the link never went down\n{self.dump()}"
        ready = [e for e in self.entries(TelemetryName.SESSION_READY) if e.t > max(fault_t, down[0].t)]
        assert ready, f"not ready again after the fault\n{self.dump()}"
        assert ready[0].fields["reconnected"] is True
        took = ready[0].t - fault_t
        assert wait_s - EARLY_S <= took <= wait_s + detect_s + MARGIN_S, (
            f"ready {took:.3f} s after the fault; expected {wait_s:g} s "
            f"(+{detect_s:g} s to notice, +{MARGIN_S} s)\n{self.dump()}")

    def check_context(self, conn: ConnectionRecord, *current: Entry) -> None:
        """2: the new connection got exactly the earlier turns, then this turn so far."""
        expected = [*self.history, *current]
        got = replayed(conn)
        assert got == expected, f"connection {conn.index} got:\n{got}\nexpected:\n{expected}"

    def check_user_audio(self, committed_on: int) -> None:
        """4: the question, from 100 ms before its first word, reached connection
        ``committed_on`` byte-exact, and that connection committed it — the only commit."""
        commits = [c.index for c in self.sim.connections
                   for _ in c.sent("input_audio_buffer.committed")]
        assert commits == [committed_on], f"commits on connections {commits}\n{self.dump()}"
        start = max(0, onset(self.question) - 100 * MS16)
        got = bytes(self.sim.connections[committed_on].appended_audio)
        assert self.question[start:] in got, (
            f"the question is not whole on connection {committed_on} "
            f"({len(got)} bytes received)\n{self.dump()}")
        assert not self.entries(TelemetryName.TURN_ABANDONED)

    def check_status(self, fault_t: float, state: str, reasons: str | tuple[str, ...],
                     retry_in: float) -> None:
        """5: the first status after the fault says why (one of ``reasons``) and when, in
        the snapshot and in the status line; then the link is back and the reason gone."""
        down = [s for s in self.watch.samples if s.t >= fault_t and s.state == state]
        assert down, f"no {state!r} status after the fault\n{self.dump()}"
        first = down[0]
        assert first.reason in ((reasons,) if isinstance(reasons, str) else reasons), self.dump()
        # Never more than the delay owed; less only by how late the watcher looked.
        assert first.retry_in is not None and retry_in - 0.15 <= first.retry_in <= retry_in, first
        when = max(1, math.ceil(retry_in))
        assert first.line == (f"Voice Live: authentication failed, retrying in {when} s"
                              if state == "auth_failed"
                              else f"reconnecting in {when} s ({first.reason})"), first
        after = [s for s in self.watch.samples if s.t > first.t and s.state == "ready"]
        assert after and after[0].reason is None, f"not ready after the outage\n{self.dump()}"

    def check_no_errors(self) -> None:
        assert self.shared.daemon.errors == self.errors
        assert_no_client_errors(self.sim, self.dump())


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    tmp = tmp_path_factory.mktemp("faults")
    tool_py = tmp / "tool.py"
    tool_py.write_text(TOOL, encoding="utf-8")
    cfg = Config.model_validate({
        "voicelive": {"backoff_s": [BACKOFF_S], "backoff_jitter": 0.0,
                      "auth_failure_backoff_s": AUTH_BACKOFF_S,
                      "connect_timeout_s": CONNECT_TIMEOUT_S,
                      "ping_interval_s": PING_INTERVAL_S, "ping_timeout_s": PING_TIMEOUT_S,
                      "replay_max_items": 200},
        "conversation": {"follow_up_s": 0.0, "idle_disconnect_s": IDLE_DISCONNECT_S,
                         "earcon": False},
        # Short turns: the service commits after 300 ms of silence.
        "session": {"turn_detection": {"silence_duration_ms": 300}},
        "tools": [{"name": "open_window", "description": "Open a window.",
                   "parameters": WINDOW,
                   "command": {"argv": [sys.executable, str(tool_py), str(tmp / "runs.jsonl"),
                                        "open_window", "{side}"]}}],
    })
    timeline: list[Telemetry] = []
    warmup = {"turn": [{"user": "hello", "say": "Hi."}]}
    async with running_daemon(cfg, tmp / "rig", script=Script.from_dict(warmup),
                              api_key=Secret(KEY), on_telemetry=timeline.append,
                              strict=True) as run:
        assert run.simulator is not None
        s = Shared(run.daemon, run.rig, run.simulator, timeline, tmp, run.simulator.port)
        # An earlier turn, so that the first case has a conversation to keep.
        case = Case(s, s.sim, 0, Watch(s.daemon, s.sim), 0, [], [])
        case.ask("hello there", trim=False)
        await case.said("Hi.")
        await case.finish(("user", "hello"), ("assistant", "Hi."))
        assert_no_client_errors(s.sim, case.dump())
        try:
            yield s
        finally:
            await s.sim.close()
    assert run.daemon.errors == 0


# -- faults on connecting -------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectFault:
    spec: dict[str, Any]  # the [[connection]] entry
    state: str  # the link's state during the outage
    reason: str  # what the status says about it
    question: str = QUESTION


CONNECT_FAULTS: dict[str, ConnectFault] = {
    "http-401": ConnectFault({"http_status": 401}, "auth_failed",
                             "authentication failed, HTTP 401"),
    "http-403": ConnectFault({"http_status": 403}, "auth_failed",
                             "authentication failed, HTTP 403"),
    "http-404": ConnectFault({"http_status": 404}, "backoff", "HTTP 404 on connect"),
    "http-429": ConnectFault({"http_status": 429, "retry_after": RETRY_AFTER_S}, "backoff",
                             "throttled, HTTP 429"),
    "http-500": ConnectFault({"http_status": 500}, "backoff", "HTTP 500 on connect"),
    "drop-before-session-created": ConnectFault({"drop": "before-session-created"}, "backoff",
                                                "connection closed before session.created"),
    "silent": ConnectFault({"silent": True}, "backoff",
                           f"no session.created from the server in {CONNECT_TIMEOUT_S:g} s"),
    # The long question: the keepalive gives up while the user is still speaking.
    "no-pong": ConnectFault({"no_pong": True}, "backoff",
                            "connection lost (keepalive ping timeout)", LONG_QUESTION),
}


@pytest.mark.parametrize("name", list(CONNECT_FAULTS))
async def test_fault_on_connecting_after_the_wake_word(shared: Shared, name: str) -> None:
    """The wake word opens a connection and the server fails it; what the user says
    meanwhile is kept and answered on the next connection."""
    fault = CONNECT_FAULTS[name]
    spec = fault.spec
    user, say = f"question on {name}", "Noon."
    case = await shared.case({"connection": [spec], "turn": [{"user": user, "say": say}]})
    case.ask(fault.question)
    await case.said(say)
    await case.finish(("user", user), ("assistant", say))
    w = case.watch

    wait, detect = BACKOFF_S, 0.0
    if "http_status" in spec:
        (fault_t, status), *_ = w.attempts
        assert [s for _, s in w.attempts] == [spec["http_status"], 101]
        new = 0  # the refused upgrade never became a connection
        if status in (401, 403):
            wait = AUTH_BACKOFF_S
        elif status == 429:
            wait = max(BACKOFF_S, RETRY_AFTER_S)
    elif spec.get("silent") or spec.get("no_pong"):
        fault_t, new = w.accepted[0], 1  # faulty from the start: noticed by a timeout
        detect = CONNECT_TIMEOUT_S if spec.get("silent") else PING_INTERVAL_S + PING_TIMEOUT_S
    else:
        fault_t, new = w.closed[0], 1
    assert case.sim.connection_count == new + 1
    assert len(case.entries(TelemetryName.LINK_DOWN)) == 1, case.dump()
    if spec.get("silent"):
        assert case.sim.connections[0].received_events == [], "sent before session.created"

    case.check_recovered(fault_t, wait, detect)
    case.check_context(case.sim.connections[new])
    assert shared.runs() == case.runs  # 3: nothing asked for a tool, nothing ran again
    case.check_user_audio(committed_on=new)
    case.check_status(fault_t, fault.state, fault.reason, wait)
    case.check_no_errors()


async def test_refused_port_until_the_server_is_back(shared: Shared) -> None:
    """Nothing listens on the port when the wake word comes; the daemon keeps trying on its
    schedule and gets through once the server is started again on the same port."""
    user, say = "question while refused", "Noon."
    case = await shared.case({"turn": [{"user": user, "say": say}]}, start=False)
    case.ask()
    await until(lambda: len(case.entries(TelemetryName.LINK_DOWN)) >= 3, 10, what="three refusals")
    back_t = time.monotonic()
    await case.sim.start()
    await case.said(say)
    await case.finish(("user", user), ("assistant", say))

    downs = [e.t for e in case.entries(TelemetryName.LINK_DOWN)]
    gaps = [b - a for a, b in zip(downs, downs[1:], strict=False)]
    # Each retry after the configured delay, not at once and not later than it plus a try.
    assert all(BACKOFF_S - EARLY_S <= g <= BACKOFF_S + MARGIN_S for g in gaps), gaps
    case.check_recovered(back_t, 0.0, BACKOFF_S)
    assert case.sim.connection_count == 1
    case.check_context(case.sim.connections[0])
    assert shared.runs() == case.runs
    case.check_user_audio(committed_on=0)
    case.check_status(case.t0, "backoff", "cannot connect: connection refused", BACKOFF_S)
    case.check_no_errors()


# -- drops during a turn --------------------------------------------------------------------


@dataclass(frozen=True)
class TurnDrop:
    close_code: int | None  # None: the TCP connection is aborted (the daemon sees 1006)
    committed: bool  # the drop comes after the service committed the user's turn
    replied: bool  # ... and after its reply was complete
    reasons: tuple[str, ...] = ("connection lost (code 1006)",)


TURN_DROPS: dict[str, TurnDrop] = {
    # Right after session.updated the daemon is replaying the conversation: the drop is
    # seen by that write or, if the write still went out, by the reader once ready.
    "after-session-updated": TurnDrop(None, committed=False, replied=False, reasons=(
        "connection lost while configuring", "connection lost (code 1006)")),
    "mid-user-audio": TurnDrop(None, committed=False, replied=False),
    "mid-audio": TurnDrop(None, committed=True, replied=False),
    "after-response-done": TurnDrop(1011, committed=True, replied=True,
                                    reasons=("connection lost (code 1011)",)),
}


@pytest.mark.parametrize("point", list(TURN_DROPS))
async def test_drop_during_a_turn(shared: Shared, point: str) -> None:
    """The connection drops at one point of a turn; the daemon reconnects, replays the
    conversation, and the turn is answered once, in full."""
    drop = TURN_DROPS[point]
    user, say = f"question on {point}", "Noon."
    turn: dict[str, Any] = {"user": user, "say": say, "drop": point}
    if drop.close_code is not None:
        turn["close_code"] = drop.close_code
    case = await shared.case({"turn": [turn]})
    case.ask()
    await case.said(say)
    if drop.replied:
        # The reply was complete before the drop: wait for the link to be back anyway.
        await until(lambda: len(case.entries(TelemetryName.SESSION_READY)) >= 2, 10, what="a reconnect")
    await case.finish(("user", user), ("assistant", say))

    fault_t = case.watch.closed[0]
    assert case.sim.connection_count == 2
    assert len(case.entries(TelemetryName.LINK_DOWN)) == 1, case.dump()
    case.check_recovered(fault_t, BACKOFF_S)
    # The turn so far goes with the conversation: the user's words once committed, the
    # reply once complete (a cut reply is asked for again, not replayed).
    current = [("user", user)] if drop.committed else []
    if drop.replied:
        current.append(("assistant", say))
    case.check_context(case.sim.connections[1], *current)
    assert shared.runs() == case.runs
    case.check_user_audio(committed_on=0 if drop.committed else 1)
    # The reply was spoken once in full, on whichever connection completed it.
    assert [e.fields["text"] for e in case.entries(TelemetryName.ASSISTANT_SAID)] == [say]
    case.check_status(fault_t, "backoff", drop.reasons, BACKOFF_S)
    case.check_no_errors()


async def test_drop_between_a_function_call_and_its_output(shared: Shared) -> None:
    """The model calls a tool and the connection drops before the output is sent: the tool
    runs once, its output goes to the new connection once, and the reply follows."""
    user, after = "open the left window", "The window is open."
    call = {"name": "open_window", "arguments": {"side": "left"}}
    case = await shared.case({"turn": [{"user": user, "calls": [call], "after_tools": after,
                                        "drop": "after-function-call"}]})
    case.ask()
    await case.said(after)
    arguments = json.dumps(call["arguments"], separators=(",", ":"))
    entries = [("user", user), ("function_call", f"open_window {arguments}"),
               ("function_call_output", json.dumps(WINDOW_OUTPUT, sort_keys=True))]
    await case.finish(*entries, ("assistant", after))

    fault_t = case.watch.closed[0]
    assert case.sim.connection_count == 2
    case.check_recovered(fault_t, BACKOFF_S)
    # Nothing of the call on the dropped connection; on the new one the call, then its
    # output, each once; then one response.
    case.check_context(case.sim.connections[0])
    case.check_context(case.sim.connections[1], *entries)
    assert [len(c.received("response.create")) for c in case.sim.connections] == [0, 1]
    assert shared.runs() == [*case.runs, ["open_window", "left"]]
    assert len(case.entries(TelemetryName.TOOL_CALL)) == 1
    case.check_user_audio(committed_on=0)
    case.check_status(fault_t, "backoff", "connection lost (code 1006)", BACKOFF_S)
    case.check_no_errors()
