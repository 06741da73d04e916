"""The daemon: builds the parts from the config and runs them around the conversation core.

One asyncio loop owns everything. The capture callback thread hands frames to the loop; each
frame goes to the wake gate and then to the :class:`~edgevoice.conversation.core.Core`, whose
actions this module carries out on the real parts: the Voice Live link, the playback, the
ducker and the tools. Server events come from the link's queue, timer ticks from a 100 ms
ticker; nothing here blocks the loop (ducking and tools run as tasks).

Guarantees:
- :meth:`Daemon.run` returns only after the speaker was stopped, every ducked volume was
  restored (also on SIGTERM/exit through :func:`~edgevoice.ducking.ducking_guard`), the link
  was closed and both audio streams were closed — also when it is cancelled or a part fails.
- An exception while handling one frame, event or action is logged with what was being done
  and the daemon goes on; nothing the network or the model sends stops it.
- ``ready`` is set once the microphone delivers frames and the wake word is listening.
- A device that vanishes is reopened by its supervisor; meanwhile the status says so and the
  core is told at once (microphone: the turn is committed or ended, the wake word starts
  afresh when it is back; speaker: the reply is cancelled and truncated to what was played).
- Telemetry entries (the timeline of :mod:`edgevoice.conversation.core`) go to the logger and
  to ``on_telemetry``; the last turns' latency figures and upstream byte counts
  (:class:`TurnFigures`) are kept (bounded) for status output and the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevoice.audio.capture import SAMPLE_RATE, Capture
from edgevoice.audio.convert import (
    Resampler,
    bytes_per_second,
    encode,
    read_wav,
    resample,
    wire_rate,
)
from edgevoice.audio.devices import DeviceState
from edgevoice.audio.playback import Playback
from edgevoice.config import Config
from edgevoice.conversation import core as c
from edgevoice.conversation.echo import EchoGuard
from edgevoice.conversation.telemetry import TelemetryName as Tn
from edgevoice.ducking import Ducker, ducking_guard, make_ducker
from edgevoice.link.auth import Auth
from edgevoice.link.client import VoiceLiveLink
from edgevoice.link.protocol import LinkDown, LinkUp
from edgevoice.listen import setup
from edgevoice.tools import ToolBox
from edgevoice.util import data_path
from edgevoice.wire import events as ev

log = logging.getLogger("edgevoice.daemon")

TICK_S = 0.1
EARCON_RATE = 24000
MAX_TURNS_KEPT = 20

#: ``async (call_id, name, arguments) -> output``: never raises (the tools module's contract).
ToolRunner = Callable[[str, str, str], Awaitable[str]]


async def no_tools(call_id: str, name: str, arguments: str) -> str:
    """The runner when no tools are declared: every call is an unknown tool, nothing runs."""
    return json.dumps({"ok": False, "error": f"unknown tool {name!r}: no such tool is declared"})


def core_settings(cfg: Config) -> c.CoreSettings:
    conv, barge, td = cfg.conversation, cfg.bargein, cfg.session.turn_detection
    return c.CoreSettings(
        output_format=cfg.session.output_audio_format,
        follow_up_s=conv.follow_up_s,
        listen_timeout_s=conv.listen_timeout_s,
        service_timeout_s=conv.service_timeout_s,
        bargein_min_speech_ms=barge.min_speech_ms,
        bargein_local_vad=barge.local_vad,
        bargein_server_vad=barge.server_vad,
        wake_bargein=barge.wake_word,
        stop_words=frozenset(setup.word_spec(m).display_name() for m in barge.stop_words),
        auto_truncate=td.type != "none" and td.auto_truncate,
        local_end_of_utterance=td.type == "none",
        earcon=conv.earcon,
        idle_disconnect_s=conv.idle_disconnect_s,
        frame_ms=cfg.audio.frame_ms,
    )


def load_earcon(cfg: Config) -> bytes:
    """The wake chime as 24 kHz mono PCM16: the configured WAV or the built-in one (scaled to
    ``earcon_volume_db``). Raises ValueError naming the file if it cannot be read."""
    conv = cfg.conversation
    path = Path(conv.earcon_file) if conv.earcon_file else data_path("earcon.wav")
    try:
        pcm, rate = read_wav(path)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"conversation.earcon_file: cannot read {path}: {exc}") from exc
    if conv.earcon_file is None:
        gain = 10 ** (conv.earcon_volume_db / 20)
        pcm = (np.frombuffer(pcm, "<i2").astype(np.float32) * gain).astype("<i2").tobytes()
    return resample(pcm, rate, EARCON_RATE)


class _Upstream:
    """16 kHz PCM16 frames → the session's input format and rate (streaming resampler; both
    steps pass the audio through untouched for 16 kHz pcm16, the default)."""

    def __init__(self, fmt: str, rate: int) -> None:
        self.fmt = fmt
        self._resampler = Resampler(SAMPLE_RATE, wire_rate(fmt, rate))
        self._wire_per_second = bytes_per_second(fmt, rate)

    def __call__(self, pcm: bytes) -> bytes:
        return encode(self._resampler.process(pcm), self.fmt)

    def wire_bytes(self, pcm_bytes: int) -> int:
        """Wire bytes that ``pcm_bytes`` of 16 kHz PCM16 become (without the resampler's
        chunking: the count of audio that was never sent)."""
        return pcm_bytes * self._wire_per_second // (2 * SAMPLE_RATE)


@dataclass
class TurnFigures:
    """Latency figures of one turn (ms) and its upstream audio (bytes), for status output and
    the benchmark.

    ``upstream_bytes``: audio bytes of this turn handed to the link, in the session's input
    format — exactly what the service receives for the turn when the link stays up (a resend
    after a reconnect is not counted again). ``ungated_bytes``: what streaming every captured
    frame would have sent instead, in the same format: all audio from the turn's first streamed
    sample (the end of the wake word; for follow-up speech or a barge-in after the reply was
    done, the start of its prefix padding) until the ``response.done`` of its reply (the last
    one, when tools were called). A barge-in before that belongs to the turn it interrupts, as
    its other figures do. So ``upstream_bytes / ungated_bytes`` is the local VAD gate's saving
    on the same audio."""

    turn: int
    started: float
    wake_to_send_ms: float | None = None
    first_delta_to_device_ms: float | None = None
    first_audio_ms: float | None = None  # end of the user's speech → reply at the speaker
    wake_word: str | None = None
    bargein: str | None = None
    tools: list[str] = field(default_factory=list)
    upstream_bytes: int = 0
    ungated_bytes: int = 0


class Daemon:
    """The assembled daemon. Construct, then ``await run(stop)``; see the module docstring.

    ``auth``: how to reach Voice Live (the caller owns and closes it). The declared tools
    (``[[tools]]``) run in a :class:`~edgevoice.tools.ToolBox` keeping its exactly-once record
    in ``state_dir``. ``on_telemetry`` gets every timeline entry (the demo prints them).
    """

    def __init__(
        self,
        cfg: Config,
        *,
        auth: Auth,
        on_telemetry: Callable[[c.Telemetry], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        state_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.on_telemetry = on_telemetry
        self.toolbox: ToolBox | None = None
        if cfg.tools:
            self.toolbox = ToolBox(cfg.tools, stop_conversation=self._stop_conversation,
                                   state_dir=state_dir, clock=clock)
        self.run_tool: ToolRunner = self.toolbox.call if self.toolbox else no_tools
        self.ready = asyncio.Event()
        self.wake = setup.wake_gate(cfg)
        self.earcon = load_earcon(cfg) if cfg.conversation.earcon else b""
        barge = cfg.bargein
        echo = EchoGuard(delay_s=barge.echo_delay_ms / 1000, spread_s=barge.echo_spread_ms / 1000,
                         coupling_db=barge.echo_coupling_db, margin_db=barge.echo_margin_db)
        self.core = c.Core(core_settings(cfg), upstream=setup.upstream_gate(cfg), echo=echo,
                           endpointer=setup.endpointer(cfg))
        session = cfg.request_session()
        self._upstream = _Upstream(session.input_audio_format or "pcm16",
                                   session.input_audio_sampling_rate or 16000)
        self.link = VoiceLiveLink(cfg.voicelive, session, auth, clock=clock)
        self.link.on_audio_written = self._on_audio_written
        audio = cfg.audio
        self.capture = Capture(on_frame=self._on_frame, device=audio.input_device,
                               frame_ms=audio.frame_ms, rate=audio.input_rate or None,
                               backoff=audio.reopen_backoff_s,
                               on_state=self._on_microphone_state)
        self.playback = Playback(device=audio.output_device, rate=audio.output_rate or None,
                                 period_ms=audio.output_period_ms,
                                 prebuffer_ms=audio.output_prebuffer_ms,
                                 rebuffer_ms=audio.output_rebuffer_ms,
                                 backoff=audio.reopen_backoff_s,
                                 on_first_audio=self._on_first_audio,
                                 on_state=self._on_speaker_state)
        self.ducker: Ducker = make_ducker(cfg.ducking.backend, **cfg.ducking.options())
        self.turns: deque[TurnFigures] = deque(maxlen=MAX_TURNS_KEPT)
        self.errors = 0
        # The ungated count of the current turn (TurnFigures.ungated_bytes): open from the
        # turn's first streamed audio to its reply's response.done. _ungated_from is the stream
        # time of the first frame counted since it opened: audio sent from before that frame
        # (the catch-up at the turn's start) was captured before the count began.
        self._ungated_open = False
        self._ungated_from: float | None = None
        self._frame_t: float | None = None  # the frame being handled, if any
        self._missing: set[str] = set()  # roles of the devices reported missing to the core
        self._tasks: set[asyncio.Task[Any]] = set()
        self._duck_queue: asyncio.Queue[bool] = asyncio.Queue()
        self._wake_at: float | None = None
        self._delta_at: dict[str, float] = {}
        self._drain_task: asyncio.Task[None] | None = None
        self._earcons = 0
        self._started_wall = time.time()
        self._state_since = time.time()
        self._item_started: OrderedDict[str, float] = OrderedDict()  # user item → speech start
        self._speech_end_at: float | None = None
        self._last_tick = clock()
        self.tool_calls: deque[dict[str, Any]] = deque(maxlen=MAX_TURNS_KEPT)

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (or the task is cancelled); then shut everything down.
        Raises DeviceError only if an audio device cannot be opened at all at start."""
        async with ducking_guard(self.ducker):
            try:
                await self.playback.start()
                await self.capture.start()
                self.link.start(wanted=self.cfg.conversation.connect_on_start)
                self._spawn(self._pump_events(), "events")
                self._spawn(self._tick(), "ticker")
                self._spawn(self._ducking(), "ducking")
                await stop.wait()
            finally:
                await self._shutdown()

    async def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self._do(self.core.shutdown(self.clock()))
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.playback.stop()
        await self.ducker.unduck()
        await self.link.close()
        if self.toolbox is not None:
            await self.toolbox.aclose()
        await self.capture.aclose()
        await self.playback.aclose()
        # Release the wake word's TFLite interpreters now (no frame comes after the capture
        # closed): a stopped Daemon sits in reference cycles until the cyclic GC runs, so
        # every SIGHUP rebuild kept ~5 MB and 3 descriptors (the .tflite files) alive for
        # a long while (found by the soak run). Idempotent.
        self.wake.detector.close()

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors += 1
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------------ inputs

    def _on_frame(self, frame: bytes, t: float) -> None:
        if not self.ready.is_set():  # the first frame: the microphone delivers
            log.info("listening for %s", ", ".join(self.wake.detector.names))
            self.ready.set()
        self._frame_t = t
        try:
            for when, level in self.playback.take_reference():
                self.core.on_playback_reference(level, when)
            for det in self.wake.process(frame, t):
                self._do(self.core.on_wake(det.name, det.score, det.t_audio,
                                           word_end=det.t_end_estimate))
            self._do(self.core.on_frame(frame, t))
        except Exception:
            self.errors += 1
            log.exception("error while handling a microphone frame at %.3f", t)
        finally:
            self._frame_t = None
        # After the frame's actions: a turn that started in this frame counts it whole.
        if self._ungated_open and self.turns:
            self.turns[-1].ungated_bytes += self._upstream.wire_bytes(len(frame))
            if self._ungated_from is None:
                self._ungated_from = t

    # A device's supervisor calls these on the loop, once per state change; "missing" comes
    # right after the stream failed, before anything the failure woke (a playback drain).

    def _on_microphone_state(self, state: DeviceState, reason: str) -> None:
        if state is DeviceState.MISSING:
            self._missing.add("microphone")
            # The next frame is not contiguous with the last one: the wake word starts afresh.
            self.wake.forget()
            self._do(self.core.on_microphone_lost(self.clock()))
        elif state is DeviceState.OK and "microphone" in self._missing:
            self._missing.discard("microphone")
            self._do(self.core.on_microphone_back(self.clock()))

    def _on_speaker_state(self, state: DeviceState, reason: str) -> None:
        if state is DeviceState.MISSING:
            self._missing.add("speaker")
            self._do(self.core.on_speaker_lost(self.clock()))
        elif state is DeviceState.OK and "speaker" in self._missing:
            self._missing.discard("speaker")
            self._do(self.core.on_speaker_back(self.clock()))

    async def _pump_events(self) -> None:
        while True:
            event = await self.link.events.get()
            try:
                if isinstance(event, ev.ResponseAudioDelta):
                    self._delta_at.setdefault(event.item_id, self.clock())
                    # Bounded: deltas of items that never play (a cancelled reply's, or bad
                    # server input) would otherwise stay here forever.
                    while len(self._delta_at) > MAX_TURNS_KEPT:
                        del self._delta_at[next(iter(self._delta_at))]
                elif isinstance(event, ev.InputAudioBufferSpeechStarted
                                | ev.InputAudioBufferCommitted):
                    self._item_started.setdefault(event.item_id, self.clock())
                    while len(self._item_started) > MAX_TURNS_KEPT:
                        self._item_started.popitem(last=False)
                elif (isinstance(event, ev.ConversationItemInputAudioTranscriptionCompleted)
                        and self.toolbox is not None):
                    # What the user said (the service's transcription of the microphone) is
                    # the only thing that can confirm a confirm = true tool, and only for a
                    # turn that began after the question: its time is that of its own item
                    # (transcripts arrive late, out of step with newer speech).
                    began = self._item_started.get(event.item_id)
                    if began is not None:
                        self.toolbox.user_said(event.transcript, began)
                    else:
                        log.debug("transcript of unknown item %s not used for confirmation",
                                  event.item_id)
                self._do(self.core.on_event(event, self.clock()))
                if isinstance(event, LinkUp | LinkDown):
                    log.info("%s", self.link.status_text)
            except Exception:
                self.errors += 1
                log.exception("error while handling %s", getattr(event, "type", event))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._last_tick = self.clock()
            try:
                self._do(self.core.on_tick(self.clock()))
            except Exception:
                self.errors += 1
                log.exception("error in the timer tick")

    async def _ducking(self) -> None:
        """Carries out duck/unduck in order (the ducker is idempotent and bounded)."""
        while True:
            if await self._duck_queue.get():
                await self.ducker.duck()
            else:
                await self.ducker.unduck()

    async def _tool(self, action: c.RunTool) -> None:
        started = self.clock()
        try:
            output = await self.run_tool(action.call_id, action.name, action.arguments)
        except Exception as exc:  # the runner's contract says it never raises; be safe
            log.exception("tool %s failed", action.name)
            output = json.dumps({"ok": False, "error": f"{action.name} failed: {exc}"})
        ms = (self.clock() - started) * 1000
        try:
            result = json.loads(output)
            ok = bool(result.get("ok")) if isinstance(result, dict) else True
            error = result.get("error") if isinstance(result, dict) else None
        except ValueError:
            ok, error = True, None
        self.tool_calls.append({"turn": self.core.turn, "name": action.name,
                                "call_id": action.call_id, "ok": ok, "ms": round(ms, 1),
                                "at": time.time(), "error": error})
        log.info("tool %s done in %.0f ms", action.name, ms,
                 extra={"tool": action.name, "call_id": action.call_id, "latency_ms": ms})
        self._do(self.core.on_tool_result(action.call_id, output, self.clock()))

    async def _drained(self) -> None:
        await self.playback.wait_drained()
        self._do(self.core.on_playback_drained(self.clock()))

    def _stop_conversation(self) -> None:
        self._do(self.core.end_conversation(self.clock()))

    def healthy(self) -> bool:
        """For the systemd watchdog: the loop still runs its 100 ms timer. (A missing
        microphone is not a hang: its supervisor reopens it, and a restart would not help.)"""
        return self.clock() - self._last_tick < 5.0

    # ------------------------------------------------------------------ figures

    def _on_audio_written(self, t: float) -> None:
        if self._wake_at is not None and self.turns:
            self.turns[-1].wake_to_send_ms = (t - self._wake_at) * 1000
            self._wake_at = None

    def _on_first_audio(self, item_id: str, t: float) -> None:
        got = self._delta_at.pop(item_id, None)
        if got is not None and self.turns:
            turn = self.turns[-1]
            turn.first_delta_to_device_ms = (t - got) * 1000
            if self._speech_end_at is not None and turn.first_audio_ms is None:
                turn.first_audio_ms = (t - self._speech_end_at) * 1000
            self._telemetry(c.Telemetry(Tn.FIRST_AUDIO_AT_SPEAKER, t, {
                "item": item_id, "after_delta_ms": round((t - got) * 1000, 1)}))

    def _ungated_window(self, name: Tn) -> None:
        """Opens and closes the ungated count of the current turn (see :class:`TurnFigures`)
        on the core's timeline. Called while the core's actions are carried out, so
        ``core.state`` is the state after the input that produced ``name``."""
        state = self.core.state
        if name in (Tn.WAKE, Tn.FOLLOW_UP_SPEECH) or (name is Tn.BARGE_IN
                                                      and state is c.State.LISTENING):
            if not self._ungated_open:  # else every frame so far is counted already
                self._ungated_open, self._ungated_from = True, None
        elif name is Tn.TOOL_CALL and state is not c.State.IDLE:
            # Comes right after the "reply done" of the response that called it: the turn
            # goes on until the reply that follows the tool outputs is done.
            self._ungated_open = True
        elif name is Tn.IDLE or (name is Tn.REPLY_DONE and state is not c.State.LISTENING):
            # A "reply done" in LISTENING is the cancelled reply of a barge-in: the turn goes on.
            self._ungated_open = False

    def _count_upstream(self, a: c.SendAudio, sent: int) -> None:
        if not self.turns:
            return
        turn = self.turns[-1]
        turn.upstream_bytes += sent
        # Audio from before the first frame counted since the window opened was captured
        # before the count began (the wake word's tail, a prefix padding): count it here.
        first = self._ungated_from if self._ungated_from is not None else self._frame_t
        if self._ungated_open and (first is None or a.t < first):
            turn.ungated_bytes += self._upstream.wire_bytes(len(a.pcm))

    def _telemetry(self, entry: c.Telemetry) -> None:
        if entry.name in (Tn.SPEECH_END_SERVER, Tn.END_OF_UTTERANCE_LOCAL):
            self._speech_end_at = self.clock()
        if entry.name in (Tn.WAKE, Tn.FOLLOW_UP_SPEECH):
            self.turns.append(TurnFigures(turn=self.core.turn, started=entry.t,
                                          wake_word=entry.fields.get("word")))
            self._wake_at = self.clock() if entry.name is Tn.WAKE else None
        elif entry.name is Tn.BARGE_IN and self.turns:
            self.turns[-1].bargein = str(entry.fields.get("by"))
        elif entry.name is Tn.TOOL_CALL and self.turns:
            self.turns[-1].tools.append(str(entry.fields.get("name")))
        self._ungated_window(entry.name)
        details = " ".join(f"{k}={v}" for k, v in entry.fields.items())
        log.info("%s %s", entry.name, details, extra={"turn": self.core.turn})
        if self.on_telemetry is not None:
            try:
                self.on_telemetry(entry)
            except Exception:
                log.exception("telemetry hook failed")

    # ------------------------------------------------------------------ actions

    def _do(self, actions: list[c.Action]) -> None:
        for action in actions:
            try:
                self._act(action)
            except Exception:
                self.errors += 1
                log.exception("error while carrying out %s", type(action).__name__)

    def _act(self, a: c.Action) -> None:
        if isinstance(a, c.SendAudio):
            wire = self._upstream(a.pcm)
            self.link.append_audio(wire)
            self._count_upstream(a, len(wire))
        elif isinstance(a, c.SendEvent):
            self.link.send(a.event)
        elif isinstance(a, c.Play):
            self.playback.feed(a.item_id, a.data, a.fmt)
        elif isinstance(a, c.FinishItem):
            self.playback.finish(a.item_id)
            if self._drain_task is None or self._drain_task.done():
                self._drain_task = self._spawn(self._drained(), "drain")
        elif isinstance(a, c.PausePlayback):
            self.playback.pause()
        elif isinstance(a, c.ResumePlayback):
            self.playback.resume()
        elif isinstance(a, c.StopPlayback):
            if self.playback.state is DeviceState.OK:  # a lost speaker was flushed already
                self.playback.stop()
            if self._drain_task is not None:
                self._drain_task.cancel()
            played = self.playback.played_ms(a.item_id) if a.item_id else 0.0
            self._do(self.core.on_playback_stopped(a.item_id, played, self.clock()))
        elif isinstance(a, c.Duck | c.Unduck):
            self._duck_queue.put_nowait(isinstance(a, c.Duck))
        elif isinstance(a, c.RunTool):
            self._spawn(self._tool(a), f"tool {a.name}")
        elif isinstance(a, c.Earcon):
            if self.earcon:
                self._earcons += 1
                item = f"earcon_{self._earcons}"
                self.playback.feed(item, self.earcon, "pcm16")
                self.playback.finish(item)
        elif isinstance(a, c.Connect):
            self.link.set_wanted(a.wanted)
        elif isinstance(a, c.Telemetry):
            self._telemetry(a)
        elif isinstance(a, c.StateChanged):
            self.link.hold_recycle = a.new is not c.State.IDLE
            self._state_since = time.time()

    # ------------------------------------------------------------------ status

    def snapshot(self) -> dict[str, Any]:
        """The status snapshot (shape: :mod:`edgevoice.service.status`); no secrets."""
        retry_in = None
        if self.link.retry_at is not None:
            retry_in = max(0.0, self.link.retry_at - self.clock())
        wall = time.time() - self.clock()  # monotonic → epoch
        return {
            "state": self.core.state.value,
            "since": self._state_since,
            "started": self._started_wall,
            "link": {"state": self.link.state.value, "retry_in": retry_in,
                     "endpoint": self.cfg.voicelive.endpoint,  # the server strips secrets
                     "detail": self.link.status_text, "reason": self.link.last_reason},
            "devices": {
                "microphone": {"device": self.capture.device_name or self.cfg.audio.input_device,
                               "state": self.capture.state.value},
                "speaker": {"device": self.playback.device_name or self.cfg.audio.output_device,
                            "state": self.playback.state.value}},
            "wake_words": list(self.wake.detector.names),
            "turns": [{"turn": t.turn, "started": t.started + wall, "wake_word": t.wake_word,
                       "wake_to_send_ms": t.wake_to_send_ms,
                       "first_audio_ms": t.first_audio_ms,
                       "first_delta_to_device_ms": t.first_delta_to_device_ms,
                       "bargein": t.bargein is not None, "tools": list(t.tools),
                       "upstream_bytes": t.upstream_bytes, "ungated_bytes": t.ungated_bytes}
                      for t in self.turns],
            "tool_calls": list(self.tool_calls),
            "errors": self.errors,
        }
