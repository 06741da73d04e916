"""The soak run (``scripts/soak``): thousands of accelerated turns through the whole daemon,
with random faults, checking every turn and the daemon's health at the end.

What runs, all real: ``edgevoice run --config FILE`` as a child process (so its memory and
file descriptors are the daemon's alone), on the demo's virtual sound card (:class:`Rig`:
ALSA ``file`` PCMs on FIFOs) whose two device clocks run at ``speed`` times real time, against
the loopback :class:`~edgevoice.devkit.simulator.Simulator` on 127.0.0.1 (replies sent as
fast as they are made). This process is the service manager (a notify socket), the user (it
speaks the bundled recordings into the microphone), the room (it unplugs the microphone) and
the network (the simulator's script drops connections and refuses upgrades; bad frames are
injected). It watches the daemon through ``edgevoice status``'s socket and its stderr log.

Acceleration: the daemon dates frames by their arrival (``capture.py``) and times everything
else with its monotonic clock, so at ``speed`` k one second of audio passes in 1/k s of the
daemon's time. Audio-counted settings (VAD padding and tails, the service's turn detection,
barge-in lengths) need nothing; the wall-clock ones are set for the compressed time (see
:func:`daemon_config`): the follow-up window, the listen timeout, the wake word's refractory
period, the echo guard's delay and spread, the link's timeouts and backoffs.

A turn is: (the wake word and) one utterance; then the simulator's server VAD commits it, the
model's scripted reply (perhaps after tool calls) plays, and the daemon goes back to the
follow-up window or to idle. Most turns are follow-ups within a conversation; a conversation
starts with the wake word (sometimes on a cold connection), and ends when the model calls
``stop_conversation`` or the follow-up window runs out; the wake word also comes within a
conversation now and then. Each turn is checked: the daemon started a new turn; the simulator
received at least the utterance's voiced audio (nothing was lost upstream, so the daemon kept
up) and committed it; a reply with audio completed after it and reached the speaker; the
daemon came back to ``follow_up`` or ``idle``; its ``errors`` counter did not move.

Faults (seeded, about one every four turns; the kinds are counted as they really happen):

- the script's turn drops (``after-session-updated``, ``mid-user-audio``, ``mid-audio``,
  ``after-function-call``, ``after-response-done``) and connection faults (HTTP 429 with
  ``Retry-After``, HTTP 500, ``silent``, ``no_pong``, ``before-session-created``), counted
  from the simulator's :attr:`~edgevoice.devkit.simulator.Simulator.fired` record;
- bad server frames (:meth:`Simulator.inject`: malformed, unknown, stale, deeply nested,
  non-UTF-8) and an oversized frame (above ``max_message_mib``: the connection is closed);
- tool faults: declared ``command`` tools that hang past their timeout, crash (exit status or
  signal) or print megabytes; each output the model receives is checked;
- the microphone vanishing (its pacer stalls and its PCM leaves the ALSA config) and
  returning; SIGHUP reloads with a valid and with an invalid config file.

A fault is *recovered* when a turn that started after it was served. Criteria (the exit
status is 1 when one fails): every turn served, every fault recovered, tool outputs as
expected, no unhandled exception (no traceback in the log, the daemon's ``errors`` counter 0),
RSS growth at most :data:`MAX_RSS_GROWTH_MB` from after the warm-up turns to the end, no file
descriptor growth over the same span (both measured at a quiet moment, where ``edgevoice
status --json`` is also run and must answer), a clean exit on SIGTERM, no time bound hit.

Guarantees: every loop here is bounded (turns by count, waits by timeouts, the whole run by
``max_minutes``, after which it stops by itself, says so and fails); everything listens on
127.0.0.1 or on unix sockets in a private directory that is removed at the end; memory here
stays bounded (simulator records and speaker audio are trimmed as they are tallied).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

import edgevoice
from edgevoice.audio.convert import read_wav, resample
from edgevoice.devkit.demo import MIC_RATE, Rig
from edgevoice.devkit.simulator import Simulator
from edgevoice.devkit.simulator.script import Script
from edgevoice.service.status import StatusUnavailable, query_status
from edgevoice.util import data_path
from support import MANAGER_VARS, NotifyListener

#: Both device clocks run this many times faster than real time by default: the highest
#: speed at which the daemon kept up on a 2-core x86_64 machine shared with other work (no
#: lost upstream audio, watchdog pings on time), with room to spare.
DEFAULT_SPEED = 6.0
MAX_RSS_GROWTH_MB = 5.0
#: Memory and descriptors are compared from after this share of the turns (at least one, at
#: most WARMUP_MAX): first-use allocations (imports, caches, allocator arenas) are not leaks.
#: No reload and no unplugged microphone within that many turns of either measurement, so
#: that both see a daemon that has been serving for a while (a reload starts a fresh one).
WARMUP_SHARE = 0.05
WARMUP_MAX = 100
WARMUP_FAULTS_FROM = 10  # warm-ups this long include one reload and one unplugged microphone
SAMPLE_EVERY = 100  # turns between progress lines (RSS, descriptors, faults so far)
TURN_TIMEOUT_S = 30.0  # wall seconds one turn may take, faults included
READY_TIMEOUT_S = 60.0  # process start, model loading, devices
STOP_TIMEOUT_S = 15.0
MAX_CONSECUTIVE_FAILURES = 5  # then the daemon has stopped serving: the run ends
EXTRA_TURNS = 3  # at most, after the last one, to see the last faults recovered
#: The last seconds of ``max_minutes``: no new turn starts within MEASURE_RESERVE_S +
#: STOP_RESERVE_S of the end (the final measurement waits for a quiet daemon), and whatever
#: runs is cut off STOP_RESERVE_S before it (stopping the daemon is bounded by that).
MEASURE_RESERVE_S = 20.0
STOP_RESERVE_S = STOP_TIMEOUT_S + 10.0

#: The simulator's energy VAD: a 10 ms frame louder than this is voiced (its default gate).
VOICED_DBFS = -45.0
VAD_FRAME_SAMPLES = MIC_RATE // 100
#: A turn must deliver at least this share of its utterance's voiced frames upstream.
MIN_VOICED_SHARE = 0.9
SPEAKER_LOUD = 300  # a speaker sample above this is reply audio, not silence
MIN_REPLY_SAMPLES = 2400  # 100 ms at 24 kHz

#: Short replies: reply audio is wall time on every turn.
REPLIES = ("Okay.", "Sure.", "Noted.", "Right.", "Done.", "Got it.")
#: The user's utterances: (bundled 16 kHz recording, seconds to keep from its start or None
#: for all of it, how often it is said). The first word of demo/stop.wav is a short request.
UTTERANCES: tuple[tuple[str, float | None, int], ...] = (
    ("demo/stop.wav", 0.5, 4), ("demo/light.wav", None, 1))
#: The service's end-of-turn silence (session.turn_detection.silence_duration_ms): shorter than
#: its default 500 ms, as it is audio time on every turn; the gaps in the recordings and
#: between the wake word and the request (WAKE_GAP_S) are shorter still.
SILENCE_MS = 300
WAKE_GAP_S = 0.15
#: The follow-up window, wall time: long enough for the soak to see it open and speak (a poll
#: and the pipeline, well under 0.3 s even on a busy machine), short as it is waited out now
#: and then.
FOLLOW_UP_S = 1.2
LEAD_S = 0.05  # silence before a follow-up request
WAKE_CLIP = "demo/wake.wav"
#: openWakeWord scores a word only with this much audio before it (the wake gate's preroll,
#: 2 s by default): after the microphone (re)opens, the soak waits this long of audio time
#: before it says the wake word, as a user would not speak into a device that just started.
WAKE_CONTEXT_S = 2.5

# -- turn shapes and fault rates (probabilities per turn, or per connection attempt) ---------

P_WAKE_IN_CONVERSATION = 0.12  # the wake word again within the follow-up window
P_LET_FOLLOW_UP_EXPIRE = 0.02  # wait for the follow-up window to run out
P_COLD_START = 0.25  # before a wake word from idle, wait until the link was closed
P_STOP = 0.15  # the model ends the conversation (stop_conversation)
P_TOOL_OK = 0.04
P_TOOL_FAULT = {"hang": 0.02, "crash": 0.02, "flood": 0.02}
P_TURN_DROP = {"after-session-updated": 0.03, "mid-user-audio": 0.015, "mid-audio": 0.015,
               "after-function-call": 0.01, "after-response-done": 0.015}
P_CONNECTION_FAULT = 0.2  # of connection attempts (never two in a row)
CONNECTION_FAULTS: tuple[dict[str, Any], ...] = (
    {"http_status": 429, "retry_after": 1},
    {"http_status": 500},
    {"silent": True},
    {"no_pong": True},
    {"drop": "before-session-created"},
)
P_BAD_FRAMES = 0.05
P_OVERSIZED = 0.008
P_MIC_VANISH = 0.008
P_RELOAD = 0.01
P_RELOAD_INVALID = 0.005

TOOL_TIMEOUT_S = 0.5
TOOL_MAX_OUTPUT = 4096
FLOOD_BYTES = 4 * 1024 * 1024

#: The command tools' program: ``ok`` prints a line, ``hang`` sleeps far past the timeout,
#: ``crash exit|signal`` dies, ``flood`` prints FLOOD_BYTES.
TOOL_PROGRAM = f"""\
import os, signal, sys, time
how = sys.argv[1]
if how == "ok":
    print("ok")
