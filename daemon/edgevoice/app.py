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
- Telemetry entries (the timeline of :mod:`edgevoice.conversation.core`) go to the logger and
  to ``on_telemetry``; the last turns' latency figures are kept (bounded) for status output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgevoice.audio.capture import SAMPLE_RATE, Capture
from edgevoice.audio.convert import Resampler, encode, read_wav, resample
from edgevoice.audio.playback import Playback
from edgevoice.config import Config
from edgevoice.conversation import core as c
from edgevoice.conversation.echo import EchoGuard
from edgevoice.ducking import Ducker, ducking_guard, make_ducker
from edgevoice.listen import setup
from edgevoice.listen.gate import WakeGate
from edgevoice.listen.wake import WakeWordDetector, WakeWordSpec
from edgevoice.secrets import Secret
from edgevoice.voicelive import events as ev
from edgevoice.voicelive.auth import Auth, make_auth
from edgevoice.voicelive.link import LinkDown, LinkUp, VoiceLiveLink

log = logging.getLogger("edgevoice.app")

TICK_S = 0.1
EARCON_RATE = 24000
MAX_TURNS_KEPT = 20

#: ``async (call_id, name, arguments) -> output``: never raises (the tools module's contract).
ToolRunner = Callable[[str, str, str], Awaitable[str]]


def data_path(name: str) -> Path:
    return Path(str(resources.files("edgevoice") / "data" / name))


async def no_tools(call_id: str, name: str, arguments: str) -> str:
    """The runner when no tools are declared: every call is an unknown tool, nothing runs."""
    return json.dumps({"ok": False, "error": f"unknown tool {name!r}: no such tool is declared"})


def core_settings(cfg: Config) -> c.CoreSettings:
    conv, barge, td = cfg.conversation, cfg.bargein, cfg.session.turn_detection
    return c.CoreSettings(
        output_format=cfg.session.output_audio_format,
        follow_up_s=conv.follow_up_s,
        listen_timeout_s=conv.listen_timeout_s,
        bargein_min_speech_ms=barge.min_speech_ms,
        bargein_local_vad=barge.local_vad,
        bargein_server_vad=barge.server_vad,
        wake_bargein=barge.wake_word,
        stop_words=frozenset(_spec(m).display_name() for m in barge.stop_words),
        auto_truncate=td.type != "none" and td.auto_truncate,
        local_end_of_utterance=td.type == "none",
        earcon=conv.earcon,
        idle_disconnect_s=conv.idle_disconnect_s,
        frame_ms=cfg.audio.frame_ms,
    )


def _spec(model: Any) -> WakeWordSpec:
    return WakeWordSpec(model.name, threshold=model.threshold, trigger_level=model.trigger_level,
                        refractory_s=model.refractory_s)


def build_wake_gate(cfg: Config) -> WakeGate:
    """The wake word models plus the stop-word models behind one VAD gate (one feature
    extractor for all). Raises WakeModelError naming a model that is missing or corrupt."""
    if not cfg.bargein.stop_words:
        return setup.wake_gate(cfg)
    specs = [_spec(m) for m in [*cfg.wake.models, *cfg.bargein.stop_words]]
    return WakeGate(WakeWordDetector(specs), enabled=cfg.wake.vad_gate,
                    aggressiveness=cfg.vad.aggressiveness, vad_frame_ms=cfg.vad.frame_ms,
                    pre_roll_s=cfg.wake.preroll_ms / 1000)


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
        import numpy as np

        gain = 10 ** (conv.earcon_volume_db / 20)
        pcm = (np.frombuffer(pcm, "<i2").astype(np.float32) * gain).astype("<i2").tobytes()
    return resample(pcm, rate, EARCON_RATE) if rate != EARCON_RATE else pcm


class _Upstream:
    """16 kHz PCM16 frames → the session's input format and rate (streaming resampler)."""

    def __init__(self, fmt: str, rate: int) -> None:
        self.fmt = fmt
        target = 8000 if fmt != "pcm16" else rate
        self._resampler = Resampler(SAMPLE_RATE, target) if target != SAMPLE_RATE else None

    def __call__(self, pcm: bytes) -> bytes:
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return encode(pcm, self.fmt) if self.fmt != "pcm16" else pcm


@dataclass
class TurnFigures:
    """Latency figures of one turn (ms), for status output and the benchmark."""

    turn: int
    started: float
    wake_to_send_ms: float | None = None
    first_delta_to_device_ms: float | None = None
    bargein: str | None = None
    truncate_ms: int | None = None
    tools: list[str] = field(default_factory=list)


