"""Audio devices: enumeration, selection by spec, and the open/watch/reopen life cycle.

Selection (:func:`select_device`): a spec names a PortAudio device by its exact ALSA PCM name
(``default``, ``plughw:CARD=Device,DEV=0``, ``pulse``, ``pipewire``), else by a case-insensitive
exact name, else by a case-insensitive substring that must match exactly one device. Failures
raise :class:`DeviceError` (message names the spec and lists the devices there are) or
:class:`NoAudioDevices` (nothing at all, e.g. a machine with no sound card).

:class:`SupervisedStream` is the shared life cycle of :class:`~edgevoice.audio.capture.Capture`
and :class:`~edgevoice.audio.playback.Playback`: every blocking PortAudio call (init, open,
close, terminate) runs in a short-lived worker thread under a process-wide lock with a
timeout, never on the event loop; a stream that stops, stalls or reports an error is closed
and reopened with backoff, and each state change is logged once.

PortAudio facts this module designs around (PortAudio 19.6 on ALSA): ``PyAudio()`` enumerates
devices only when no other instance is alive (init is reference-counted), and enumeration opens
every ALSA PCM, which can block forever on a FIFO-backed PCM with no peer — hence the timeouts.
PortAudio's ALSA back end is not thread-safe across init/open/close, hence :func:`pa_lock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import functools
import logging
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TextIO, TypeVar

import pyaudio

log = logging.getLogger(__name__)
_native_log = logging.getLogger("edgevoice.audio.native")
_NATIVE_LEVEL = 5  # below DEBUG: alsa-lib/JACK chatter is only for deep debugging

Kind = Literal["input", "output"]
T = TypeVar("T")

#: Seconds a blocking PortAudio call (init/enumerate/open/close) may take before we give up.
PA_CALL_TIMEOUT = 10.0
#: How often a running stream is checked (at most; ``stall_timeout / 4`` when shorter): a
#: stream PortAudio ended is noticed within this.
WATCH_S = 0.5


class DeviceError(Exception):
    """A configured device cannot be found or opened. The message is meant for the user."""


class NoAudioDevices(DeviceError):
    """PortAudio sees no audio device at all (no sound card, or an ALSA config with none)."""


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device, as enumerated by one ``PyAudio`` instance (``index`` is only
    meaningful for that instance)."""

    index: int
    name: str
    host_api: str
    max_input_channels: int
    max_output_channels: int
    default_rate: int

    def supports(self, kind: Kind) -> bool:
        return (self.max_input_channels if kind == "input" else self.max_output_channels) > 0


# --- native library noise -------------------------------------------------------------------

_quiet_done = False
_quiet_refs: list[Any] = []  # ctypes callbacks must outlive the libraries that hold them


def quiet_native_logs() -> None:
    """Route ALSA's and JACK's stderr chatter (dozens of "Unknown PCM cards.pcm.hdmi" lines on
    every ``PyAudio()``) away from the user's terminal and journal. Idempotent; failures to
    find the libraries are ignored. Also sets ``JACK_NO_START_SERVER`` (unless set) so the
    JACK probe never spawns a server."""
    global _quiet_done
    if _quiet_done:
        return
    _quiet_done = True
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    alsa_handler_t = ctypes.CFUNCTYPE(
        None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
    )

    def _alsa(file: bytes, line: int, func: bytes, err: int, fmt: bytes) -> None:
        # Varargs cannot be formatted from ctypes; the location is enough for debugging.
        _native_log.log(_NATIVE_LEVEL, "alsa-lib %s:%d %s: %s", file, line, func, fmt)

    jack_handler_t = ctypes.CFUNCTYPE(None, ctypes.c_char_p)

    def _jack(msg: bytes) -> None:
        _native_log.log(_NATIVE_LEVEL, "jack: %s", msg)

    alsa = _libasound()
    if alsa is not None:
        handler = alsa_handler_t(_alsa)
        alsa.snd_lib_error_set_handler(handler)
        _quiet_refs.append(handler)
    with contextlib.suppress(OSError, AttributeError):
        jack = ctypes.CDLL("libjack.so.0")
        jhandler = jack_handler_t(_jack)
        jack.jack_set_error_function(jhandler)
        jack.jack_set_info_function(jhandler)
        _quiet_refs.append(jhandler)


