"""Virtual ALSA devices without hardware: ``file``-plugin PCMs in a per-use ALSA config.

:class:`VirtualAlsa` writes an ALSA config holding capture PCMs (reading raw S16_LE from a file
or FIFO) and playback PCMs (writing raw S16_LE to a file or FIFO), optionally an ``asym``
``default`` over ``plug`` wrappers, and returns the environment that makes ALSA load it::

    va = VirtualAlsa(tmpdir).capture("mic", "mic.raw").playback("speaker", "out.raw")
    va.default(capture="mic", playback="speaker")
    os.environ.update(va.env())       # or: with environment(va.env()): ...

:class:`FifoSource` and :class:`FifoSink` pace a FIFO in real time (or a multiple of it), so a
virtual microphone delivers audio at the device clock and a virtual speaker consumes it at
the device clock. The daemon demo and the tests both use them.

How ALSA picks the config up (measured with alsa-lib 1.2.8, PortAudio 19.6):

* ALSA re-reads its configuration whenever ``ALSA_CONFIG_PATH`` or the mtime/inode of a listed
  file changed, at the next ``snd_pcm_open``. So in one process, changing the variable (or
  rewriting the file: :meth:`VirtualAlsa.write` renames atomically, which gives a new inode)
  takes effect for the next ``PyAudio()``.
* PortAudio enumerates devices only when its init count goes from 0 to 1; while any other
  ``PyAudio`` instance in the process is alive, a new one sees the old device list. Opening a
  stream still opens the ALSA PCM by name, so a PCM that was listed, vanished and came back
  opens fine; a PCM that was not listed at enumeration time is invisible until every
  instance has been terminated.

Traps:

* The ``file`` PCMs are not paced: a capture reads 2 s of a regular file in milliseconds and
  then repeats its last buffer forever; a playback writes silence to a regular file as fast as
  the CPU allows (the file grows without bound). Use FIFOs with :class:`FifoSource` /
  :class:`FifoSink` for anything that runs longer than a moment or measures time.
* PortAudio opens every listed PCM while enumerating; a FIFO with no peer makes that open (and
  so ``PyAudio()``) block forever. Create the FIFO and its :class:`FifoSource` /
  :class:`FifoSink` (which hold it open read-write) *before* the first ``PyAudio()``, and keep
  FIFO PCMs out of configs whose FIFOs are not being served.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevoice.audio.convert import Resampler

#: Standard top-level ALSA configuration that every per-use config is layered over.
SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"

_F_SETPIPE_SZ = 1031  # Linux fcntl; not exported by Python 3.11's fcntl module


@dataclass(frozen=True)
class VirtualPcm:
    """One ``file``-plugin PCM: ``infile`` is read on capture, ``outfile`` written on playback."""

    name: str
    infile: Path | None = None
    outfile: Path | None = None


def _quote(value: str | Path) -> str:
    text = str(value)
    if '"' in text or "\n" in text:
        raise ValueError(f"ALSA config value must not contain quotes or newlines: {text!r}")
    return f'"{text}"'


class VirtualAlsa:
    """Builder for a per-use ALSA config of ``file``-plugin PCMs.

    Methods return ``self`` so calls chain; nothing touches the disk until :meth:`write`
    (:meth:`env` writes first). Paths are made absolute.
    """

    def __init__(self, directory: str | Path, filename: str = "asound.conf") -> None:
        self.directory = Path(directory).absolute()
        self.path = self.directory / filename
        self._pcms: dict[str, VirtualPcm] = {}
        self._default: tuple[str | None, str | None] | None = None

    def capture(self, name: str, infile: str | Path) -> VirtualAlsa:
        """Add a PCM whose capture reads raw S16_LE from ``infile`` (at the rate/channels the
        stream is opened with). The file must exist when the PCM is opened (and PortAudio
        opens every listed PCM when it enumerates)."""
        self._pcms[name] = VirtualPcm(name, infile=Path(infile).absolute())
        return self

    def playback(self, name: str, outfile: str | Path) -> VirtualAlsa:
        """Add a PCM whose playback writes raw S16_LE to ``outfile``."""
        self._pcms[name] = VirtualPcm(name, outfile=Path(outfile).absolute())
        return self

    def duplex(self, name: str, infile: str | Path, outfile: str | Path) -> VirtualAlsa:
        """Add a PCM that reads ``infile`` on capture and writes ``outfile`` on playback."""
        self._pcms[name] = VirtualPcm(name, Path(infile).absolute(), Path(outfile).absolute())
        return self

    def remove(self, name: str) -> VirtualAlsa:
        """Drop a PCM (a "vanished" device after the next :meth:`write`)."""
        self._pcms.pop(name, None)
        if self._default and name in self._default:
            self._default = None
        return self

    def default(self, capture: str | None = None, playback: str | None = None) -> VirtualAlsa:
        """Make ``default`` an ``asym`` PCM over ``plug`` wrappers of the named PCMs, so that
        ``default`` opens at any rate/channel count and ALSA converts."""
        for name in (capture, playback):
            if name is not None and name not in self._pcms:
                raise KeyError(f"no virtual PCM named {name!r}")
        self._default = (capture, playback)
        return self

    def render(self) -> str:
        """The config text."""
        lines = ["# written by edgevoice.devkit.virtual"]
        for pcm in self._pcms.values():
            out = pcm.outfile if pcm.outfile is not None else "/dev/null"
            body = f'type file slave.pcm "null" file {_quote(out)} format "raw"'
            if pcm.infile is not None:
                body += f" infile {_quote(pcm.infile)}"
            lines.append(f"pcm.{pcm.name} {{ {body} }}")
        if self._default is not None:
            cap, play = self._default
            parts = ["type asym"]
            if play is not None:
                parts.append(f'playback.pcm {{ type plug slave.pcm "{play}" }}')
            if cap is not None:
                parts.append(f'capture.pcm {{ type plug slave.pcm "{cap}" }}')
            lines.append("pcm.!default { " + " ".join(parts) + " }")
        return "\n".join(lines) + "\n"

    def write(self) -> Path:
        """Write the config atomically (temp file + rename: a new inode, so ALSA notices the
        change even within the same mtime second) and return its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(self.render())
        os.replace(tmp, self.path)
        return self.path

    def env(self) -> dict[str, str]:
        """Write the config and return the variables that make ALSA (and PortAudio) use it."""
        self.write()
        return alsa_env(self.path)


