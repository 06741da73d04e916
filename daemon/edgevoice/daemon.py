"""The daemon: builds the parts from the config and runs them around the conversation core.

One asyncio loop owns everything. The capture callback thread hands frames to the loop; each
frame goes to the :class:`~edgevoice.conversation.core.Core`, whose actions this module
carries out on the real parts: the Voice Live link, the playback, the ducker and the tools,
and to the wake word's worker thread (:class:`~edgevoice.listen.worker.WakeWorker`: no model
runs on the loop), whose detections come back to the loop and go to the core in stream order,
after the frames they were found in. Server events come from the link's queue; timer ticks come
every 100 ms, with the microphone frames (a ticker task takes over while none come); nothing
here blocks the loop (ducking and tools run as tasks).

Idle cost. Listening all day, the daemon wakes the loop as rarely as it can: while the core
is idle the capture delivers the frames in step with the wake word worker's batches
(:meth:`~edgevoice.audio.capture.Capture.wake_after`): every 320 ms in silence, every 80 ms
once the gate heard speech (:attr:`~edgevoice.listen.worker.WakeWorker.relaxed`); from the
moment a conversation starts, every frame at once again.

Guarantees:
- :meth:`Daemon.run` returns only after the speaker was stopped, every ducked volume was
  restored (also on SIGTERM/exit through :func:`~edgevoice.ducking.ducking_guard`), the link
  was closed and both audio streams were closed — also when it is cancelled or a part fails.
- An exception while handling one frame, event or action is logged with what was being done
  and the daemon goes on; nothing the network or the model sends stops it.
- ``ready`` is set once the microphone delivers frames and the wake word is listening.
- The wake word's backlog is bounded (:data:`WAKE_BACKLOG_S`); frames it drops are counted
  in the status (``wake.frames_dropped``) and logged once per episode. A detection that
  reaches the core up to :attr:`Daemon.wake_late_s` after its frame (a full backlog and a
  pre-roll replay) is handled as if on time (its request streamed from the word's end; see
  ``Core.on_wake``); a later one streams what the upstream gate still holds. The worker
  thread is started with the daemon and ended (and joined, its models closed) after the
  microphone closed.
- A device that vanishes is reopened by its supervisor; meanwhile the status says so and the
  core is told at once (microphone: the turn is committed or ended, the wake word starts
  afresh when it is back; speaker: the reply is cancelled and truncated to what was played).
- With ``[homeassistant]`` the :class:`~edgevoice.homeassistant.HomeAssistant` link runs as
  its own task: it is told the state, the wake word and the transcript without ever making
  the loop wait, and says ``offline`` (bounded) at shutdown.
- Push-to-talk and mute triggers (:mod:`edgevoice.triggers`) report on the loop and reach
  the core as inputs (:meth:`Core.on_button`, :meth:`Core.set_muted`); nothing waits for a
  pin or an input device. While muted (:attr:`Daemon.muted`) a microphone frame is counted
  and dropped before anything sees it: the wake word gets no frame, the core none, the link
  nothing; audio still queued for the service when the mute came is dropped. The mute is
  kept in ``state_dir`` and restored at start.
- After every batch of the core's actions (and every tick) the feedback state is worked out
  (:func:`~edgevoice.feedback.feedback_state`); a change is a ``state`` timeline entry and
  goes to the hooks and the light (:mod:`edgevoice.feedback`), which never block the loop.
- Telemetry entries (the timeline of :mod:`edgevoice.conversation.telemetry`) go to the
  logger, to :class:`~edgevoice.metrics.Metrics` (the last turns' latency figures and upstream
  byte counts, bounded, for status output and the benchmark), to the Prometheus
  :class:`~edgevoice.exporter.Exporter` when ``[metrics] listen`` is set, and to
  ``on_telemetry``. The exporter's HTTP server is this daemon's: opened by :meth:`Daemon.run`
  (a port that cannot be had is logged, nothing else fails) and closed before it returns.
  An entry with a ``reason`` (an outcome: a failed or cut-off reply, a cue, a transcription
  failure, a service warning or error) is logged as a warning with the journal field
  ``EDGEVOICE_REASON``; a ``reply done`` line also carries its token counts as fields.
- Cues: each cue class plays its own earcon (``[cues]``: built-in, a WAV, or off), queued
  after what is already playing. Tokens of every response count against ``[limits]``; the
  counts are kept in ``state_dir/usage.json`` (per minute, the last day), so a restart does
  not reset the budget; a file that cannot be read is logged once and counting starts
  afresh. Before each wake word the core is told whether the budget is spent.
- Replies the daemon asks for (:class:`~edgevoice.conversation.core.RequestReply`) go out
  as ``response.create`` at once, or, with ``[context] command``, after that command ran
  (argv, no shell, only the ``env`` it is given and PATH, bounded by ``timeout_s`` and
  ``max_bytes``) with its stdout as ``additional_instructions``; a failing command is logged
  (once until it works again) and the reply is asked for without context.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
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
from edgevoice.config.tools import OUTPUT_PREFIX, ToolSpec, render
from edgevoice.conversation import core as c
from edgevoice.conversation.budget import TokenBudget
from edgevoice.conversation.echo import EchoGuard
from edgevoice.conversation.outcome import CUES, USAGE_FIELDS
from edgevoice.ducking import Ducker, ducking_guard, make_ducker
from edgevoice.exporter import Exporter, MetricsServer
from edgevoice.feedback import Feedback, feedback_state
from edgevoice.homeassistant import HomeAssistant
from edgevoice.link.auth import Auth
from edgevoice.link.client import VoiceLiveLink
from edgevoice.link.protocol import LinkDown, LinkState, LinkUp
from edgevoice.listen import setup
from edgevoice.listen.gate import WakeGate
from edgevoice.listen.wake import Detection
from edgevoice.listen.worker import WakeWorker, frames_for
from edgevoice.metrics import Metrics, TurnFigures
from edgevoice.offline.results import Command
from edgevoice.offline.speech import LocalVoice, SpeechError
from edgevoice.offline.worker import RecognizerError, RecognizerProcess
from edgevoice.tools import ToolBox
from edgevoice.tools.actions import ToolFailure, execute
from edgevoice.tools.confirm import Answer, YesRule
from edgevoice.tools.toolbox import complete_arguments
from edgevoice.triggers import Triggers
from edgevoice.util import child_environ, data_path, is_loopback_host
from edgevoice.wire import events as ev

log = logging.getLogger("edgevoice.daemon")

TICK_S = 0.1
#: While frames come, they carry the ticks (the loop is awake for them anyway); the ticker
#: task then only checks this often whether they still come.
TICK_FALLBACK_S = 1.0
EARCON_RATE = 24000
#: The most audio waiting for the wake word's worker; beyond it frames are dropped (counted).
WAKE_BACKLOG_S = 2.0
#: The file in the state directory that keeps the privacy mute across restarts.
MUTE_FILE = "muted"
#: While muted the frames are only counted: the loop wakes for them every 320 ms.
MUTED_BATCH_SAMPLES = SAMPLE_RATE * 32 // 100

#: The longest a confirmation prompt may take to be spoken (on top of the answer's window).
CONFIRM_PROMPT_MAX_S = 30.0
#: The longest utterance kept for the local recogniser (the core cuts one at
#: ``offline_max_utterance_s``; this bounds the buffer whatever it is told).
OFFLINE_MAX_UTTERANCE_S = 12.0
#: The recogniser's process is started again after it died, at most this often.
OFFLINE_RESTART_S = 30.0

#: ``async (call_id, name, arguments) -> output``: never raises (the tools module's contract).
ToolRunner = Callable[[str, str, str], Awaitable[str]]


async def no_tools(call_id: str, name: str, arguments: str) -> str:
    """The runner when no tools are declared: every call is an unknown tool, nothing runs."""
    return json.dumps({"ok": False, "error": f"unknown tool {name!r}: no such tool is declared"})


def wake_late_s(gate: WakeGate) -> float:
    """How late a wake detection may reach the core and still be judged as if on time: a
    full backlog plus the gate's pre-roll replay (on a board that replays about in real
    time). The pre-roll is the configured one or the engines' context."""
    return WAKE_BACKLOG_S + gate.pre_roll_samples / SAMPLE_RATE