# --- ALSA probe -----------------------------------------------------------------------------

_HW_IN_NAME = re.compile(r"\((hw:[^()]+)\)$")  # "USB Audio: - (hw:1,0)" → "hw:1,0"
_SND_PCM_NONBLOCK = 1


@functools.cache
def _libasound() -> ctypes.CDLL | None:
    """alsa-lib, with the prototypes used here; None where it cannot be loaded."""
    try:
        lib = ctypes.CDLL("libasound.so.2")
        lib.snd_pcm_open.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p,
                                     ctypes.c_int, ctypes.c_int]
        lib.snd_pcm_close.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return lib


def alsa_pcm_opens(device: DeviceInfo, kind: Kind) -> bool:
    """Whether alsa-lib can open the ALSA PCM behind ``device`` in ``kind``'s direction now
    (non-blocking, closed at once). True when it cannot be asked: not an ALSA device, or no
    libasound. Call it under :func:`pa_lock`, off the event loop (it opens the PCM)."""
    lib = _libasound() if device.host_api == "ALSA" else None
    if lib is None:
        return True
    match = _HW_IN_NAME.search(device.name)
    name = match[1] if match else device.name
    handle = ctypes.c_void_p()
    stream = 1 if kind == "input" else 0  # SND_PCM_STREAM_CAPTURE / _PLAYBACK
    if lib.snd_pcm_open(ctypes.byref(handle), name.encode(), stream, _SND_PCM_NONBLOCK) < 0:
        return False
    lib.snd_pcm_close(handle)
    return True


# --- PortAudio access -----------------------------------------------------------------------

_PA_LOCK = threading.Lock()


@contextlib.contextmanager
def pa_lock(timeout: float = PA_CALL_TIMEOUT) -> Iterator[None]:
    """Serialise PortAudio init/open/close/terminate across threads. Raises DeviceError if
    another call has held the lock for ``timeout`` seconds (a hung driver)."""
    if not _PA_LOCK.acquire(timeout=timeout):
        raise DeviceError(f"PortAudio busy: another audio call has been stuck for {timeout:.0f}s")
    try:
        yield
    finally:
        _PA_LOCK.release()


def new_pyaudio() -> pyaudio.PyAudio:
    """Create a ``PyAudio`` instance (blocking; call from a worker thread). The caller must
    ``terminate()`` it (use :func:`terminate_pyaudio`)."""
    quiet_native_logs()
    with pa_lock():
        return pyaudio.PyAudio()


def terminate_pyaudio(pa: pyaudio.PyAudio) -> None:
    """Terminate an instance; closes its streams. Errors are logged, never raised."""
    try:
        with pa_lock():
            pa.terminate()
    except Exception as exc:  # cleanup must not raise
        log.debug("PyAudio.terminate failed: %s", exc)