elif how == "hang":
    time.sleep(120)
elif how == "crash":
    print("partial output", flush=True)
    if sys.argv[2] == "signal":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.exit(3)
elif how == "flood":
    chunk = b"x" * 65536
    for _ in range({FLOOD_BYTES} // 65536):
        sys.stdout.buffer.write(chunk)
"""

#: Frames the daemon must skip or ignore (never act on, never crash on).
BAD_FRAMES: tuple[str | bytes, ...] = (
    "this is not JSON",
    "[1, 2, 3]",
    "null",
    '{"no_type": true}',
    '{"type": 42}',
    '{"type": "response.audio.delta"}',
    '{"type": "response.audio.delta", "event_id": "soak_1", "response_id": "resp_stale", '
    '"item_id": "item_stale", "output_index": 0, "content_index": 0, "delta": "AAAAAAAA"}',
    '{"type": "response.audio.delta", "event_id": "soak_2", "response_id": "resp_stale", '
    '"item_id": "item_stale", "output_index": 0, "content_index": 0, "delta": "!!not base64"}',
    '{"type": "response.done", "event_id": "soak_3", "response": {"id": "resp_stale", '
    '"object": "realtime.response", "status": "completed", "output": []}}',
    '{"type": "response.done", "event_id": "soak_4", "response": {"id": 1e999}}',
    '{"type": "soak.unknown_event", "event_id": "soak_5", "payload": {"a": [1, 2]}}',
    '{"type": "error", "event_id": "soak_6", "error": {"type": "server_error", '
    '"message": "soak: injected error", "code": null, "param": null, "event_id": "evc_none"}}',
    '{"type": "conversation.item.created", "event_id": "soak_7", "item": {"id": 5}}',
    b"\xff\xfe\x00 not UTF-8",
    "[" * 5000 + "]" * 5000,
    '{"type": "response.audio_transcript.delta", "event_id": "soak_8", "delta": null}',
)


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class SoakOptions:
    """What to run. ``seed`` None picks one (it is reported, so a run can be repeated)."""

    turns: int = 2000
    seed: int | None = None
    max_minutes: float = 25.0
    speed: float = DEFAULT_SPEED
    log: Path | None = None  # keep the daemon's stderr here


# ----------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class Clip:
    """16 kHz PCM16 speech, trimmed to its voiced span, and its voiced 10 ms frames."""

    name: str
    pcm: bytes
    voiced: int


def voiced_frames(pcm: bytes) -> int:
    """10 ms frames of ``pcm`` (16 kHz PCM16) louder than the simulator's VAD gate."""
    x = np.frombuffer(pcm[: len(pcm) // (2 * VAD_FRAME_SAMPLES) * 2 * VAD_FRAME_SAMPLES], "<i2")
    if not x.size:
        return 0
    frames = x.reshape(-1, VAD_FRAME_SAMPLES).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return int(np.count_nonzero(20 * np.log10(np.maximum(rms, 1e-3) / 32768.0) > VOICED_DBFS))


def load_clip(name: str, keep_s: float | None = None) -> Clip:
    """A bundled recording (its first ``keep_s`` seconds), cut to 50 ms around its voiced
    span (what is left of the silence costs wall time on every turn)."""
    pcm, rate = read_wav(data_path(name))
    pcm = resample(pcm, rate, MIC_RATE)
    if keep_s is not None:
        pcm = pcm[: int(keep_s * MIC_RATE) * 2]
    x = np.abs(np.frombuffer(pcm, "<i2").astype(np.int32))
    loud = np.flatnonzero(x > 300)
    pad = MIC_RATE // 20
    start = max(0, int(loud[0]) - pad) if loud.size else 0
    end = min(x.size, int(loud[-1]) + pad) if loud.size else x.size
    cut = pcm[2 * start: 2 * end]
    return Clip(name, cut, voiced_frames(cut))


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * MIC_RATE) * 2)


# ----------------------------------------------------------------------------- the script


def make_script(rng: random.Random, turns: int) -> dict[str, Any]:
    """The simulator's script: replies and turn faults for more turns than the run needs
    (a fault can make one user turn take two script turns), and a connection fault on about
    :data:`P_CONNECTION_FAULT` of the connection attempts."""
    script_turns: list[dict[str, Any]] = []
    for _ in range(2 * turns + 20):
        turn: dict[str, Any] = {"user": "soak", "say": rng.choice(REPLIES)}
        r = rng.random()
        for kind, p in P_TOOL_FAULT.items():
            if r < p:
                how = rng.choice(["exit", "signal"]) if kind == "crash" else None
                turn["calls"] = [{"name": f"soak_{kind}",
                                  "arguments": {"how": how} if how else {}}]
                turn["after_tools"] = "That did not work."
                break
            r -= p
        else:
            if r < P_STOP:
                turn["calls"] = [{"name": "stop_conversation"}]
                turn["after_tools"] = "Goodbye."
            elif r < P_STOP + P_TOOL_OK:
                turn["calls"] = [{"name": "soak_ok"}]
                turn["after_tools"] = "Done."
        r = rng.random()
        for drop, p in P_TURN_DROP.items():
            if r < p:
                if drop == "after-function-call" and "calls" not in turn:
                    turn["calls"] = [{"name": "soak_ok"}]
                    turn["after_tools"] = "Done."
                turn["drop"] = drop
                break
            r -= p
        script_turns.append(turn)
    connections: list[dict[str, Any]] = []
    for _ in range(turns + 50):
        faulty = rng.random() < P_CONNECTION_FAULT and (not connections or not connections[-1])
        connections.append(dict(rng.choice(CONNECTION_FAULTS)) if faulty else {})
    return {"turn": script_turns, "connection": connections, "default_say": "Okay.",
            "default_after_tools": "Done."}


# ----------------------------------------------------------------------------- the config


def daemon_config(*, endpoint: str, status_socket: Path, tool_program: Path, speed: float,
                  follow_up_s: float = 1.2, invalid: bool = False) -> str:
    """The daemon's config file for a soak at ``speed``: wall-clock settings scaled for the
    compressed audio time, short timeouts and backoffs so that recoveries are quick, the
    soak's command tools and ``stop_conversation``. ``invalid`` makes it fail validation
    (for a refused reload)."""
    def q(text: str | Path) -> str:
        return json.dumps(str(text))  # a JSON string is a valid TOML basic string

    py = [sys.executable, "-I", "-S", str(tool_program)]

    def tool(name: str, argv: list[str],
             parameters: str = '{ type = "object", properties = {} }') -> str:
        return (f"[[tools]]\nname = {q(name)}\ndescription = {q('Soak test tool ' + name)}\n"
                f"parameters = {parameters}\ntimeout_s = {TOOL_TIMEOUT_S}\n"
                f"command = {{ argv = [{', '.join(q(a) for a in py + argv)}], "
                f"max_output_bytes = {TOOL_MAX_OUTPUT} }}\n")

    crash_params = ('{ type = "object", properties = { how = { type = "string", '
                    'enum = ["exit", "signal"] } }, required = ["how"] }')
    return "\n".join([
        "[audio]",
        'input_device = "edgevoice_mic"',
        'output_device = "edgevoice_speaker"',
        "reopen_backoff_s = [0.1, 0.2, 0.4]",
        "[wake]",
        # The refractory period is wall time: one wake word must not fire twice, two wake
        # words a few accelerated turns apart must both fire.
        f'models = [{{ name = "hey_jarvis", refractory_s = {max(0.25, 2.0 / speed):.3f} }}]',
        "[voicelive]",
        f"endpoint = {q(endpoint)}",
        "connect_timeout_s = 1.0",
        "ping_interval_s = 1.0",
        "ping_timeout_s = 1.0",
        "backoff_s = [0.05, 0.1, 0.2, 0.4]",
        "stable_after_s = 2.0",
        # Audio time: at speed k a reconnect of t wall seconds buffers k*t s of audio.
        "offline_buffer_s = 120.0",
        "max_message_mib = 1",
        "[session.turn_detection]",
        f"silence_duration_ms = {SILENCE_MS}",
        "[vad]",
        f"tail_ms = {SILENCE_MS + 200}",
        "[conversation]",
        f"follow_up_s = {-1.0 if invalid else follow_up_s}",
        "listen_timeout_s = 3.0",
        "idle_disconnect_s = 0.5",
        "earcon = false",
        "[bargein]",
        f"echo_delay_ms = {round(100 / speed)}",
        f"echo_spread_ms = {round(150 / speed)}",
        "[service]",
        'log_level = "info"',
        'log_target = "stderr"',
        f"status_socket = {q(status_socket)}",
        "",
        tool("soak_ok", ["ok"]),
        tool("soak_hang", ["hang"]),
        tool("soak_crash", ["crash", "{how}"], crash_params),
        tool("soak_flood", ["flood"]),
        '[[tools]]\nname = "stop_conversation"\nbuiltin = "stop_conversation"\n',
    ])


def write_atomically(path: Path, text: str) -> None:
    """Write whole and rename into place (a new inode: ALSA and a reload never see half)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- observing


class Tally:
    """Incremental counts over the simulator's records; what it has read is deleted from them
    (and the speaker counts as it plays), so the soak's memory stays bounded.

    ``committed``: user utterances the service committed; ``audio_replies``: responses that
    completed with audio; ``voiced``: voiced 10 ms frames of the audio the daemon appended;
    ``tool_outputs``: ``(tool name, output)`` of every new function output (a replay of an
    output after a reconnect is not new); ``speaker_loud``: reply samples the speaker played.
    """

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.committed = 0
        self.audio_replies = 0
        self.voiced = 0
        self.speaker_loud = 0
        self.tool_outputs: list[tuple[str, str]] = []
        self._calls: OrderedDict[str, str] = OrderedDict()  # call_id -> tool name
        self._outputs_seen: OrderedDict[str, None] = OrderedDict()
        self._rest: dict[int, bytes] = {}  # per connection: audio short of a whole frame
        self._from = 0  # connections before this one are closed and fully read

    def on_speaker(self, chunk: bytes) -> None:
        """The speaker's hook (its thread): count reply samples."""
        x = np.frombuffer(chunk, "<i2")
        self.speaker_loud += int(np.count_nonzero((x > SPEAKER_LOUD) | (x < -SPEAKER_LOUD)))

    def update(self) -> None:
        conns = self.sim.connections
        for rec in conns[self._from:]:
            closed = rec.closed  # read first: what arrives after it is read next time
            for e in rec.sent_events:
                kind = e.get("type")
                if kind == "input_audio_buffer.committed":
                    self.committed += 1
                elif kind == "response.done" and _completed_with_audio(e.get("response")):
                    self.audio_replies += 1
                elif kind == "response.function_call_arguments.done":
                    self._calls[str(e.get("call_id"))] = str(e.get("name"))
                    _bound(self._calls)
            for e in rec.received_events:
                item = e.get("item") if e.get("type") == "conversation.item.create" else None
                if isinstance(item, dict) and item.get("type") == "function_call_output":
                    call_id = str(item.get("call_id"))
                    if call_id not in self._outputs_seen:
                        self._outputs_seen[call_id] = None
                        _bound(self._outputs_seen)
                        name = self._calls.pop(call_id, "?")
                        self.tool_outputs.append((name, str(item.get("output"))))
            del rec.sent_events[:]
            del rec.received_events[:]
            audio = self._rest.pop(rec.index, b"") + bytes(rec.appended_audio)
            rec.appended_audio.clear()
            whole = len(audio) // (2 * VAD_FRAME_SAMPLES) * 2 * VAD_FRAME_SAMPLES
            self.voiced += voiced_frames(audio[:whole])
            if closed:
                if rec.index == conns[self._from].index:
                    self._from += 1
            elif audio[whole:]:
                self._rest[rec.index] = audio[whole:]


def _bound(d: OrderedDict[str, Any], limit: int = 4096) -> None:
    while len(d) > limit:
        d.popitem(last=False)


def _completed_with_audio(response: Any) -> bool:
    if not isinstance(response, dict) or response.get("status") != "completed":
        return False
    return any(isinstance(item, dict) and item.get("type") == "message"
               and any(isinstance(p, dict) and p.get("type") == "audio"
                       for p in item.get("content") or [])
               for item in response.get("output") or [])


_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (?P<level>[A-Z]+) ")


class DaemonLog:
    """Reads the daemon's stderr on a thread: every line goes to ``path``; tracebacks and
    ERROR lines are counted, the first few kept with their context, the last lines kept for
    failure reports (all bounded)."""

    def __init__(self, stream: TextIO, path: Path) -> None:
        self.path = path
        self.tracebacks = 0
        self.errors: Counter[str] = Counter()  # ERROR line → count (numbers masked)
        self.samples: list[str] = []  # the first tracebacks, whole
        self.tail: deque[str] = deque(maxlen=300)
        self._lock = threading.Lock()
        self._stream = stream
        self._thread = threading.Thread(target=self._run, name="daemon-stderr", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        block: list[str] | None = None
        with self.path.open("a", encoding="utf-8") as out:
            for line in self._stream:
                out.write(line)
                with self._lock:
                    self.tail.append(line.rstrip("\n"))
                    if line.startswith("Traceback (most recent call last)"):
                        self.tracebacks += 1
                        if block is not None:  # two in a row: the first one is complete
                            self.samples[-1] = "\n".join(block)
                            block = None
                        if len(self.samples) < 5:
                            before = list(self.tail)[-2:-1]
                            block = [*before, line.rstrip("\n")]
                            self.samples.append("")
                    elif block is not None:
                        if _LINE.match(line) or len(block) > 60:
                            self.samples[-1] = "\n".join(block)
                            block = None
                        else:
                            block.append(line.rstrip("\n"))
                    m = _LINE.match(line)
                    if m and m["level"] in ("ERROR", "CRITICAL"):
                        key = re.sub(r"\d+(\.\d+)?", "N", line[m.end():].strip())[:160]
                        if key in self.errors or len(self.errors) < 50:
                            self.errors[key] += 1
            if block is not None:
                with self._lock:
                    self.samples[-1] = "\n".join(block)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def recent(self, n: int = 40) -> list[str]:
        with self._lock:
            return list(self.tail)[-n:]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """The process's resident set (``VmRSS``), or one of its parts (``RssAnon``: heap and
    other private memory, where a leak shows; ``RssFile``: mapped files such as code and the
    wake word models, which grow as more of them is touched), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> Counter[str]:
    """The process's open descriptors by what they are: ``socket``, ``pipe``,
    ``anon_inode:[eventfd]``, … or the file's path (what grew, when descriptors grow)."""
    kinds: Counter[str] = Counter()
    base = Path(f"/proc/{pid}/fd")
    for name in os.listdir(base):
        with contextlib.suppress(OSError):
            target = os.readlink(base / name)
            kinds[re.sub(r":\[\d+\]$", "", target)] += 1
    return kinds


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- the report


@dataclass
class Fault:
    """One fault that happened; ``recovered`` once a turn that began after it was served."""

    kind: str
    t: float  # time.monotonic() when it was injected (or fired)
    recovered: bool = False


@dataclass
class Report:
    """Everything the run measured; :meth:`criteria` decides pass or fail."""

    seed: int
    speed: float
    turns_requested: int
    command: str = ""
    turns_completed: int = 0
    turns_failed: int = 0
    wake_turns: int = 0
    cold_starts: int = 0
    expired_follow_ups: int = 0
    faults: list[Fault] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # what went wrong, first ones
    tool_checks_failed: list[str] = field(default_factory=list)
    status_cli_failed: list[str] = field(default_factory=list)
    unhandled_exceptions: int = 0
    daemon_errors: int = 0
    error_lines: dict[str, int] = field(default_factory=dict)
    traceback_samples: list[str] = field(default_factory=list)
    rss_kib: dict[str, int] = field(default_factory=dict)  # ready, start, end, max
    rss_anon_kib: dict[str, int] = field(default_factory=dict)  # its private part
    fds: dict[str, int] = field(default_factory=dict)
    fd_kinds: dict[str, dict[str, int]] = field(default_factory=dict)  # start, end
    samples: list[dict[str, Any]] = field(default_factory=list)  # every 100 turns
    turn_s: list[float] = field(default_factory=list)  # audio fed → turn served
    commit_s: list[float] = field(default_factory=list)  # audio fed → utterance committed
    voiced_share: list[float] = field(default_factory=list)  # received / fed voiced frames
    wall_s: float = 0.0
    daemon_cpu_s: float = 0.0
    soak_cpu_s: float = 0.0  # this process (simulator, virtual devices, checks)
    watchdog_max_gap_s: float = 0.0
    time_bound_hit: bool = False
    aborted: str | None = None
    exit_code: int | None = None
    stop_problem: str | None = None
    warmup_turns: int = 0

    def fault_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(f.kind for f in self.faults).items()))

    def recovery_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(f.kind for f in self.faults if f.recovered).items()))

    def unrecovered(self) -> list[str]:
        return [f.kind for f in self.faults if not f.recovered]

    def criteria(self) -> dict[str, dict[str, Any]]:
        rss_growth = None
        if "start" in self.rss_kib and "end" in self.rss_kib:
            rss_growth = round((self.rss_kib["end"] - self.rss_kib["start"]) / 1024, 2)
        fd_growth = None
        if "start" in self.fds and "end" in self.fds:
            fd_growth = self.fds["end"] - self.fds["start"]
        checks = {
            "turns_completed": (self.turns_completed, ">=", self.turns_requested),
            "turns_failed": (self.turns_failed, "==", 0),
            "faults_unrecovered": (len(self.unrecovered()), "==", 0),
            "tool_checks_failed": (len(self.tool_checks_failed), "==", 0),
            "status_cli_failed": (len(self.status_cli_failed), "==", 0),
            "unhandled_exceptions": (self.unhandled_exceptions + self.daemon_errors, "==", 0),
            "rss_growth_mb": (rss_growth, "<=", MAX_RSS_GROWTH_MB),
            "fd_growth": (fd_growth, "<=", 0),
            "clean_exit": (self.exit_code, "==", 0),
            "time_bound_hit": (int(self.time_bound_hit), "==", 0),
        }
        ops: dict[str, Callable[[float, float], bool]] = {
            "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "==": lambda a, b: a == b}
        return {k: {"value": v, "op": op, "limit": lim,
                    "met": isinstance(v, int | float) and ops[op](v, lim)}
                for k, (v, op, lim) in checks.items()}

    def passed(self) -> bool:
        return self.aborted is None and all(c["met"] for c in self.criteria().values())

    def as_dict(self) -> dict[str, Any]:
        t, c = sorted(self.turn_s), sorted(self.commit_s)
        return {
            "seed": self.seed, "speed": self.speed, "command": self.command,
            "turns_requested": self.turns_requested, "turns_completed": self.turns_completed,
            "turns_failed": self.turns_failed, "wake_turns": self.wake_turns,
            "follow_up_turns": self.turns_completed - self.wake_turns,
            "cold_starts": self.cold_starts, "expired_follow_ups": self.expired_follow_ups,
            "faults_injected": len(self.faults), "faults": self.fault_counts(),
            "recoveries": sum(1 for f in self.faults if f.recovered),
            "recoveries_by_kind": self.recovery_counts(), "unrecovered": self.unrecovered(),
            "tool_checks_failed": self.tool_checks_failed,
            "status_cli_failed": self.status_cli_failed,
            "unhandled_exceptions": self.unhandled_exceptions,
            "daemon_errors": self.daemon_errors, "error_lines": self.error_lines,
            "traceback_samples": self.traceback_samples,
            "rss_mb": {k: round(v / 1024, 1) for k, v in self.rss_kib.items()},
            "rss_anon_mb": {k: round(v / 1024, 1) for k, v in self.rss_anon_kib.items()},
            "fds": self.fds, "fd_kinds": self.fd_kinds, "warmup_turns": self.warmup_turns,
            "turn_s": {"p50": _pct(t, 50), "p95": _pct(t, 95), "max": t[-1] if t else None},
            "commit_s": {"p50": _pct(c, 50), "p95": _pct(c, 95)},
            "voiced_share_min": round(min(self.voiced_share), 3) if self.voiced_share else None,
            "wall_s": round(self.wall_s, 1), "daemon_cpu_s": round(self.daemon_cpu_s, 1),
            "soak_cpu_s": round(self.soak_cpu_s, 1),
            "watchdog_max_gap_s": round(self.watchdog_max_gap_s, 2),
            "time_bound_hit": self.time_bound_hit, "aborted": self.aborted,
            "exit_code": self.exit_code, "stop_problem": self.stop_problem,
            "failures": self.failures, "samples": self.samples,
            "criteria": self.criteria(), "passed": self.passed(),
        }

    def render(self) -> str:
        d = self.as_dict()
        rss, fds = d["rss_mb"], d["fds"]
        lines = [
            f"edgevoice soak: seed {self.seed}, speed {self.speed:g}x, "
            f"{self.turns_requested} turns requested",
            f"  turns completed   {self.turns_completed} ({self.wake_turns} with the wake word,"
            f" {d['follow_up_turns']} follow-ups; {self.cold_starts} on a cold connection,"
            f" {self.expired_follow_ups} follow-up windows let run out), failed "
            f"{self.turns_failed}",
            f"  turn time (wall)  p50 {d['turn_s']['p50']} s, p95 {d['turn_s']['p95']} s, "
            f"max {_round(d['turn_s']['max'])} s (to the commit: p50 {d['commit_s']['p50']} s); "
            f"whole run {d['wall_s']} s, CPU daemon {d['daemon_cpu_s']} s, soak "
            f"{d['soak_cpu_s']} s",
            f"  keeping up        least share of an utterance's voiced audio received "
            f"{d['voiced_share_min']}, longest watchdog gap {d['watchdog_max_gap_s']} s "
            f"(pings every 0.5 s)",
            f"  faults injected   {len(self.faults)}, recovered {d['recoveries']}",
        ]
        for kind, n in self.fault_counts().items():
            lines.append(f"      {kind:34} {n:5}  recovered {d['recoveries_by_kind'].get(kind, 0)}")
        lines += [
            f"  unhandled exceptions {self.unhandled_exceptions} (tracebacks in the log), "
            f"daemon errors counter {self.daemon_errors}",
            f"  RSS (MB)          ready {rss.get('ready')}, start {rss.get('start')} (after "
            f"{self.warmup_turns} warm-up turns), end {rss.get('end')}, max {rss.get('max')}; "
            f"private (RssAnon) start {d['rss_anon_mb'].get('start')}, end "
            f"{d['rss_anon_mb'].get('end')}",
            f"  open fds          ready {fds.get('ready')}, start {fds.get('start')}, "
            f"end {fds.get('end')}, max {fds.get('max')}",
        ]
        start, end = self.fd_kinds.get("start", {}), self.fd_kinds.get("end", {})
        grown = {k: end.get(k, 0) - start.get(k, 0) for k in set(start) | set(end)
                 if end.get(k, 0) != start.get(k, 0)}
        if grown:
            lines.append("      descriptors changed: " + ", ".join(
                f"{k} {n:+d}" for k, n in sorted(grown.items())))
        if self.error_lines:
            lines.append("  ERROR lines in the daemon's log:")
            lines += [f"      {n:5} x {k}" for k, n in self.error_lines.items()]
        if self.unrecovered():
            lines.append("  not recovered: " + ", ".join(self.unrecovered()[:20]))
        for sample in self.traceback_samples:
            lines.append("  traceback:\n      " + sample.replace("\n", "\n      "))
        for what in self.failures[:10] + self.tool_checks_failed[:10] + self.status_cli_failed:
            lines.append(f"  FAILED: {what}")
        if self.time_bound_hit:
            lines.append("  stopped by the time bound (--max-minutes) before all turns ran")
        if self.aborted:
            lines.append(f"  aborted: {self.aborted}")
        if self.stop_problem:
            lines.append(f"  stop: {self.stop_problem}")
        lines.append("  criteria:")
        for key, c in self.criteria().items():
            mark = "ok  " if c["met"] else "FAIL"
            lines.append(f"    {mark} {key:22} {c['value']} {c['op']} {c['limit']}")
        lines.append("PASSED" if self.passed() else "FAILED")
        return "\n".join(lines)


def _pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return round(float(np.percentile(sorted_values, q)), 3)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# ----------------------------------------------------------------------------- the run


class TurnFailed(Exception):
    """One turn was not served; the message says which check failed."""


class Soak:
    """One soak run: build everything in :meth:`run`, drive the turns, tear down."""

    def __init__(self, opts: SoakOptions, out: TextIO | None) -> None:
        self.opts = opts
        self.seed = opts.seed if opts.seed is not None else secrets.randbelow(2**31)
        self.rng = random.Random(self.seed)
        self.report = Report(seed=self.seed, speed=opts.speed, turns_requested=opts.turns)
        self.out = out
        self.wake = load_clip(WAKE_CLIP)
        self.utterances = [(load_clip(name, keep), weight) for name, keep, weight in UTTERANCES]
        self.root = Path(tempfile.mkdtemp(prefix="ev-soak-", dir="/tmp"))
        self.sim: Simulator
        self.rig: Rig
        self.notify: NotifyListener
        self.proc: subprocess.Popen[str]
        self.log: DaemonLog
        self.tally: Tally
        self.config = self.root / "edgevoice.toml"
        self.status_socket = self.root / "status.sock"
        self.tool_program = self.root / "tool.py"
        self.snap: dict[str, Any] = {}
        self._errors_by_daemon: dict[Any, int] = {}
        self._reload_mark: int | None = None  # notify index of a reload not yet in effect
        self._reloads = 0
        self._tool_outputs_read = 0
        self._fired_read = 0
        self._deadline = 0.0
        self._started = 0.0
        self._mic_fresh = 0.0  # time.monotonic() when the microphone last (re)opened
        self._env: dict[str, str] = {}  # the daemon's environment

    def say(self, text: str) -> None:
        if self.out is not None:
            self.out.write(text + "\n")
            self.out.flush()

    # -- set-up and tear-down ------------------------------------------------------------------

    async def run(self) -> Report:
        started = self._started = time.monotonic()
        end = started + self.opts.max_minutes * 60
        self._deadline = end - STOP_RESERVE_S - MEASURE_RESERVE_S
        script = Script.from_dict(make_script(self.rng, self.opts.turns), source="soak")
        key = secrets.token_urlsafe(16)
        self.sim = Simulator(script=script, api_key=key, pace=0.0, strict=True)
        self.tally = Tally(self.sim)
        await self.sim.start()
        self.notify = NotifyListener(self.root / "notify")
        try:
            # The speaker's audio is counted as it plays (Tally.on_speaker), not kept.
            with Rig(self.root / "rig", speed=self.opts.speed, keep_speaker_s=1.0,
                     on_speaker=self.tally.on_speaker) as rig:
                self.rig = rig
                self.tool_program.write_text(TOOL_PROGRAM)
                self._write_config()
                self._start_daemon(key)
                try:
                    async with asyncio.timeout(end - STOP_RESERVE_S - time.monotonic()):
                        await self._drive()
                except TimeoutError:
                    self.report.time_bound_hit = True
                    self.say("soak: the time bound was hit; stopping")
                finally:
                    await self._stop_daemon()
        finally:
            self.notify.close()
            await self.sim.close()
            self.report.wall_s = time.monotonic() - started
            usage = resource.getrusage(resource.RUSAGE_SELF)
            self.report.soak_cpu_s = usage.ru_utime + usage.ru_stime
            shutil.rmtree(self.root, ignore_errors=True)  # --log keeps the log elsewhere
        return self.report

    def _write_config(self, *, invalid: bool = False) -> None:
        # Valid reloads alternate between two follow-up windows, so each one changes
        # something the daemon must rebuild.
        follow_up = FOLLOW_UP_S + 0.1 * (self._reloads % 2)
        write_atomically(self.config, daemon_config(
            endpoint=self.sim.url, status_socket=self.status_socket,
            tool_program=self.tool_program, speed=self.opts.speed, follow_up_s=follow_up,
            invalid=invalid))

    def _start_daemon(self, key: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in MANAGER_VARS}
        package_root = str(Path(edgevoice.__file__).resolve().parent.parent)
        env.update({
            "NOTIFY_SOCKET": str(self.notify.path),
            "WATCHDOG_USEC": "1000000",  # a ping every 0.5 s: a stalled loop shows as a gap
            "VOICELIVE_API_KEY": key,
            "PYTHONPATH": os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH"))
                                          if p),
        })
        self._env = env
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgevoice", "run", "--config", str(self.config)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        log_path = self.opts.log or (self.root / "daemon.log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
        self.log = DaemonLog(self.proc.stderr, log_path)

    async def _stop_daemon(self) -> None:
        proc = self.proc
        report = self.report
        with contextlib.suppress(ProcessLookupError, OSError):
            report.daemon_cpu_s = cpu_seconds(proc.pid)
        if proc.poll() is None:
            mark = len(self.notify)
            proc.send_signal(signal.SIGTERM)
            try:
                report.exit_code = await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                report.stop_problem = f"no exit within {STOP_TIMEOUT_S:g} s of SIGTERM"
                proc.kill()
                await asyncio.to_thread(proc.wait, 5)
            else:
                await asyncio.sleep(0.1)  # the last datagram
                if self.notify.find("STOPPING", "1", mark) is None:
                    report.stop_problem = "no STOPPING=1 before the exit"
        else:
            report.exit_code = proc.returncode
            report.stop_problem = f"the daemon had exited by itself with {proc.returncode}"
        self.log.join(5)
        report.unhandled_exceptions = self.log.tracebacks
        report.traceback_samples = [s for s in self.log.samples if s]
        report.error_lines = dict(self.log.errors.most_common(20))
        report.daemon_errors = sum(self._errors_by_daemon.values())
        pings = [t for t, f in self.notify.messages if f.get("WATCHDOG") == "1"]
        report.watchdog_max_gap_s = max((b - a for a, b in zip(pings, pings[1:], strict=False)),
                                        default=0.0)

    # -- the daemon's state --------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        if self.proc.poll() is not None:
            raise TurnFailed(f"the daemon exited with {self.proc.returncode}")
        try:
            snap = await asyncio.to_thread(query_status, self.status_socket)
        except StatusUnavailable as exc:
            raise TurnFailed(f"status query failed: {type(exc).__name__}: {exc}") from None
        errors = snap.get("errors")
        if isinstance(errors, int):
            # One counter per Daemon instance (a reload builds a new one): keep each one's max.
            key = snap.get("started")
            self._errors_by_daemon[key] = max(errors, self._errors_by_daemon.get(key, 0))
        self.snap = snap
        return snap

    def state(self) -> str:
        return str(self.snap.get("state"))

    def turn_key(self) -> tuple[Any, Any] | None:
        turns = self.snap.get("turns") or []
        return (self.snap.get("started"), turns[-1].get("turn")) if turns else None

    def device(self, role: str) -> str | None:
        devices = self.snap.get("devices") or {}
        return (devices.get(role) or {}).get("state")

    def link_state(self) -> str | None:
        return (self.snap.get("link") or {}).get("state")

    async def wait_status(self, cond: Callable[[], bool], timeout: float, what: str,
                          period: float = 0.025) -> None:
        """Poll the status until ``cond()`` (on :attr:`snap`) holds; TurnFailed after
        ``timeout`` seconds. Also keeps the fault and tool tallies current."""
        end = time.monotonic() + timeout
        while True:
            await self.status()
            self._observe()
            if cond():
                return
            if time.monotonic() > end:
                raise TurnFailed(f"timed out after {timeout:g} s waiting for {what} (state "
                                 f"{self.state()}, link {self.link_state()}, microphone "
                                 f"{self.device('microphone')})")
            await asyncio.sleep(period)

    async def wait_notify(self, key: str, value: str, start: int, timeout: float) -> int:
        end = time.monotonic() + timeout
        while True:
            index = self.notify.find(key, value, start)
            if index is not None:
                return index
            if self.proc.poll() is not None:
                raise TurnFailed(f"the daemon exited with {self.proc.returncode}")
            if time.monotonic() > end:
                raise TurnFailed(f"no {key}={value} within {timeout:g} s")
            await asyncio.sleep(0.05)

    def measure(self, name: str) -> None:
        rss, fds = rss_kib(self.proc.pid), open_fds(self.proc.pid)
        self.report.rss_kib[name] = rss
        self.report.rss_anon_kib[name] = rss_kib(self.proc.pid, "RssAnon")
        self.report.fds[name] = fds
        self.report.rss_kib["max"] = max(rss, self.report.rss_kib.get("max", 0))
        self.report.fds["max"] = max(fds, self.report.fds.get("max", 0))

    async def status_cli(self) -> None:
        """``edgevoice status --json`` as a subprocess, as a person would run it: it must
        answer with this daemon's snapshot. A failure is recorded (criterion
        ``status_cli_failed``)."""
        env = {k: v for k, v in self._env.items() if k not in MANAGER_VARS}
        try:
            out = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "edgevoice", "status", "--json",
                                 "--socket", str(self.status_socket)],
                env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
            snap = json.loads(out.stdout) if out.returncode == 0 else None
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            out, snap = None, None
            problem = f"{type(exc).__name__}: {exc}"
        else:
            problem = f"exit {out.returncode}: {out.stderr.strip()[-300:]}"
        if not isinstance(snap, dict) or snap.get("pid") != self.proc.pid:
            self.report.status_cli_failed.append(f"edgevoice status --json: {problem}")

    async def quiet_measure(self, name: str) -> None:
        """RSS and descriptors at a quiet moment, the same kind each time: the conversation
        over, the link closed (idle disconnect), no tool or reload running, the microphone
        open. Descriptors: the least of a few samples (a status connection may be closing)."""
        if self.state() == "follow_up":
            self.report.expired_follow_ups += 1
        await self._settle_reload()
        await self.wait_status(lambda: self.state() == "idle" and self.link_state() == "idle"
                               and self.device("microphone") == "ok", 15, "a quiet daemon")
        await self.status_cli()
        await asyncio.sleep(0.3)
        fds = []
        for _ in range(5):
            fds.append((open_fds(self.proc.pid), fd_kinds(self.proc.pid)))
            await asyncio.sleep(0.05)
        self.measure(name)
        least = min(fds, key=lambda f: f[0])
        self.report.fds[name] = least[0]
        self.report.fd_kinds[name] = dict(sorted(least[1].items()))

    # -- faults --------------------------------------------------------------------------------

    def fault(self, kind: str, t: float | None = None) -> None:
        self.report.faults.append(Fault(kind, time.monotonic() if t is None else t))

    def _observe(self) -> None:
        """Count the scripted faults that fired and check new tool outputs."""
        fired = self.sim.fired
        for t, kind in fired[self._fired_read:]:
            self.fault(kind.replace("drop:", "drop ").replace("http:", "http "), t)
        self._fired_read = len(fired)
        self.tally.update()
        outputs = self.tally.tool_outputs
        for name, output in outputs[self._tool_outputs_read:]:
            self._check_tool(name, output)
        self._tool_outputs_read = len(outputs)

    def _check_tool(self, name: str, output: str) -> None:
        """A tool fault's output must say what happened, within the output bound."""
        try:
            result = json.loads(output)
        except ValueError:
            self.report.tool_checks_failed.append(f"{name}: output is not JSON: {output[:80]}")
            return
        ok, error = result.get("ok"), str(result.get("error") or "")
        problem = None
        if name == "soak_hang":
            self.fault("tool hang")
            if ok is not False or "timed out" not in error:
                problem = "expected a timeout"
        elif name == "soak_crash":
            self.fault("tool crash")
            if ok is not False or not ("exited with status 3" in error
                                       or "killed by signal 9" in error):
                problem = "expected exit status 3 or signal 9"
        elif name == "soak_flood":
            self.fault("tool flood")
            stdout = str(result.get("stdout", ""))
            if ok is not True or result.get("truncated") is not True \
                    or len(stdout.encode()) > TOOL_MAX_OUTPUT:
                problem = f"expected ok, truncated, <= {TOOL_MAX_OUTPUT} bytes of stdout"
        elif name in ("soak_ok", "stop_conversation"):
            if ok is not True:
                problem = "expected ok"
        if problem is not None:
            self.report.tool_checks_failed.append(f"{name}: {problem}: {output[:200]}")

    async def _inject(self, delay: float, oversized: bool) -> None:
        await asyncio.sleep(delay)
        if oversized:
            frames: list[str | bytes] = ["x" * (1024 * 1024 + 1)]
        else:
            frames = self.rng.sample(BAD_FRAMES, self.rng.randint(1, 4))
        t = time.monotonic()
        if await self.sim.inject(frames):
            self.fault("oversized frame" if oversized else "bad frames", t)

    async def mic_vanishes(self) -> None:
        """Unplug the microphone (its pacer stalls, its PCM leaves the ALSA config), wait
        until the daemon says it is missing, plug it back, wait until it is open again."""
        rig = self.rig
        await asyncio.to_thread(rig.mute_microphone)
        rig.set_devices(microphone=False)
        self.fault("microphone vanished")
        try:
            await self.wait_status(lambda: self.device("microphone") == "missing", 15,
                                   "the microphone reported missing", period=0.1)
            await asyncio.sleep(self.rng.uniform(0.2, 1.0))  # reopen attempts fail meanwhile
        finally:
            rig.set_devices()
            rig.mic.resume()
        await self.wait_status(lambda: self.device("microphone") == "ok", 15,
                               "the microphone back", period=0.05)
        self._mic_fresh = time.monotonic()

    async def reload(self, invalid: bool) -> None:
        """SIGHUP with a changed valid file (applied at the next idle moment: the daemon is
        rebuilt) or an invalid one (refused, the running daemon goes on)."""
        if invalid:
            self._write_config(invalid=True)
        else:
            self._reloads += 1
            self._write_config()
        mark = len(self.notify)
        self.proc.send_signal(signal.SIGHUP)
        self.fault("reload (invalid file)" if invalid else "reload")
        reloading = await self.wait_notify("RELOADING", "1", mark, 5)
        if invalid:
            await self.wait_notify("READY", "1", reloading + 1, 10)
            self._write_config()  # the next valid reload must read a valid file
        else:
            self._reload_mark = reloading + 1

    async def _settle_reload(self) -> None:
        """A valid reload is applied when the daemon is idle; audio fed while it rebuilds
        would be lost, so from idle on, wait until it is listening again."""
        if self._reload_mark is None:
            return
        await self.status()
        if self.state() in ("idle", "reloading", "starting"):
            await self.wait_notify("READY", "1", self._reload_mark, READY_TIMEOUT_S)
            self._mic_fresh = time.monotonic()
            self._reload_mark = None
            await self.wait_status(lambda: self.state() == "idle", 10, "idle after a reload")

    # -- turns ---------------------------------------------------------------------------------

    def _utterance(self) -> Clip:
        clips, weights = zip(*self.utterances, strict=True)
        return self.rng.choices(clips, weights)[0]

    async def turn(self, n: int) -> None:
        """One checked turn (see the module docstring); TurnFailed says what failed."""
        await self._settle_reload()
        await self.status()
        state = self.state()
        if state in ("listening", "responding"):
            # A failed turn may leave the daemon mid-conversation: give it time to finish,
            # then speak anyway (in a turn that never ended, speech is what ends it).
            with contextlib.suppress(TurnFailed):
                await self.wait_status(lambda: self.state() in ("idle", "follow_up"), 10,
                                       "the end of the previous turn")
            state = self.state()
        new_turn = state in ("idle", "follow_up")
        if state == "follow_up" and self.rng.random() < P_LET_FOLLOW_UP_EXPIRE:
            self.report.expired_follow_ups += 1
            await self.wait_status(lambda: self.state() == "idle", 10,
                                   "the follow-up window to run out", period=0.05)
            await self._settle_reload()  # a pending reload is applied now
            state = self.state()
        wake = state != "follow_up" or self.rng.random() < P_WAKE_IN_CONVERSATION
        if state == "idle" and self.rng.random() < P_COLD_START:
            await self.wait_status(lambda: self.link_state() == "idle", 10,
                                   "the link to close when idle", period=0.05)
            self.report.cold_starts += 1
        if wake:
            warm = self._mic_fresh + WAKE_CONTEXT_S / self.opts.speed - time.monotonic()
            if warm > 0:
                await asyncio.sleep(warm)
        clip = self._utterance()
        audio = (self.wake.pcm + silence(WAKE_GAP_S) if wake else silence(LEAD_S)) + clip.pcm
        key0, errors0 = self.turn_key(), sum(self._errors_by_daemon.values())
        t = self.tally
        t.update()
        committed0, replies0, voiced0, loud0 = t.committed, t.audio_replies, t.voiced, \
            t.speaker_loud
        inject: asyncio.Task[None] | None = None
        r = self.rng.random()
        if r < P_BAD_FRAMES + P_OVERSIZED and n <= self.opts.turns:
            # Somewhere in the turn: while the user speaks, the service answers or audio plays.
            span = (len(audio) / 2 / MIC_RATE + 1.5) / self.opts.speed
            inject = asyncio.create_task(self._inject(self.rng.uniform(0, span),
                                                      oversized=r < P_OVERSIZED))
        started = time.monotonic()
        fed_at = _clock()
        self.rig.mic.feed(audio)
        committed_at: list[float] = []
        try:
            def done() -> bool:
                if not committed_at and t.committed > committed0:
                    committed_at.append(time.monotonic())
                return ((self.turn_key() not in (None, key0) or not new_turn)
                        and self.state() in ("follow_up", "idle")
                        and t.committed > committed0 and t.audio_replies > replies0
                        and t.speaker_loud - loud0 >= MIN_REPLY_SAMPLES)

            await self.wait_status(done, TURN_TIMEOUT_S, f"turn {n} to be served")
        except TurnFailed as exc:
            raise TurnFailed(f"{exc}; fed at {fed_at} ({'wake word + ' if wake else ''}"
                             f"{clip.name}); new daemon turn {self.turn_key() != key0}, committed "
                             f"+{t.committed - committed0}, replies with audio "
                             f"+{t.audio_replies - replies0}, reply samples played "
                             f"+{t.speaker_loud - loud0}") from None
        finally:
            if inject is not None:
                with contextlib.suppress(Exception):
                    await inject
        self.report.turn_s.append(time.monotonic() - started)
        self.report.commit_s.append(committed_at[0] - started)
        voiced = t.voiced - voiced0
        self.report.voiced_share.append(voiced / max(1, clip.voiced))
        if voiced < MIN_VOICED_SHARE * clip.voiced:
            raise TurnFailed(f"turn {n}: the service received {voiced} voiced frames of the "
                             f"utterance's {clip.voiced}: audio was lost on the way")
        errors = sum(self._errors_by_daemon.values())
        if errors != errors0:
            raise TurnFailed(f"turn {n}: the daemon's errors counter went from {errors0} to "
                             f"{errors}")
        self.report.turns_completed += 1
        self.report.wake_turns += wake
        for f in self.report.faults:
            if not f.recovered and f.t < started:
                f.recovered = True

    def _last_faults_unchecked(self, n: int) -> bool:
        """After the requested turns: did a fault come after the last turn began? Then more
        turns (at most EXTRA_TURNS; the soak injects nothing in them) check that the daemon
        recovered."""
        self._observe()
        return (self.opts.turns <= n < self.opts.turns + EXTRA_TURNS
                and self.report.turns_completed > 0
                and any(not f.recovered for f in self.report.faults))

    async def _between_turns(self, n: int) -> None:
        r = self.rng.random()
        warmup = self.report.warmup_turns
        if warmup >= WARMUP_FAULTS_FROM and n in (warmup // 3, 2 * warmup // 3):
            # Each path once before the baseline: the first reload lifts the allocator's
            # high-water mark for good (the old daemon is freed only once the new one is
            # built), which is not a leak; later reloads reuse that memory. The microphone
            # first: it is back before this returns, so the two never overlap.
            if n == warmup // 3:
                await self.mic_vanishes()
            else:
                await self.reload(invalid=False)
            return
        if not warmup < n <= self.opts.turns - warmup:
            # A reload replaces the daemon with a fresh one, whose memory is not yet warm
            # (caches, buffers, the conversation context): none near the two measurements.
            return
        if r < P_MIC_VANISH and self._reload_mark is None:
            await self.mic_vanishes()
        elif r < P_MIC_VANISH + P_RELOAD + P_RELOAD_INVALID and self._reload_mark is None:
            await self.reload(invalid=r >= P_MIC_VANISH + P_RELOAD)

    async def _drive(self) -> None:
        report = self.report
        self.say(f"soak: seed {self.seed}, speed {self.opts.speed:g}x, {self.opts.turns} turns, "
                 f"at most {self.opts.max_minutes:g} min")
        await self.wait_notify("READY", "1", 0, READY_TIMEOUT_S)
        self._mic_fresh = time.monotonic()
        await self.status()
        self.measure("ready")
        report.warmup_turns = max(1, min(WARMUP_MAX, math.ceil(self.opts.turns * WARMUP_SHARE)))
        failures_in_a_row = 0
        n = 0
        while n < self.opts.turns or self._last_faults_unchecked(n):
            n += 1
            if time.monotonic() > self._deadline:
                report.time_bound_hit = True
                self.say(f"soak: the time bound ({self.opts.max_minutes:g} min) was hit after "
                         f"{n - 1} turns; stopping")
                break
            try:
                if n > 1:
                    await self._between_turns(n)
                await self.turn(n)
                failures_in_a_row = 0
            except TurnFailed as exc:
                exc = TurnFailed(f"{_clock()} {exc}")  # the daemon's log uses the same clock
                report.turns_failed += 1
                failures_in_a_row += 1
                if len(report.failures) < 20:
                    report.failures.append(f"turn {n}: {exc}\n        last log lines:\n"
                                           + "\n".join("          " + ln
                                                       for ln in self.log.recent(25)))
                self.say(f"soak: turn {n} FAILED: {exc}")
                if self.proc.poll() is not None or failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
                    report.aborted = (f"the daemon exited with {self.proc.returncode}"
                                      if self.proc.poll() is not None else
                                      f"{failures_in_a_row} turns in a row failed")
                    break
            if n == report.warmup_turns:
                try:
                    await self.quiet_measure("start")
                except TurnFailed as exc:
                    report.failures.append(f"after turn {n}: no baseline measurement: {exc}")
                    report.aborted = "the daemon never became quiet for the baseline"
                    break
            if n % SAMPLE_EVERY == 0:
                self.measure("now")
                sample = {"turn": n, "t_s": round(time.monotonic() - self._started, 1),
                          "rss_mb": round(report.rss_kib["now"] / 1024, 1),
                          "rss_anon_mb": round(report.rss_anon_kib["now"] / 1024, 1),
                          "fds": report.fds["now"], "faults": len(report.faults)}
                report.samples.append(sample)
                self.say(f"soak: {n} turns, {sample['t_s']} s, RSS {sample['rss_mb']} MB, "
                         f"{sample['fds']} fds, {sample['faults']} faults, "
                         f"{report.turns_failed} failed")
        if report.aborted is None and not report.time_bound_hit and self.proc.poll() is None:
            try:
                await self.quiet_measure("end")
            except TurnFailed as exc:
                report.failures.append(f"at the end: no final measurement: {exc}")
        report.rss_kib.pop("now", None)
        report.rss_anon_kib.pop("now", None)
        report.fds.pop("now", None)
        self._observe()


def _clock() -> str:
    """Local wall-clock time as the daemon's stderr log writes it (HH:MM:SS.mmm)."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"


async def run_soak(opts: SoakOptions, out: TextIO | None = None) -> Report:
    """Run a soak; progress lines go to ``out`` (None: quiet). Never raises for a failing
    daemon: the report says what failed."""
    soak = Soak(opts, out)
    soak.report.command = " ".join(["scripts/soak", f"--turns {opts.turns}", f"--seed {soak.seed}",
                                    f"--max-minutes {opts.max_minutes:g}",
                                    f"--speed {opts.speed:g}"])
    return await soak.run()


def main(argv: list[str] | None = None) -> int:
    """``scripts/soak``: exit status 0 when every criterion holds, 1 otherwise."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="soak", description="Soak run: accelerated turns through the whole daemon with "
        "random faults; checks every turn, memory and descriptors.")
    parser.add_argument("--turns", type=int, default=2000, help="turns to run (default 2000)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (printed)")
    parser.add_argument("--max-minutes", type=float, default=25.0,
                        help="hard bound on the whole run; it stops by itself (default 25)")
    parser.add_argument("--speed", type=float, default=DEFAULT_SPEED,
                        help=f"device clocks at this multiple of real time "
                             f"(default {DEFAULT_SPEED:g})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--log", type=Path, default=None, help="keep the daemon's log here")
    args = parser.parse_args(argv)
    if args.turns < 1 or args.max_minutes <= 0 or args.speed <= 0:
        parser.error("--turns, --max-minutes and --speed must be positive")
    opts = SoakOptions(turns=args.turns, seed=args.seed, max_minutes=args.max_minutes,
                       speed=args.speed, log=args.log)
    report = asyncio.run(run_soak(opts, None if args.json else sys.stdout))
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(report.render())
    return 0 if report.passed() else 1