def offline_mode(cfg: Config) -> str:
    """``conversation.offline``, or ``off`` when no tool declares sentences (nothing could
    be understood on the device)."""
    return cfg.conversation.offline if any(t.sentences for t in cfg.tools) else "off"


def offline_reply(spec: ToolSpec | None, arguments: str, output: str) -> str | None:
    """The tool's ``offline_reply`` with its arguments (the schema's defaults for those not
    given) and ``{output.FIELD}`` the fields of its output, when the call succeeded; None
    without one, when it failed, or when a field it names is not in the output."""
    if spec is None or not spec.offline_reply:
        return None
    try:
        result = json.loads(output)
        if result.get("ok") is not True:
            return None
        args = json.loads(arguments)
    except (ValueError, AttributeError):
        return None
    values = complete_arguments(spec.parameters, args if isinstance(args, dict) else {})
    values.update({OUTPUT_PREFIX + k: v for k, v in result.items()})
    try:
        return render(spec.offline_reply, values)
    except (KeyError, ValueError, IndexError):
        return None


def core_settings(cfg: Config, wake_late: float) -> c.CoreSettings:
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
        wake_late_s=wake_late,
        confirm_answer_s=cfg.confirmation.answer_wait_s,
        auto_response=td.type != "none" and td.create_response,
        drive_replies=td.type != "none" and not td.create_response,
        cue_lines=cfg.cues.lines(),
        ptt_mode=cfg.push_to_talk.mode,
        ptt_end_follow_up=cfg.push_to_talk.end_follow_up,
        ptt_preroll_s=cfg.push_to_talk.preroll_ms / 1000,
        offline=offline_mode(cfg),
        offline_after_s=conv.offline_after_s,
    )


def telemetry_details(entry: c.Telemetry, transcripts: bool = True) -> str:
    """The ``key=value`` text of a timeline entry's log line; without ``transcripts`` what
    was said (``text``) is replaced by its length (``service.log_transcripts = false``)."""
    fields = entry.fields
    if not transcripts and "text" in fields:
        fields = {**fields, "text": f"({len(str(fields['text']))} chars)"}
    return " ".join(f"{k}={v}" for k, v in fields.items())


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


def load_cue_earcons(cfg: Config) -> dict[str, bytes]:
    """Each cue's earcon as 24 kHz mono PCM16 (``[cues]``: the built-in ``cue-<name>.wav``
    scaled to ``earcon_volume_db``, a WAV of the user's as it is, or none for ""). Raises
    ValueError naming the key and file if one cannot be read."""
    gain = 10 ** (cfg.conversation.earcon_volume_db / 20)
    out: dict[str, bytes] = {}
    for cue in CUES:
        setting = cfg.cues.earcon(cue)
        if setting == "":
            continue
        path = Path(setting) if setting else data_path(f"cue-{cue}.wav")
        try:
            pcm, rate = read_wav(path)
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"cues.{cue}_earcon: cannot read {path}: {exc}") from exc
        if setting is None:
            pcm = (np.frombuffer(pcm, "<i2").astype(np.float32) * gain).astype("<i2").tobytes()
        out[cue] = resample(pcm, rate, EARCON_RATE)
    return out