class Daemon:
    """The assembled daemon. Construct, then ``await run(stop)``; see the module docstring.

    ``auth``/``api_key``: how to reach Voice Live (default: from the config and environment).
    ``tools``: the tool runner (default: none declared). ``on_telemetry``: gets every timeline
    entry (the demo prints them). ``on_state``: gets every state change.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        auth: Auth | None = None,
        api_key: Secret | None = None,
        tools: ToolRunner | None = None,
        on_telemetry: Callable[[c.Telemetry], None] | None = None,
        on_state: Callable[[c.State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.on_telemetry = on_telemetry
        self.on_state = on_state
        self.run_tool = tools or no_tools
        self.ready = asyncio.Event()
        self.wake = build_wake_gate(cfg)
        self.earcon = load_earcon(cfg) if cfg.conversation.earcon else b""
        barge = cfg.bargein
        echo = EchoGuard(delay_s=barge.echo_delay_ms / 1000, spread_s=barge.echo_spread_ms / 1000,
                         coupling_db=barge.echo_coupling_db, margin_db=barge.echo_margin_db)
        self.core = c.Core(core_settings(cfg), upstream=setup.upstream_gate(cfg), echo=echo,
                           endpointer=setup.endpointer(cfg))
        session = cfg.request_session()
        self._upstream = _Upstream(session.input_audio_format or "pcm16",
                                   session.input_audio_sampling_rate or 16000)
        self._auth = auth or make_auth(cfg.voicelive, api_key)
        self._own_auth = auth is None
        self.link = VoiceLiveLink(cfg.voicelive, session, self._auth, clock=clock)
        self.link.on_audio_written = self._on_audio_written
        audio = cfg.audio
        self.capture = Capture(on_frame=self._on_frame, device=audio.input_device,
                               frame_ms=audio.frame_ms, rate=audio.input_rate or None,
                               backoff=audio.reopen_backoff_s)
        self.playback = Playback(device=audio.output_device, rate=audio.output_rate or None,
                                 period_ms=audio.output_period_ms,
                                 prebuffer_ms=audio.output_prebuffer_ms,
                                 rebuffer_ms=audio.output_rebuffer_ms,
                                 backoff=audio.reopen_backoff_s,
                                 on_first_audio=self._on_first_audio)
        self.ducker: Ducker = make_ducker(cfg.ducking.backend, **cfg.ducking.options())
        self.turns: deque[TurnFigures] = deque(maxlen=MAX_TURNS_KEPT)
        self.timeline: deque[c.Telemetry] = deque(maxlen=500)
        self.errors = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._duck_queue: asyncio.Queue[bool] = asyncio.Queue()
        self._wake_at: float | None = None
        self._delta_at: dict[str, float] = {}
        self._drain_task: asyncio.Task[None] | None = None
        self._earcons = 0
        self._started_at = clock()

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
                self._spawn(self._announce_ready(), "ready")
                await stop.wait()
            finally:
                await self._shutdown()

    async def _announce_ready(self) -> None:
        while self.capture.frames == 0:
            await asyncio.sleep(0.02)
        words = ", ".join(self.wake.detector.names)
        log.info("listening for %s", words)
        self.ready.set()

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
        if self._own_auth:
            await self._auth.close()
        await self.capture.aclose()
        await self.playback.aclose()

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
        try:
            for when, level in self.playback.take_reference():
                self.core.on_playback_reference(level, when)
            for det in self.wake.process(frame, t):
                self._do(self.core.on_wake(det.name, det.score, det.t_audio))
            self._do(self.core.on_frame(frame, t))
        except Exception:
            self.errors += 1
            log.exception("error while handling a microphone frame at %.3f", t)

    async def _pump_events(self) -> None:
        while True:
            event = await self.link.events.get()
            try:
                if isinstance(event, ev.ResponseAudioDelta):
                    self._delta_at.setdefault(event.item_id, self.clock())
                self._do(self.core.on_event(event, self.clock()))
                if isinstance(event, LinkUp | LinkDown):
                    log.info("%s", self.link.status_text)
            except Exception:
                self.errors += 1
                log.exception("error while handling %s", getattr(event, "type", event))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
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
        log.info("tool %s done in %.0f ms", action.name, (self.clock() - started) * 1000,
                 extra={"tool": action.name, "call_id": action.call_id})
        self._do(self.core.on_tool_result(action.call_id, output, self.clock()))

    async def _drained(self) -> None:
        await self.playback.wait_drained()
        self._do(self.core.on_playback_drained(self.clock()))

    # ------------------------------------------------------------------ figures

    def _on_audio_written(self, t: float) -> None:
        if self._wake_at is not None and self.turns:
            self.turns[-1].wake_to_send_ms = (t - self._wake_at) * 1000
            self._wake_at = None

    def _on_first_audio(self, item_id: str, t: float) -> None:
        got = self._delta_at.pop(item_id, None)
        if got is not None and self.turns:
            self.turns[-1].first_delta_to_device_ms = (t - got) * 1000
            self._telemetry(c.Telemetry("first audio at speaker", t, {
                "item": item_id, "after_delta_ms": round((t - got) * 1000, 1)}))

    def _telemetry(self, entry: c.Telemetry) -> None:
        self.timeline.append(entry)
        if entry.name == "wake" or entry.name == "follow-up speech":
            self.turns.append(TurnFigures(turn=self.core.turn, started=entry.t))
            self._wake_at = self.clock() if entry.name == "wake" else None
        elif entry.name == "barge-in" and self.turns:
            self.turns[-1].bargein = str(entry.fields.get("by"))
        elif entry.name == "truncate" and self.turns:
            self.turns[-1].truncate_ms = int(entry.fields.get("audio_end_ms", 0))
        elif entry.name == "tool call" and self.turns:
            self.turns[-1].tools.append(str(entry.fields.get("name")))
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
            self.link.append_audio(self._upstream(a.pcm))
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
            if self.on_state is not None:
                self.on_state(a.new)

    # ------------------------------------------------------------------ status

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able picture of the daemon for ``edgevoice status`` (no secrets)."""
        return {
            "state": self.core.state.value,
            "turn": self.core.turn,
            "uptime_s": round(self.clock() - self._started_at, 1),
            "link": {"state": self.link.state.value, "status": self.link.status_text,
                     "retry_at": self.link.retry_at, "last_error": self.link.last_error,
                     "stats": dict(self.link.stats)},
            "devices": {"microphone": self.capture.stats.__dict__,
                        "speaker": self.playback.stats.__dict__},
            "wake_words": list(self.wake.detector.names),
            "turns": [t.__dict__ for t in self.turns],
            "errors": self.errors,
        }