def alsa_env(config: Path) -> dict[str, str]:
    """The variables that make ALSA (and PortAudio) load ``config`` over the system config.
    ``JACK_NO_START_SERVER`` stops PortAudio's JACK probe from spawning a server."""
    return {"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{config}", "JACK_NO_START_SERVER": "1"}


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block; restore what was there afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def make_fifo(path: str | Path) -> Path:
    """Create a FIFO at ``path`` (replacing a stale file) and return its absolute path."""
    p = Path(path).absolute()
    with contextlib.suppress(FileNotFoundError):
        p.unlink()
    os.mkfifo(p)
    return p


def _open_fifo(path: Path, pipe_bytes: int) -> int:
    # O_RDWR: the open never blocks and the FIFO always has both a reader and a writer, so
    # neither ALSA's open nor our own reads/writes see EOF/EPIPE when the peer comes and goes.
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, pipe_bytes)  # a small pipe keeps the pacing tight
    return fd


class FifoSource:
    """Virtual microphone clock: writes queued PCM into a FIFO at ``speed`` × real time.

    While nothing is queued it writes silence (a real microphone never stops delivering),
    unless :meth:`pause` was called: then it writes nothing, so the capture stalls as a hung
    device would. The FIFO is opened (read-write, so ALSA's open never blocks) in the
    constructor: create the source before ``PyAudio()``. All methods are thread-safe.
    """

    def __init__(
        self,
        path: str | Path,
        rate: int = 16000,
        channels: int = 1,
        *,
        chunk_ms: int = 20,
        speed: float = 1.0,
        idle_silence: bool = True,
        create: bool = True,
        mix: Callable[[int], bytes] | None = None,
    ) -> None:
        """``mix(nbytes)``, if given, returns ``nbytes`` of audio added (saturating) to every
        chunk written, queued or silence — e.g. an :class:`EchoPath`."""
        self.path = make_fifo(path) if create else Path(path).absolute()
        self._mix = mix
        self.bytes_per_second = rate * channels * 2
        self._chunk = max(2 * channels, self.bytes_per_second * chunk_ms // 1000)
        self._chunk -= self._chunk % (2 * channels)
        self._period = chunk_ms / 1000 / speed
        self._idle_silence = idle_silence
        self._queue: deque[bytes] = deque()
        self._pending = b""
        self._cond = threading.Condition()
        self._paused = False
        self._closed = False
        self.written = 0  #: bytes of queued audio written so far (silence not counted)
        self._fd = _open_fifo(self.path, max(4096, 2 * self._chunk))
        self._thread = threading.Thread(target=self._run, name="fifo-source", daemon=True)
        self._thread.start()

    def feed(self, pcm: bytes) -> None:
        """Queue audio to be written after what is already queued."""
        with self._cond:
            self._queue.append(bytes(pcm))
            self._cond.notify_all()

    def pause(self) -> None:
        """Stop writing anything (a stalled device)."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def discard_queued(self) -> None:
        """Empty the FIFO of what was already written but not read yet (with :meth:`pause`: a
        device that delivers nothing at all, not even the pipe's ~128 ms of silence)."""
        for _ in range(64):  # a pipe buffer is a few of these reads at most
            try:
                if not os.read(self._fd, 65536):
                    return
            except BlockingIOError:
                return

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(5)
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def _next_chunk(self) -> tuple[bytes, bool]:
        with self._cond:
            while self._paused and not self._closed:
                self._cond.wait(0.05)
            data = self._pending
            while len(data) < self._chunk and self._queue:
                data += self._queue.popleft()
            self._pending = data[self._chunk :]
            data = data[: self._chunk]
        if data:
            return self._mixed(data + bytes(self._chunk - len(data))), True
        if self._idle_silence:
            return self._mixed(bytes(self._chunk)), False
        return b"", False

    def _mixed(self, data: bytes) -> bytes:
        if self._mix is None:
            return data
        extra = self._mix(len(data))
        mixed = np.frombuffer(data, "<i2").astype(np.int32) + np.frombuffer(extra, "<i2")
        return np.clip(mixed, -32768, 32767).astype("<i2").tobytes()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._closed:
            data, real = self._next_chunk()
            if self._closed:
                break
            view = memoryview(data)
            while view and not self._closed:
                try:
                    n = os.write(self._fd, view)
                    view = view[n:]
                except BlockingIOError:
                    select.select([], [self._fd], [], 0.05)
            if real:
                with self._cond:
                    self.written += len(data)
            next_at += self._period
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.5:
                next_at = time.monotonic()  # we fell far behind (paused): do not burst


class FifoSink:
    """Virtual speaker clock: drains a FIFO at ``speed`` × real time (``speed=0``: as fast
    as it comes) and keeps what it read.

    Reading at the device rate makes the writer (PortAudio's thread inside ALSA's ``file``
    plugin) block when the pipe is full, so playback callbacks come once per period as on a
    real card. Create it before ``PyAudio()``; all methods are thread-safe.
    """

    def __init__(
        self,
        path: str | Path,
        rate: int = 24000,
        channels: int = 1,
        *,
        chunk_ms: int = 5,
        speed: float = 1.0,
        pipe_bytes: int = 4096,
        create: bool = True,
        on_read: Callable[[bytes], None] | None = None,
        keep_bytes: int | None = None,
    ) -> None:
        """``on_read(chunk)``, if given, sees every chunk read, on the sink's thread.
        ``keep_bytes`` bounds what :meth:`data` keeps to the last that many bytes (None: all
        of it), so a sink that runs for hours holds a bounded amount of memory."""
        self.path = make_fifo(path) if create else Path(path).absolute()
        self._on_read = on_read
        self._keep = keep_bytes
        self.bytes_per_second = rate * channels * 2
        self._frame = 2 * channels
        self._speed = speed
        self._tick = chunk_ms / 1000
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._unpaced = threading.Event()
        self._fd = _open_fifo(self.path, pipe_bytes)
        self._thread = threading.Thread(target=self._run, name="fifo-sink", daemon=True)
        self._thread.start()

    def data(self) -> bytes:
        """Everything read so far (the last ``keep_bytes`` of it, when bounded)."""
        with self._lock:
            return bytes(self._buf)

    def __len__(self) -> int:
        with self._lock:
            return len(self._buf)

    def close(self, drain: float = 0.2) -> bytes:
        """Read what is left in the pipe without pacing for ``drain`` seconds, stop, close
        the FIFO and return everything read. Closing drops the last reader: a writer then gets
        EPIPE, which ALSA reports as a stream error (how tests unplug a device)."""
        self._unpaced.set()
        time.sleep(drain)
        self._closed.set()
        self._thread.join(5)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        return self.data()

    def _run(self) -> None:
        start = time.monotonic()
        consumed = 0
        max_credit = int(0.05 * self.bytes_per_second * self._speed)
        while not self._closed.is_set():
            due = int((time.monotonic() - start) * self.bytes_per_second * self._speed)
            unpaced = self._unpaced.is_set() or self._speed <= 0
            allowed = (1 << 20) if unpaced else due - consumed
            allowed -= allowed % self._frame
            if allowed > 0:
                try:
                    chunk = os.read(self._fd, allowed)
                except BlockingIOError:
                    chunk = b""
                except OSError as exc:  # pragma: no cover - only on a broken fd
                    if exc.errno == errno.EBADF:
                        return
                    raise
                if chunk:
                    consumed += len(chunk)
                    with self._lock:
                        self._buf += chunk
                        if self._keep is not None and len(self._buf) > self._keep:
                            # Deleting from the front of a bytearray is amortised O(1).
                            del self._buf[: len(self._buf) - self._keep]
                    if self._on_read is not None:
                        self._on_read(chunk)
                    continue
                # Empty pipe: the writer is behind or gone. Bank at most ~50 ms of read
                # credit so a writer that comes back is paced, not drained in a burst.
                consumed = max(consumed, due - max_credit)
            self._closed.wait(self._tick)


class EchoPath:
    """The room between a virtual speaker and a virtual microphone: what the speaker plays
    (fed to :meth:`heard`, e.g. as a :class:`FifoSink` ``on_read`` hook) comes back in the
    microphone (taken by :meth:`take`, e.g. as a :class:`FifoSource` ``mix`` hook) ``gain_db``
    quieter and ``delay_ms`` late, resampled to the microphone's rate. Thread-safe; holds at
    most ``max_s`` seconds (a microphone that stops taking does not grow it without bound)."""

    def __init__(self, speaker_rate: int = 24000, mic_rate: int = 16000, *,
                 gain_db: float = -12.0, delay_ms: float = 60.0, max_s: float = 5.0) -> None:
        self.gain = 10 ** (gain_db / 20)
        self._resampler = Resampler(speaker_rate, mic_rate)
        self._buf = bytearray(int(mic_rate * delay_ms / 1000) * 2)
        self._max = int(mic_rate * max_s) * 2
        self._lock = threading.Lock()

    def heard(self, pcm: bytes) -> None:
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        scaled = np.frombuffer(self._resampler.process(pcm), "<i2").astype(np.float32) * self.gain
        with self._lock:
            self._buf += scaled.astype("<i2").tobytes()
            if len(self._buf) > self._max:
                del self._buf[: len(self._buf) - self._max]

    def take(self, nbytes: int) -> bytes:
        with self._lock:
            out = bytes(self._buf[:nbytes])
            del self._buf[:nbytes]
        return out + bytes(nbytes - len(out))