USAGE_FILE = "usage.json"
#: Entries that report an outcome the user is told of: logged as warnings with their reason.
OUTCOME_ENTRIES = frozenset({
    c.TelemetryName.REPLY_DONE, c.TelemetryName.CUE, c.TelemetryName.TRANSCRIPTION_FAILED,
    c.TelemetryName.SERVICE_WARNING, c.TelemetryName.SERVICE_ERROR,
    c.TelemetryName.LIMIT_REACHED})


class _Context:
    """The per-turn context provider of ``[context]`` (see the module docstring)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg.context
        self._failing = False

    async def get(self) -> str | None:
        c = self.cfg
        if not c.command:
            return None
        problem: str | None = None
        text: str | None = None
        try:
            done = await asyncio.wait_for(
                execute(list(c.command), child_environ(c.env), None, c.max_bytes), c.timeout_s)
        except TimeoutError:
            problem = f"gave no answer within {c.timeout_s:g} s"
        except ToolFailure as exc:
            problem = exc.message
        else:
            if done.code != 0:
                problem = f"exited with status {done.code}"
            elif done.truncated:
                problem = f"wrote more than {c.max_bytes} bytes"
            else:
                text = done.stdout.decode("utf-8", errors="replace").strip() or None
        if problem is not None:
            if not self._failing:
                log.warning("context command %s: %s; replies go on without context",
                            c.command[0], problem, extra={"reason": problem})
            self._failing = True
            return None
        if self._failing:
            log.info("context command %s works again", c.command[0])
        self._failing = False
        return text


def tone_earcons(volume_db: float = -12.0) -> dict[str, bytes]:
    """The mute and unmute chimes (24 kHz PCM16): two short tones, falling for mute, rising
    for unmute — told apart without looking; and ``done`` (an offline command ran, with no
    reply of its own to say): three rising tones."""
    gain = 10 ** (volume_db / 20) * 32767
    n = int(0.09 * EARCON_RATE)
    ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.01 * EARCON_RATE))

    def tone(hz: float) -> np.ndarray:
        return np.sin(2 * np.pi * hz * np.arange(n) / EARCON_RATE) * ramp

    gap = np.zeros(int(0.03 * EARCON_RATE))
    hi, mid, lo = tone(1320.0), tone(1100.0), tone(880.0)
    return {name: (np.concatenate(parts) * gain).astype("<i2").tobytes()
            for name, parts in (("mute", (hi, gap, lo)), ("unmute", (lo, gap, hi)),
                                ("done", (lo, gap, mid, gap, hi)))}


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


class Daemon:
    """The assembled daemon. Construct, then ``await run(stop)``; see the module docstring.

    ``auth``: how to reach Voice Live (the caller owns and closes it). The declared tools
    (``[[tools]]``) run in a :class:`~edgevoice.tools.ToolBox` keeping its exactly-once record
    in ``state_dir``. ``on_telemetry`` gets every timeline entry (the demo prints them).
    ``metrics`` keeps the figures (``turns`` and ``tool_calls`` are its, for short).
    ``pin_factory``: gpiozero's pin factory for the GPIO tools, triggers and light (None: the
    board's). ``muted``: start muted (a rebuilt daemon keeps the mute of the one before; the
    mute kept in ``state_dir`` applies too).
    """

    def __init__(
        self,
        cfg: Config,
        *,
        auth: Auth,
        on_telemetry: Callable[[c.Telemetry], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        state_dir: Path | None = None,
        pin_factory: Any = None,
        muted: bool = False,
    ) -> None:
        self.cfg = cfg
        self.state_dir = state_dir
        self._start_muted = muted
        self.clock = clock
        self.on_telemetry = on_telemetry
        self.toolbox: ToolBox | None = None
        if cfg.tools:
            svc = cfg.service
            self.toolbox = ToolBox(cfg.tools, stop_conversation=self._stop_conversation,
                                   state_dir=state_dir, clock=clock,
                                   max_processes=svc.tool_processes, max_queued=svc.tool_queue,
                                   default_rate_limit=svc.tool_rate_limit,
                                   runner_socket=svc.tool_runner_path(),
                                   ask=self._ask_user,
                                   yes=YesRule(cfg.confirmation.yes,
                                               cfg.confirmation.max_words),
                                   pin_factory=pin_factory)
        self.run_tool: ToolRunner = self.toolbox.call if self.toolbox else no_tools
        self.triggers = Triggers(cfg.triggers, on_talk=self._on_talk, on_mute=self._on_mute,
                                 clock=clock, backoff=cfg.audio.reopen_backoff_s,
                                 pin_factory=pin_factory)
        self.feedback = Feedback(cfg.feedback, pin_factory=pin_factory)
        self.state = "idle"  # the feedback state (see feedback_state)
        self.ready = asyncio.Event()
        self.wake = setup.wake_gate(cfg)
        self.wake_words = list(self.wake.detector.names)  # the gate is the worker's
        self.listener = WakeWorker(self.wake, on_detections=self._on_detections,
                                   max_backlog=frames_for(WAKE_BACKLOG_S, cfg.audio.frame_ms))
        self.listener.relaxed = True  # the core starts idle
        self.wake_late_s = wake_late_s(self.wake)
        self._listening = True  # wake detections are taken (until the shutdown)
        self.earcon = load_earcon(cfg) if cfg.conversation.earcon else b""
        self.cue_earcons = load_cue_earcons(cfg)
        self.context = _Context(cfg)
        self.budget = TokenBudget(cfg.limits.tokens_per_hour, cfg.limits.tokens_per_day)
        self._usage_file = state_dir / USAGE_FILE if state_dir is not None else None
        self._usage_save_failed = False  # said once
        self._load_usage()
        self.earcons = {"wake": self.earcon, **tone_earcons(cfg.conversation.earcon_volume_db),
                        **self.cue_earcons}
        barge = cfg.bargein
        delay_s, spread_s = barge.echo_delay_ms / 1000, barge.echo_spread_ms / 1000
        # The reference must reach back over a late wake word (Core.on_wake's echo check).
        echo = EchoGuard(delay_s=delay_s, spread_s=spread_s, coupling_db=barge.echo_coupling_db,
                         margin_db=barge.echo_margin_db,
                         history_s=max(3.0, c.WAKE_WORD_S + delay_s + spread_s
                                       + self.wake_late_s))
        self.core = c.Core(core_settings(cfg, self.wake_late_s),
                           upstream=setup.upstream_gate(cfg, wake_late_s=self.wake_late_s),
                           echo=echo, endpointer=setup.endpointer(cfg))
        session = cfg.request_session()
        self._upstream = _Upstream(session.input_audio_format or "pcm16",
                                   session.input_audio_sampling_rate or 16000)
        self.link = VoiceLiveLink(cfg.voicelive, session, auth, clock=clock)
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
        self.homeassistant: HomeAssistant | None = None
        if cfg.homeassistant is not None:
            self.homeassistant = HomeAssistant(cfg.homeassistant,
                                               on_mute=self._on_mute_request)
        capture = self.capture
        self.metrics = Metrics(self.core, frames=lambda: capture.frames,
                               frame_bytes=capture.frame_bytes,
                               wire_bytes=self._upstream.wire_bytes, clock=clock)
        self.link.on_audio_written = self.metrics.on_audio_written
        self.errors = 0
        self._missing: set[str] = set()  # roles of the devices reported missing to the core
        # The Prometheus endpoint ([metrics] listen): this daemon's own registry and server,
        # opened in run() and closed with the daemon (a SIGHUP rebuild opens a new one).
        self.exporter: Exporter | None = None
        self.metrics_server: MetricsServer | None = None
        address = cfg.metrics.address()
        if address is not None:
            self.exporter = Exporter(
                wake_words=self.wake_words, tools=[t.name for t in cfg.tools],
                turns=lambda: self.core.turn,
                missing=lambda: [(d, d in self._missing) for d in ("microphone", "speaker")],
                clock=clock)
            self.metrics.on_figure = self.exporter.on_figure
            self.metrics_server = MetricsServer(self.exporter, *address)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._duck_queue: asyncio.Queue[bool] = asyncio.Queue()
        self._drain_task: asyncio.Task[None] | None = None
        self._earcons = 0
        self._started_wall = time.time()
        self._state_since = time.time()
        self._answers: dict[str, asyncio.Future[Answer]] = {}  # confirmations asked
        self._last_tick = clock()
        self._last_frame_at = float("-inf")  # clock() when the last frame was handled
        self.muted_frames = 0  # microphone frames dropped unseen while muted
        # Offline commands: the recognisers are built in their own process at start (run());
        # until then (or if that fails) an offline utterance is "not understood".
        self.recognizer: RecognizerProcess | None = None
        self.offline_status = "off" if self.offline_mode == "off" else "loading"
        self._offline_restarted = float("-inf")  # monotonic time of the last restart
        self._closing = False
        self._utterance = bytearray()  # LocalAudio of the current utterance
        self._fed = 0  # of which the recogniser has had this many bytes
        self.voice = LocalVoice(cfg.conversation.offline_voice)
        self._speech_failed: str | None = None  # said once until it works again

    @property
    def offline_mode(self) -> str:
        """``off``, ``auto`` or ``always``: the core's (see :func:`offline_mode`)."""
        return self.core.s.offline

    def _load_usage(self) -> None:
        path = self._usage_file
        if path is None or not path.exists():
            return
        try:
            problems = self.budget.load(json.loads(path.read_text(encoding="utf-8")),
                                        time.time())
        except (OSError, ValueError) as exc:
            problems = [str(exc)]
        if problems:
            log.warning("token counts in %s partly unreadable (%s): counting those afresh",
                        path, "; ".join(problems[:3]))

    def _save_usage(self) -> None:
        path = self._usage_file
        if path is None:
            return
        try:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(self.budget.dump()), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            if not self._usage_save_failed:
                log.warning("cannot keep the token counts in %s: %s", path, exc)
            self._usage_save_failed = True

    @property
    def earcon_count(self) -> int:
        """Earcons played since start (the wake chime and the cues)."""
        return self._earcons

    @property
    def turns(self) -> deque[TurnFigures]:
        """The last turns' figures, oldest first (:attr:`Metrics.turns`)."""
        return self.metrics.turns

    @property
    def tool_calls(self) -> deque[dict[str, Any]]:
        """The last tool calls, oldest first (:attr:`Metrics.tool_calls`)."""
        return self.metrics.tool_calls

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (or the task is cancelled); then shut everything down.
        Raises DeviceError only if an audio device cannot be opened at all at start."""
        async with ducking_guard(self.ducker):
            try:
                await self._start_metrics_server()
                self.listener.start()
                if self.offline_mode != "off":
                    self._spawn(self._load_offline(), "offline recogniser")
                await self.playback.start()
                await self.capture.start()
                self.feedback.start()
                self.feedback.show(self.state)  # the light and on_idle from the start
                muted = self._start_muted or self._saved_muted()
                if muted:
                    # Kept from before the restart: muted again, without a chime.
                    self._do([a for a in self.core.set_muted(True, self.clock(), "restart")
                              if not isinstance(a, c.Earcon)])
                self.link.start(wanted=self.cfg.conversation.connect_on_start and not muted)
                self.triggers.start()  # a closed mute switch mutes now
                self._update_feedback()
                self._spawn(self._pump_events(), "events")
                self._spawn(self._tick(), "ticker")
                self._spawn(self._ducking(), "ducking")
                if self.homeassistant is not None:
                    self.homeassistant.set_muted(self.muted)
                    self.homeassistant.set_state(self.state)
                    self.homeassistant.start()
                await stop.wait()
            finally:
                await self._shutdown()

    async def _start_metrics_server(self) -> None:
        """Listen for scrapes; a port that cannot be had is logged and the daemon serves on
        without it (as without the status socket)."""
        server = self.metrics_server
        if server is None:
            return
        try:
            await server.start()
        except OSError as exc:
            log.warning("metrics endpoint off: cannot listen on %s: %s",
                        self.cfg.metrics.listen, exc.strerror or exc)
            self.metrics_server = None
            return
        if not is_loopback_host(server.host):
            log.warning("metrics endpoint on %s is reachable from the network, without "
                        "authentication", self.cfg.metrics.listen)
        log.info("metrics on http://%s/metrics", self.cfg.metrics.listen)

    async def _shutdown(self) -> None:
        self._closing = True  # a recogniser that goes away now is not restarted
        self._listening = False  # a detection still on its way must not wake the core again
        with contextlib.suppress(Exception):
            self._do(self.core.shutdown(self.clock()))
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.metrics_server is not None:
            await self.metrics_server.close()
        self.playback.stop()
        await self.ducker.unduck()
        await self.triggers.aclose()
        await self.feedback.aclose()
        await self.link.close()
        if self.homeassistant is not None:
            await self.homeassistant.aclose()  # says "offline" (bounded)
        if self.toolbox is not None:
            await self.toolbox.aclose()
        await self.capture.aclose()
        await self.playback.aclose()
        if self.recognizer is not None:
            await self.recognizer.close()  # bounded; a recognition under way fails
        # No frame comes after the capture closed: end the worker and release the wake word's
        # TFLite interpreters now (its last act). A stopped Daemon sits in reference cycles
        # until the cyclic GC runs, so every SIGHUP rebuild kept ~5 MB and 3 descriptors (the
        # .tflite files) alive for a long while (found by the soak run).
        await self.listener.aclose()

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

    def healthy(self) -> bool:
        """For the systemd watchdog: the loop still ticks (every 100 ms, with the frames or
        from the ticker task). (A missing microphone is not a hang: its supervisor reopens it,
        and a restart would not help.)"""
        return self.clock() - self._last_tick < 5.0

    # ------------------------------------------------------------------ inputs

    def _on_frame(self, frame: bytes, t: float) -> None:
        """The hot path: once per microphone frame (every 20 ms by default)."""
        if not self.ready.is_set():  # the first frame: the microphone delivers
            log.info("listening for %s", ", ".join(self.wake_words))
            self.ready.set()
        if self.core.muted:
            # Muted: the frame goes nowhere (no wake word, no gate, nothing to send).
            self.muted_frames += 1
            self.playback.take_reference()
            self.capture.wake_after(MUTED_BATCH_SAMPLES)  # nothing needs them soon
            now = self.clock()
            self._last_frame_at = now
            if now - self._last_tick >= TICK_S:
                self._run_tick(now)
            return
        try:
            for when, level in self.playback.take_reference():
                self.core.on_playback_reference(level, when)
            self._do(self.core.on_frame(frame, t), t)
        except Exception:
            self.errors += 1
            log.exception("error while handling a microphone frame at %.3f", t)
        if self.metrics.needs_frame_time:  # once per turn, after the frame's actions
            self.metrics.frame_time(t)
        # Last, so that the worker wakes as the loop is done with the frame (whatever failed
        # above, the wake word gets it).
        self.listener.put(frame, t)
        if self.core.state is c.State.IDLE:
            # Nothing but the wake word needs frames now: the next ones when its batch is full.
            self.capture.wake_after(self.listener.samples_to_batch_end)
        now = self.clock()
        self._last_frame_at = now
        if now - self._last_tick >= TICK_S:
            self._run_tick(now)

    def _on_detections(self, detections: list[Detection]) -> None:
        """The wake word's worker found these (oldest first), in frames the core has seen:
        applied between frames."""
        if not self._listening:
            return
        for det in detections:
            self.core.limit = self.budget.reached(time.time()) if self.budget.limited else None
            self.core.service_unreachable = self._unreachable()
            late = self.listener.newest - det.t_audio
            if late > self.wake_late_s:
                log.warning("wake word %s came %.1f s late (the wake word's worker fell "
                            "behind): the start of the request may be cut", det.name, late)
            try:
                self._do(self.core.on_wake(det.name, det.score, det.t_audio,
                                           word_end=det.t_end_estimate))
            except Exception:
                self.errors += 1
                log.exception("error while handling the wake word %s at %.3f", det.name,
                              det.t_audio)

    def _on_talk(self, pressed: bool, t: float, source: str) -> None:
        """A push-to-talk trigger went down or up at ``t`` (on the loop)."""
        if pressed and self.core.muted:
            log.info("push-to-talk %s ignored: muted", source)
        self.core.service_unreachable = self._unreachable()
        try:
            self._do(self.core.on_button(pressed, t, source))
        except Exception:
            self.errors += 1
            log.exception("error while handling the push-to-talk %s", source)

    def press(self, pressed: bool, source: str = "button") -> None:
        """A push-to-talk press (True) or release now: what a trigger reports (the demo's
        and the benchmark's virtual button)."""
        self._on_talk(pressed, self.clock(), source)

    def _on_mute(self, muted: bool | None, t: float, source: str) -> None:
        self.set_muted(not self.core.muted if muted is None else muted, source)

    @property
    def muted(self) -> bool:
        """The privacy mute: while True no wake word runs and no audio leaves."""
        return self.core.muted

    def set_muted(self, muted: bool, source: str) -> None:
        """Mute or unmute (``source``: who asked, for the log and the timeline: a trigger's
        name, ``"command"``, …). Muting ends any conversation at once, drops audio still
        queued for the service and lets the connection go; the wake word's backlog is
        dropped unseen. The state is kept in the state directory (it survives a restart).
        Idempotent; on the loop."""
        actions = self.core.set_muted(muted, self.clock(), source)
        if not actions:
            return
        if muted:
            self.listener.forget()  # frames queued for the wake word are never looked at
        self._do(actions)
        if muted:
            self.link.set_wanted(False)  # audio still queued for the service is dropped
        log.info("%s by %s", "muted" if muted else "unmuted", source)
        self._save_muted(muted)
        if self.homeassistant is not None:
            self.homeassistant.set_muted(muted)

    def _mute_file(self) -> Path | None:
        return self.state_dir / MUTE_FILE if self.state_dir is not None else None

    def _saved_muted(self) -> bool:
        path = self._mute_file()
        try:
            return path is not None and path.read_text().strip() == "1"
        except OSError:
            return False

    def _save_muted(self, muted: bool) -> None:
        path = self._mute_file()
        if path is None:
            return
        try:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("1\n" if muted else "0\n")
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot keep the mute state in %s: %s", path, exc.strerror or exc)

    # A device's supervisor calls these on the loop, once per state change; "missing" comes
    # right after the stream failed, before anything the failure woke (a playback drain).

    def _on_microphone_state(self, state: DeviceState, reason: str) -> None:
        if state is DeviceState.MISSING:
            self._missing.add("microphone")
            # The next frame is not contiguous with the last one: the wake word starts afresh.
            self.listener.forget()
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

    def _on_first_audio(self, item_id: str, t: float) -> None:
        entry = self.metrics.on_first_audio(item_id, t)
        if entry is not None:
            self._telemetry(entry)

    async def _pump_events(self) -> None:
        while True:
            event = await self.link.events.get()
            try:
                self._on_event(event)
            except Exception:
                self.errors += 1
                log.exception("error while handling %s", getattr(event, "type", event))

    def _on_event(self, event: Any) -> None:
        if isinstance(event, ev.ResponseAudioDelta):
            self.metrics.on_reply_delta(event.item_id)
        self._do(self.core.on_event(event, self.clock()))
        if isinstance(event, LinkUp | LinkDown):
            log.info("%s", self.link.status_text)

    async def _tick(self) -> None:
        """Ticks while no frame comes (the microphone is missing or hung); the frames carry
        them otherwise (see :meth:`_on_frame`)."""
        while True:
            stalled = self.clock() - self._last_frame_at > 2 * TICK_S
            await asyncio.sleep(TICK_S if stalled else TICK_FALLBACK_S)
            now = self.clock()
            if now - self._last_tick >= TICK_S:
                self._run_tick(now)

    def _unreachable(self) -> bool:
        """The link is backing off after a failure, or the service refused the credentials."""
        return self.link.state in (LinkState.BACKOFF, LinkState.AUTH_FAILED)

    def _run_tick(self, now: float) -> None:
        self._last_tick = now
        self.core.service_unreachable = self._unreachable()
        try:
            self._do(self.core.on_tick(now))
            self._update_feedback()  # the link's backoff has no event of its own
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
            if action.source == "offline" and self.toolbox is not None:
                output = await self.toolbox.call(action.call_id, action.name, action.arguments,
                                                 source="offline")
            else:
                output = await self.run_tool(action.call_id, action.name, action.arguments)
        except Exception as exc:  # the runner's contract says it never raises; be safe
            log.exception("tool %s failed", action.name)
            output = json.dumps({"ok": False, "error": f"{action.name} failed: {exc}"})
        ms = (self.clock() - started) * 1000
        audit = self.toolbox.audit(action.call_id) if self.toolbox else None
        self.metrics.on_tool_done(action, output, ms, audit)
        if self.exporter is not None:
            outcome = audit.get("outcome") if audit else None
            if not outcome:
                outcome = ("unknown_tool" if self.toolbox is None
                           else "ok" if self.metrics.tool_calls[-1]["ok"] else "error")
            self.exporter.on_tool_done(action.name, str(outcome))
        log.info("tool %s done in %.0f ms", action.name, ms,
                 extra={"tool": action.name, "call_id": action.call_id, "latency_ms": ms})
        reply = None
        if action.source == "offline" and self.toolbox is not None:
            reply = offline_reply(self.toolbox.spec(action.name), action.arguments, output)
        self._do(self.core.on_tool_result(action.call_id, output, self.clock(), reply=reply))

    async def _ask_user(self, call_id: str, prompt: str, window_s: float) -> Answer:
        """The ToolBox's asker: the core speaks ``prompt`` and listens for the answer (see
        ``Core.ask_confirmation``). Bounded: the prompt's time, the window and the wait for
        the answer's transcript; never raises but CancelledError."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._answers[call_id] = future
        bound = CONFIRM_PROMPT_MAX_S + window_s + self.cfg.confirmation.answer_wait_s
        try:
            self._do(self.core.ask_confirmation(call_id, prompt, window_s, self.clock()))
            async with asyncio.timeout(bound):
                return await future
        except TimeoutError:
            return Answer(None, why=f"no answer within {bound:g} s")
        finally:
            self._answers.pop(call_id, None)
            if not future.done():  # timed out or cancelled: the core stops asking
                self._do(self.core.forget_confirmation(call_id, self.clock()))

    async def _drained(self) -> None:
        await self.playback.wait_drained()
        self._do(self.core.on_playback_drained(self.clock()))

    def _stop_conversation(self) -> None:
        self._do(self.core.end_conversation(self.clock()))

    # ------------------------------------------------------------------ actions
    # ``frame_t``: the stream time of the microphone frame whose input produced the actions,
    # None outside a frame (the metrics count frames from it).

    def _do(self, actions: list[c.Action], frame_t: float | None = None) -> None:
        for action in actions:
            try:
                self._act(action, frame_t)
            except Exception:
                self.errors += 1
                log.exception("error while carrying out %s", type(action).__name__)
        if actions:
            self._update_feedback()

    def _update_feedback(self) -> None:
        """The feedback state from the core, the devices and the link; on a change: the
        timeline entry, the hooks and the light (none of which waits)."""
        # A conversation understood on the device shows what it does, not "offline".
        state = feedback_state(
            self.core.activity(),
            offline=self._unreachable() and not self.core.local_turn,
            error=bool(self._missing))
        if state == self.state:
            return
        self.state = state
        self.feedback.show(state)
        if self.homeassistant is not None:
            self.homeassistant.set_state(state)
        self._telemetry(c.Telemetry(c.TelemetryName.STATE, self.clock(), {"state": state}))

    def _act(self, a: c.Action, frame_t: float | None) -> None:
        if isinstance(a, c.SendAudio):
            wire = self._upstream(a.pcm)
            self.link.append_audio(wire)
            self.metrics.on_upstream(a, len(wire), frame_t)
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
            self._stop_playback(a, frame_t)
        elif isinstance(a, c.Duck | c.Unduck):
            self._duck_queue.put_nowait(isinstance(a, c.Duck))
        elif isinstance(a, c.RunTool):
            self._spawn(self._tool(a), f"tool {a.name}")
        elif isinstance(a, c.Earcon):
            self._earcon(a.name)
        elif isinstance(a, c.RequestReply):
            if self.cfg.context.command:
                self._spawn(self._request_reply(), "reply request")
            else:
                self.link.send(ev.ResponseCreate())
        elif isinstance(a, c.ConfirmationAnswer):
            future = self._answers.get(a.call_id)
            if future is not None and not future.done():
                future.set_result(Answer(a.transcript, a.began, a.why))
        elif isinstance(a, c.LocalAudio):
            if len(self._utterance) < OFFLINE_MAX_UTTERANCE_S * 2 * SAMPLE_RATE:
                self._utterance += a.pcm
                self._feed_recogniser()
        elif isinstance(a, c.LocalReset):
            self._forget_utterance()
        elif isinstance(a, c.Recognise):
            self._feed_recogniser()
            self._spawn(self._recognise(a, bool(self._utterance)), "recognise")
            if a.early_at is None:  # the utterance is over (an early look keeps it)
                self._utterance = bytearray()  # the recogniser forgets it by itself
                self._fed = 0
        elif isinstance(a, c.DropTurnAudio):
            self.link.drop_turn_audio()
        elif isinstance(a, c.SpeakLocal):
            self._spawn(self._speak_local(a), "local reply")
        elif isinstance(a, c.Connect):
            self.link.set_wanted(a.wanted)
        elif isinstance(a, c.Telemetry):
            self._telemetry(a, frame_t)
        elif isinstance(a, c.StateChanged):
            self.link.hold_recycle = a.new is not c.State.IDLE
            self._state_since = time.time()
            # Idle: nothing but the wake word needs the frames, and it only needs them soon
            # once speech began (see WakeWorker.relaxed).
            self.listener.relaxed = a.new is c.State.IDLE
            if a.new is not c.State.IDLE:
                self.capture.wake_after(0)  # every frame at once again

    def _stop_playback(self, a: c.StopPlayback, frame_t: float | None) -> None:
        if self.playback.state is DeviceState.OK:  # a lost speaker was flushed already
            self.playback.stop()
        if self._drain_task is not None:
            self._drain_task.cancel()
        played = self.playback.played_ms(a.item_id) if a.item_id else 0.0
        self._do(self.core.on_playback_stopped(a.item_id, played, self.clock()), frame_t)

    # ------------------------------------------------------------------ offline

    async def _load_offline(self, delay_s: float = 0.0) -> None:
        """Start the recognisers' process (after ``delay_s``) and build them there (seconds
        on a small board: never on the loop). A failure is logged; offline utterances are
        then not understood."""
        await asyncio.sleep(delay_s)
        started = time.monotonic()
        yes = (self.cfg.confirmation.yes
               if any(t.confirm and t.sentences for t in self.cfg.tools) else None)
        try:
            self.recognizer = await RecognizerProcess.open(self.cfg.tools, yes,
                                                           on_lost=self._recogniser_lost)
        except Exception as exc:
            self.offline_status = f"failed: {exc}"
            log.error("offline commands unavailable: the recogniser could not be built: %s",
                      exc, exc_info=not isinstance(exc, RecognizerError))
            return
        self.offline_status = "ready"
        self._fed = 0  # an utterance under way is decoded from its start
        self._feed_recogniser()
        log.info("offline commands ready (%s; %.1f s to load)", self.offline_mode,
                 time.monotonic() - started)

    def _feed_recogniser(self) -> None:
        """Give the recogniser the utterance's audio it has not had yet."""
        if self.recognizer is not None and self.recognizer.alive:
            self.recognizer.feed(bytes(memoryview(self._utterance)[self._fed:]))
            self._fed = len(self._utterance)

    def _forget_utterance(self) -> None:
        self._utterance = bytearray()
        self._fed = 0
        if self.recognizer is not None and self.recognizer.alive:
            self.recognizer.reset()

    def _recogniser_lost(self, recognizer: RecognizerProcess) -> None:
        """The recogniser's process went away by itself (killed, crashed, hung): start
        another: at once the first time, then at most once every :data:`OFFLINE_RESTART_S`
        (one that keeps dying costs a start every 30 s; until it is back, utterances are
        not understood, the reason in the status)."""
        if recognizer is not self.recognizer or self._closing:
            return
        log.error("offline: %s; starting another", recognizer.why)
        self.recognizer = None
        self.offline_status = f"restarting: {recognizer.why}"
        wait = max(0.0, self._offline_restarted + OFFLINE_RESTART_S - time.monotonic())
        self._offline_restarted = time.monotonic() + wait
        self._spawn(self._load_offline(wait), "offline recogniser")

    async def _recognise(self, a: c.Recognise, has_audio: bool) -> None:
        """Have the recogniser say what the utterance fed to it was, and tell the core
        (exactly once; never raises but CancelledError)."""
        started = time.monotonic()
        recognizer = self.recognizer
        if a.purpose == "answer":
            text: str | None = None
            if recognizer is not None and has_audio:
                try:
                    text = await recognizer.answer()
                except RecognizerError as exc:
                    log.error("offline: the answer could not be recognised: %s", exc)
            log.info("offline: answer %r (%.0f ms)", text, (time.monotonic() - started) * 1000)
            self._do(self.core.on_recognised_answer(a.call_id or "", text, self.clock()))
            return
        tool: str | None = None
        arguments: dict[str, Any] = {}
        heard, why, confidence = "", "", None
        if recognizer is None:
            why = f"the offline recogniser is {self.offline_status}"
        elif not has_audio:
            why = "no-speech"
        else:
            try:
                result = await (recognizer.look() if a.early_at is not None
                                else recognizer.finish())
            except RecognizerError as exc:
                why = f"recognition failed: {exc}"
                log.error("offline: %s", why)
            else:
                heard, confidence = result.text, result.confidence
                if isinstance(result, Command):
                    tool, arguments = result.tool, result.arguments
                else:
                    why = result.reason
        ms = (time.monotonic() - started) * 1000
        log.info("offline: heard %r: %s (%.0f ms%s)", heard, tool or why, ms,
                 ", at a pause" if a.early_at is not None else "",
                 extra={"latency_ms": round(ms)})
        self._do(self.core.on_recognised(a.turn, tool, arguments, heard, self.clock(),
                                         confidence=confidence, why=why,
                                         early_at=a.early_at))

    async def _speak_local(self, a: c.SpeakLocal) -> None:
        """Say ``a.text`` (espeak-ng) and its earcon as one item; then the core hears that it
        played (also when nothing could be played: the turn never waits for it)."""
        pcm = b""
        if a.text:
            try:
                pcm = await self.voice.render(a.text)
            except SpeechError as exc:
                if self._speech_failed != str(exc):
                    log.warning("offline: cannot speak the local answer: %s; an earcon "
                                "instead", exc, extra={"reason": str(exc)})
                self._speech_failed = str(exc)
                if a.earcon is None:
                    pcm = self.earcons.get("done", b"")
            else:
                self._speech_failed = None
        if a.earcon:
            pcm += self.earcons.get(a.earcon, b"")
        if self.core.playing_item != a.item_id:
            return  # the user went on meanwhile (a barge-in, the end of the conversation)
        if pcm:
            self.playback.feed(a.item_id, pcm, "pcm16")
            self.playback.finish(a.item_id)
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = self._spawn(self._drained(), "drain")

    async def _request_reply(self) -> None:
        context = await self.context.get()
        self.link.send(ev.ResponseCreate(additional_instructions=context))

    def _earcon(self, name: str = "wake") -> None:
        pcm = self.earcons.get(name, b"")
        if pcm:
            self._earcons += 1
            item = f"earcon_{self._earcons}"
            self.playback.feed(item, pcm, "pcm16")
            self.playback.finish(item)

    def _telemetry(self, entry: c.Telemetry, frame_t: float | None = None) -> None:
        self.metrics.on_telemetry(entry, frame_t)
        if self.exporter is not None:
            self.exporter.on_telemetry(entry)
        if self.homeassistant is not None:
            if entry.name is c.TelemetryName.WAKE:
                self.homeassistant.set_wake_word(str(entry.fields.get("word", "")))
            elif entry.name is c.TelemetryName.USER_SAID:
                self.homeassistant.set_transcript(str(entry.fields.get("text", "")))
        details = telemetry_details(entry, self.cfg.service.log_transcripts)
        fields = entry.fields
        extra: dict[str, Any] = {"turn": self.core.turn}
        extra.update({k: fields[k] for k in USAGE_FIELDS if k in fields})
        if entry.name is c.TelemetryName.REPLY_DONE and any(k in fields for k in USAGE_FIELDS):
            spent = int(fields.get("input_tokens", 0)) + int(fields.get("output_tokens", 0))
            self.budget.add(spent, time.time())
            self._save_usage()
        level = logging.INFO
        reason = fields.get("reason")
        if reason is not None:
            extra["reason"] = str(reason)
            if entry.name in OUTCOME_ENTRIES and not (
                    entry.name is c.TelemetryName.REPLY_DONE
                    and fields.get("status") in ("completed", "cancelled", "canceled")):
                level = logging.WARNING
        log.log(level, "%s %s", entry.name, details, extra=extra)
        if self.on_telemetry is not None:
            try:
                self.on_telemetry(entry)
            except Exception:
                log.exception("telemetry hook failed")

    # ------------------------------------------------------------------ Home Assistant

    def _on_mute_request(self, muted: bool) -> None:
        """Home Assistant's mute switch was flipped (on the loop)."""
        self.set_muted(muted, "homeassistant")
        if self.homeassistant is not None:
            self.homeassistant.set_muted(self.muted)  # the real state, also if unchanged

    # ------------------------------------------------------------------ status

    def snapshot(self) -> dict[str, Any]:
        """The status snapshot (shape: :mod:`edgevoice.service.status`); no secrets."""
        retry_in = None
        if self.link.retry_at is not None:
            retry_in = max(0.0, self.link.retry_at - self.clock())
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
            "wake_words": list(self.wake_words),
            "feedback_state": self.state,
            "muted": self.core.muted,
            "push_to_talk": self.cfg.push_to_talk.mode,
            "triggers": self.triggers.status(),
            "feedback": self.feedback.status(),
            "wake": dataclasses.asdict(self.listener.stats),
            **self.metrics.status(),
            **({"homeassistant": self.homeassistant.status()}
               if self.homeassistant is not None else {}),
            "budget": self.budget.status(time.time()),
            "offline": {"mode": self.offline_mode, "recogniser": self.offline_status,
                        "active": self.core.offline},
            "errors": self.errors,
        }