def _rate(value: object) -> int:
    try:
        return int(round(float(value)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def list_devices(pa: pyaudio.PyAudio | None = None) -> list[DeviceInfo]:
    """Enumerate the devices of ``pa`` (or of a temporary instance, created and terminated
    here). Blocking: PortAudio opens every PCM; call it off the event loop or via
    :func:`enumerate_devices`, which bounds the time."""
    own = pa is None
    inst = new_pyaudio() if own else pa
    assert inst is not None
    try:
        devices = []
        for i in range(inst.get_device_count()):
            d = inst.get_device_info_by_index(i)
            try:
                api = str(inst.get_host_api_info_by_index(int(d["hostApi"]))["name"])
            except (OSError, ValueError, KeyError):
                api = "?"
            api = api.removesuffix(" implementation")
            devices.append(
                DeviceInfo(
                    index=int(d["index"]),
                    name=str(d["name"]),
                    host_api=api,
                    max_input_channels=int(d["maxInputChannels"]),
                    max_output_channels=int(d["maxOutputChannels"]),
                    default_rate=_rate(d["defaultSampleRate"]),
                )
            )
        return devices
    finally:
        if own:
            terminate_pyaudio(inst)


def enumerate_devices(timeout: float = PA_CALL_TIMEOUT) -> list[DeviceInfo]:
    """:func:`list_devices` in a daemon thread, bounded by ``timeout``. Raises DeviceError if
    enumeration hangs (a PCM whose open blocks) or PortAudio fails to initialise."""
    result: list[list[DeviceInfo]] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            result.append(list_devices())
        except BaseException as exc:  # reported to the caller
            error.append(exc)

    thread = threading.Thread(target=work, name="pa-enumerate", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise DeviceError(
            f"audio device enumeration did not finish within {timeout:.0f}s "
            "(an ALSA PCM blocks when opened, e.g. a FIFO with no peer)"
        )
    if error:
        exc = error[0]
        if isinstance(exc, DeviceError):
            raise exc
        raise DeviceError(f"PortAudio failed to list devices: {exc}") from exc
    return result[0]


def _describe(devices: Sequence[DeviceInfo], kind: Kind) -> str:
    usable = [d for d in devices if d.supports(kind)]
    if not usable:
        return f"no {kind} devices"
    return f"{kind} devices: " + ", ".join(repr(d.name) for d in usable)


def select_device(
    spec: str | None, kind: Kind, devices: Sequence[DeviceInfo] | None = None
) -> DeviceInfo:
    """Resolve ``spec`` to one device usable for ``kind``.

    Order: exact name; case-insensitive exact name; case-insensitive substring matching one
    device. ``None``/empty means ``default``; ``default`` with no device of that name falls
    back to the first usable device. ``devices`` defaults to a fresh bounded enumeration.
    Raises NoAudioDevices if there are no devices at all, DeviceError if there is none for
    ``kind``, none matching, or several matching a substring."""
    spec = (spec or "default").strip() or "default"
    if devices is None:
        devices = enumerate_devices()
    if not devices:
        raise NoAudioDevices(
            f"no audio devices found while looking for {kind} device {spec!r}: PortAudio sees "
            "none (no sound card, or the ALSA configuration defines no usable PCM)"
        )
    usable = [d for d in devices if d.supports(kind)]
    if not usable:
        raise DeviceError(f"{kind} device {spec!r}: there are no {kind} devices "
                          f"(devices: {', '.join(repr(d.name) for d in devices)})")
    for match in (
        [d for d in usable if d.name == spec],
        [d for d in usable if d.name.lower() == spec.lower()],
    ):
        if match:
            return match[0]
    subs = [d for d in usable if spec.lower() in d.name.lower()]
    if len(subs) == 1:
        return subs[0]
    if len(subs) > 1:
        raise DeviceError(
            f"{kind} device {spec!r} is ambiguous; it matches "
            + ", ".join(repr(d.name) for d in subs)
            + ". Use the exact name."
        )
    if spec == "default":
        return usable[0]
    raise DeviceError(f"{kind} device {spec!r} not found; {_describe(devices, kind)}")


def format_device_table(
    selected_input: str | None,
    selected_output: str | None,
    devices: Sequence[DeviceInfo] | None = None,
) -> str:
    """A table of all devices; the rows the specs select are marked ``<- input`` / ``<- output``
    and a spec that selects nothing gets an ``error:`` line under the table. Raises
    NoAudioDevices / DeviceError only from enumeration (``devices`` None)."""
    if devices is None:
        devices = enumerate_devices()
    marks: dict[int, list[str]] = {}
    errors: list[str] = []
    for spec, kind in ((selected_input, "input"), (selected_output, "output")):
        if spec is None:
            continue
        try:
            marks.setdefault(select_device(spec, kind, devices).index, []).append(kind)  # type: ignore[arg-type]
        except DeviceError as exc:
            errors.append(f"error: {exc}")
    header = ("index", "name", "in", "out", "rate", "api", "selected")
    rows = [
        (
            str(d.index),
            d.name,
            str(d.max_input_channels),
            str(d.max_output_channels),
            str(d.default_rate),
            d.host_api,
            ", ".join(f"<- {m}" for m in marks.get(d.index, [])),
        )
        for d in devices
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines + errors) + "\n"


def devices_command(input_spec: str, output_spec: str, out: TextIO) -> int:
    """``edgevoice devices``: print the device table to ``out``; exit code 0 if both specs
    select a device, 1 otherwise (including no devices at all). Never raises for device
    problems."""
    try:
        devices = enumerate_devices()
    except DeviceError as exc:
        out.write(f"error: {exc}\n")
        return 1
    if not devices:
        out.write("error: no audio devices found (no sound card, or the ALSA configuration "
                  "defines no usable PCM)\n")
        return 1
    table = format_device_table(input_spec, output_spec, devices)
    out.write(table)
    return 1 if "\nerror: " in "\n" + table else 0


# --- supervised streams ---------------------------------------------------------------------


#: At a stop, a stream this long without a callback is closed as a possibly hung one, and the
#: close is given up after STOP_CLOSE_TIMEOUT (shutdown stays within systemd's stop timeout).
STOP_STALL_S = 0.25
STOP_CLOSE_TIMEOUT = 2.0


class DeviceState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    OK = "ok"
    MISSING = "missing"


async def run_blocking(fn: Callable[[], T], timeout: float, name: str = "pa-call") -> T:
    """Run ``fn`` in a new daemon thread and await its result for at most ``timeout`` seconds
    (then raise TimeoutError; the thread is abandoned). A daemon thread rather than the default
    executor so that a call stuck in a driver can neither exhaust the pool nor block exit."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)

    def work() -> None:
        try:
            value, exc = fn(), None
        except BaseException as e:  # handed to the loop
            value, exc = None, e
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(settle, value, exc)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await asyncio.wait_for(asyncio.shield(fut), timeout)


#: What PortAudio calls on its callback thread: (in_data, frame_count, time_info, status)
#: -> (out_data, flag).
StreamCallback = Callable[[bytes | None, int, dict[str, float], int], tuple[bytes | None, int]]


# PyAudio enters Python from PortAudio's own callback thread with PyGILState_Ensure/Release.
# On a thread Python did not create, each such pair builds a thread state and tears it down
# again, its frame stack a fresh mmap/munmap: 50 times a second per 20 ms stream, a good part
# of the idle daemon's CPU. One Ensure more on the first callback keeps the state for the
# thread's life; once the thread is gone (the stream closed), the state is deleted.
_capi = getattr(ctypes, "pythonapi", None)
_KEEP_THREAD_STATES = (_capi is not None and hasattr(_capi, "PyGILState_GetThisThreadState")
                       and os.path.isdir("/proc/self/task"))
if _KEEP_THREAD_STATES:
    _capi.PyGILState_GetThisThreadState.restype = ctypes.c_void_p
    _capi.PyThreadState_Clear.argtypes = [ctypes.c_void_p]
    _capi.PyThreadState_Delete.argtypes = [ctypes.c_void_p]
_kept_states: dict[int, int] = {}  # native thread id -> its kept PyThreadState*
_kept_lock = threading.Lock()


def keep_callback_thread_state() -> None:
    """Call at the start of every PortAudio callback: keeps the calling thread's Python
    thread state until :func:`release_ended_callback_threads` (O(1) after the first call)."""
    if not _KEEP_THREAD_STATES:
        return
    tid = threading.get_native_id()
    if tid in _kept_states:
        return
    _capi.PyGILState_Ensure()  # the GIL is held: this only counts one more user
    with _kept_lock:
        _kept_states[tid] = _capi.PyGILState_GetThisThreadState()


def release_ended_callback_threads() -> None:
    """Delete the kept thread states of callback threads that have ended (after a stream
    was closed: PortAudio joined its thread). A thread still alive keeps its state."""
    if not _KEEP_THREAD_STATES:
        return
    with _kept_lock:
        ended = [tid for tid in _kept_states if not os.path.exists(f"/proc/self/task/{tid}")]
        states = [_kept_states.pop(tid) for tid in ended]
    for state in states:
        _capi.PyThreadState_Clear(state)
        _capi.PyThreadState_Delete(state)


def period_frames(rate: int, ms: int) -> int:
    """Frames in a device period of ``ms`` at ``rate`` (at least 1)."""
    return max(1, rate * ms // 1000)


@dataclass
class OpenedStream:
    """What :meth:`SupervisedStream._open_blocking` returns."""

    pa: pyaudio.PyAudio
    stream: pyaudio.Stream
    device: DeviceInfo
    rate: int
    channels: int


class SupervisedStream(ABC):
    """Open a PortAudio stream, watch it, and reopen it with backoff when it fails.

    Failure means: the stream is no longer active (PortAudio ended it after a driver error)
    or no callback for ``stall_timeout`` seconds (a vanished or hung device). A failed stream
    is closed (in a worker thread) and reopened after ``backoff[i]`` seconds (the last value
    repeats). ``state`` changes are logged once per change ("<role> missing: reason" /
    "<role> back") and reported to ``on_state(state, reason)`` on the loop; a failure is
    reported right after the subclass's ``_on_lost`` hook, before the stream is closed.
    """

    kind: Kind

    def __init__(
        self,
        *,
        device: str | None,
        role: str,
        backoff: Sequence[float] = (0.5, 1.0, 2.0, 5.0, 10.0),
        stall_timeout: float = 2.0,
        logger: logging.Logger | None = None,
        on_state: Callable[[DeviceState, str], None] | None = None,
    ) -> None:
        if not backoff:
            raise ValueError("backoff must hold at least one delay")
        self.device_spec = device or "default"
        self.role = role
        self.backoff = tuple(float(b) for b in backoff)
        self.stall_timeout = stall_timeout
        self.log = logger or log
        self.on_state = on_state
        self.state = DeviceState.STOPPED
        self.last_error: str | None = None
        self.reopen_count = 0
        self.opened: OpenedStream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._stop_signal: asyncio.Future[None] | None = None
        self._first_attempt: asyncio.Future[None] | None = None
        self._last_callback = 0.0  # monotonic; written by the callback thread
        self._generation = 0  # bumps on every open; callbacks tag their data with it
        self._ever_opened = False

    # -- hooks for subclasses --

    @abstractmethod
    def _open_stream(self, pa: pyaudio.PyAudio, device: DeviceInfo, generation: int
                     ) -> tuple[pyaudio.Stream, int, int]:
        """Open (not start) the stream in a worker thread; return (stream, rate, channels).
        Raise DeviceError/OSError if the device cannot be opened in any usable format.
        Subclasses normally only list their formats and call :meth:`_open_first`."""

    def _open_first(
        self,
        pa: pyaudio.PyAudio,
        device: DeviceInfo,
        candidates: Iterable[tuple[int, int]],
        *,
        buffer_ms: int,
        callback: StreamCallback,
        purpose: str,
    ) -> tuple[pyaudio.Stream, int, int]:
        """Open (not start) a PCM16 stream of ``self.kind`` in the first ``(rate, channels)``
        of ``candidates``, in their order, that the device accepts; return (stream, rate,
        channels). Repeated candidates, a rate of 0 (an unknown native rate) and more
        channels than the device has are skipped. The device period is ``buffer_ms`` at the
        candidate's rate (:func:`period_frames`). Raises OSError naming every format tried
        (and ``purpose``, e.g. "capture") if none opens."""
        max_ch = max(1, device.max_input_channels if self.kind == "input"
                     else device.max_output_channels)
        errors: list[str] = []
        tried: list[tuple[int, int]] = []
        for rate, channels in candidates:
            if (rate, channels) in tried or not rate or channels > max_ch:
                continue
            tried.append((rate, channels))
            try:
                stream = pa.open(
                    format=pyaudio.paInt16,
                    channels=channels,
                    rate=rate,
                    frames_per_buffer=period_frames(rate, buffer_ms),
                    stream_callback=callback,
                    start=False,
                    # PyAudio takes the direction as keywords: input=True and
                    # input_device_index for a capture, output… for a playback.
                    **{self.kind: True, f"{self.kind}_device_index": device.index},
                )
            except (OSError, ValueError) as exc:
                errors.append(f"{rate} Hz/{channels} ch: {exc}")
                continue
            return stream, rate, channels
        raise OSError(f"cannot open {device.name!r} for {purpose}: " + "; ".join(errors))

    def _on_opened(self, opened: OpenedStream) -> None:  # noqa: B027 - optional hook
        """On the loop, after the stream started."""

    def _on_lost(self, reason: str) -> None:  # noqa: B027 - optional hook
        """On the loop, after a started stream failed or was stopped (before it is closed)."""

    # -- public --

    async def start(self, require_device: bool = False) -> None:
        """Start supervising; returns after the first open attempt. If the device is missing
        the stream keeps retrying in the background (``state`` is ``missing``); with
        ``require_device`` the first failure raises DeviceError instead (nothing is left
        running). Never blocks the loop."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._stop_signal = self._loop.create_future()  # done once _stopping is set
        self._first_attempt = self._loop.create_future()
        self._set_state(DeviceState.STARTING, "")
        self._task = asyncio.create_task(self._supervise(), name=f"{self.role}-supervisor")
        await asyncio.shield(self._first_attempt)
        if require_device and self.state is not DeviceState.OK:
            await self.aclose()
            raise DeviceError(self.last_error or f"{self.role} could not be opened")

    async def aclose(self) -> None:
        """Stop supervising and close the stream; idempotent. Bounded by the close timeout.
        (Capture also calls this ``stop()``; on Playback ``stop()`` is the flush.)"""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        if self._stop_signal is not None and not self._stop_signal.done():
            self._stop_signal.set_result(None)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._set_state(DeviceState.STOPPED, "")

    @property
    def device_name(self) -> str | None:
        return self.opened.device.name if self.opened else None

    # -- internals --

    def _set_state(self, state: DeviceState, reason: str) -> None:
        old, self.state = self.state, state
        if state is DeviceState.MISSING:
            self.last_error = reason
        if state is old:
            return
        if state is DeviceState.MISSING:
            self.log.warning("%s missing: %s", self.role, reason)
        elif state is DeviceState.OK and old is DeviceState.MISSING:
            self.log.warning("%s back: %s", self.role, reason)
        elif state is DeviceState.OK:
            self.log.info("%s open: %s", self.role, reason)
        else:
            self.log.debug("%s %s", self.role, state.value)
        if self.on_state is not None:
            try:
                self.on_state(state, reason)
            except Exception:  # a status hook must not kill the supervisor
                self.log.exception("%s on_state hook failed", self.role)

    def _open_blocking(self, generation: int) -> OpenedStream:
        pa = new_pyaudio()
        try:
            device = select_device(self.device_spec, self.kind, list_devices(pa))
            with pa_lock():
                # PortAudio 19.6 keeps the error of a failing open in a process-wide variable
                # that a running stream's callback thread overwrites, so a failed open can go
                # on without a PCM and abort the process (found by the soak run: a microphone
                # gone while the speaker runs killed the daemon within minutes of reopen
                # attempts). A PCM that alsa-lib cannot open is missing: PortAudio is spared.
                if not alsa_pcm_opens(device, self.kind):
                    raise DeviceError(f"{device.name!r} cannot be opened (gone or busy)")
                stream, rate, channels = self._open_stream(pa, device, generation)
                self._last_callback = time.monotonic()
                stream.start_stream()
            return OpenedStream(pa, stream, device, rate, channels)
        except BaseException:
            terminate_pyaudio(pa)
            raise

    @staticmethod
    def _close_blocking(opened: OpenedStream, stalled: bool = False) -> None:
        # close() aborts an active stream (ALSA snd_pcm_drop) and joins the callback thread.
        # PortAudio 19.6 cannot interrupt a thread stuck inside a hung driver, so for a
        # stalled stream the close may block until the driver returns: do it without the
        # global lock so that a hang cannot stop every other stream from (re)opening.
        try:
            if stalled:
                opened.stream.close()
            else:
                with pa_lock():
                    opened.stream.close()
        except Exception as exc:  # the device may already be gone
            log.debug("stream close failed: %s", exc)
        terminate_pyaudio(opened.pa)
        release_ended_callback_threads()

    def _settle_first_attempt(self) -> None:
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(None)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        # A wait on one future with a timeout: no task and no exception per call, as
        # wait_for(event.wait()) made (twice a second per stream, all day long).
        signal = self._stop_signal
        if signal is None or signal.done():
            return
        await asyncio.wait((signal,), timeout=seconds)

    async def _supervise(self) -> None:
        attempt = 0
        try:
            while not self._stopping.is_set():
                self._generation += 1
                generation = self._generation
                try:
                    opened = await run_blocking(
                        lambda g=generation: self._open_blocking(g),  # type: ignore[misc]
                        PA_CALL_TIMEOUT,
                        name=f"{self.role}-open",
                    )
                except (DeviceError, OSError, ValueError, TimeoutError) as exc:
                    reason = str(exc) or type(exc).__name__
                    if isinstance(exc, TimeoutError):
                        reason = f"opening the device did not finish within {PA_CALL_TIMEOUT}s"
                    if self.state is DeviceState.MISSING:
                        self.log.debug("%s still missing: %s", self.role, reason)
                    self._set_state(DeviceState.MISSING, reason)
                    self._settle_first_attempt()
                    delay = self.backoff[min(attempt, len(self.backoff) - 1)]
                    await self._sleep_unless_stopping(delay)
                    attempt += 1
                    continue
                if self._stopping.is_set():
                    await run_blocking(lambda o=opened: self._close_blocking(o), PA_CALL_TIMEOUT)
                    break
                attempt = 0
                if self._ever_opened:
                    self.reopen_count += 1
                self._ever_opened = True
                self.opened = opened
                self._on_opened(opened)
                self._set_state(
                    DeviceState.OK,
                    f"{opened.device.name!r} at {opened.rate} Hz, {opened.channels} ch",
                )
                self._settle_first_attempt()
                reason, stalled = await self._watch(opened)
                self._generation += 1  # late callbacks of this stream are now stale
                self._on_lost(reason)
                self.opened = None
                if not self._stopping.is_set():
                    # Said at once, before the close (which can take long for a hung stream):
                    # the on_state hook then runs right after _on_lost, before anything that
                    # _on_lost woke up (e.g. a playback drain waiter) gets to run.
                    self._set_state(DeviceState.MISSING, reason)
                try:
                    await run_blocking(
                        lambda o=opened, s=stalled: self._close_blocking(o, s),  # type: ignore[misc]
                        STOP_CLOSE_TIMEOUT if self._stopping.is_set() else PA_CALL_TIMEOUT,
                        name=f"{self.role}-close",
                    )
                except TimeoutError:
                    # The driver holds the callback thread; the stream and its PyAudio
                    # instance are abandoned (and PortAudio's device list goes stale until
                    # the process restarts). Reopening is still attempted.
                    self.log.error("%s: closing the hung stream did not finish; abandoned it",
                                   self.role)
        finally:
            self._settle_first_attempt()

    async def _watch(self, opened: OpenedStream) -> tuple[str, bool]:
        """Return why the stream must be closed (failure or stop) and whether it stalled."""
        interval = max(0.01, min(WATCH_S, self.stall_timeout / 4))
        while True:
            silent = time.monotonic() - self._last_callback
            stalled = silent > self.stall_timeout
            if self._stopping.is_set():
                # At a stop, a stream without a callback for a moment may be stuck in the
                # driver: close it without the global lock (see _close_blocking).
                return "stopped", silent > STOP_STALL_S
            try:
                active = opened.stream.is_active()
            except OSError as exc:
                return f"stream error: {exc}", stalled
            if not active:
                return "the stream stopped (device error or unplugged)", False
            if stalled:
                return f"no audio callback for {silent:.1f}s (device hung)", True
            # aclose() sets _stopping: the next check sees it at once instead of after the
            # interval.
            await self._sleep_unless_stopping(interval)
