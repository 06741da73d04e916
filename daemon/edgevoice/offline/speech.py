"""Speech said on the device: the offline answers, rendered by espeak-ng (:func:`espeak`,
which the simulator's reply voice uses too).

Guarantees:

- :meth:`LocalVoice.render` returns 24 kHz mono PCM16 or raises :class:`SpeechError` saying
  what went wrong (espeak-ng missing, failing, silent or too slow); it never blocks the loop
  (espeak-ng runs as a child process) and is bounded: at most :data:`MAX_TEXT` characters
  are said, the process gets :data:`TIMEOUT_S` and at most :data:`MAX_BYTES` of output.
- The text goes to espeak-ng on its standard input, never on its command line (a text that
  starts with ``-`` is no option), no shell runs, and of the daemon's environment espeak-ng
  gets only :data:`ESPEAK_ENV`.
- Underscores are read as spaces (an argument value such as ``rear_left`` in a reply).
- An unknown voice is no error: espeak-ng speaks with its default one.
- The last :data:`KEPT` renderings are kept: the same phrases recur ("Offline.", a tool's
  reply), and rendering costs a slow board more than playing.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
from collections import OrderedDict

from edgevoice.audio.convert import read_wav, resample
from edgevoice.util import child_environ

RATE = 24000
MAX_TEXT = 300
TIMEOUT_S = 5.0
MAX_BYTES = 4_000_000
KEPT = 16
#: All espeak-ng gets of the daemon's environment (no API key, no credentials directory).
ESPEAK_ENV = ("LANG", "LC_ALL", "ESPEAK_DATA_PATH")


class SpeechError(Exception):
    """The text could not be rendered (the message says why)."""


class LocalVoice:
    """espeak-ng with ``voice`` (an espeak-ng voice name, e.g. ``en-us``, ``en-gb+f3``)."""

    def __init__(self, voice: str = "en-us", program: str = "espeak-ng") -> None:
        self.voice = voice
        self.program = program
        self._kept: OrderedDict[str, bytes] = OrderedDict()

    async def render(self, text: str) -> bytes:
        """``text`` as 24 kHz mono PCM16 (see the module docs for the bounds)."""
        # Values like "rear_left" are said as words, not "underscore".
        text = " ".join(text.replace("_", " ").split())[:MAX_TEXT]
        if not text:
            return b""
        kept = self._kept.get(text)
        if kept is not None:
            self._kept.move_to_end(text)
            return kept
        pcm, rate = await espeak(text, self.voice, self.program)
        pcm = resample(pcm, rate, RATE)
        self._kept[text] = pcm
        while len(self._kept) > KEPT:
            self._kept.popitem(last=False)
        return pcm


async def espeak(text: str, voice: str = "en-us", program: str = "espeak-ng",
                 timeout_s: float = TIMEOUT_S) -> tuple[bytes, int]:
    """``text`` said by espeak-ng with ``voice``: mono PCM16 and its sample rate. The text
    goes on standard input and no shell runs; the process gets ``timeout_s`` (killed after,
    and when the caller is cancelled) and at most :data:`MAX_BYTES` of its output is read.
    Raises :class:`SpeechError` saying what went wrong (missing, failing, silent, too slow)."""
    path = shutil.which(program)
    if path is None:
        raise SpeechError(f"{program} is not installed (apt-get install espeak-ng)")
    try:
        proc = await asyncio.create_subprocess_exec(
            path, "--stdout", "--stdin", "-v", voice,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=child_environ(ESPEAK_ENV))
    except OSError as exc:
        raise SpeechError(f"{program} could not be started: {exc}") from None
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate(text.encode("utf-8"))
    except TimeoutError:
        raise SpeechError(f"{program} took longer than {timeout_s:g} s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        detail = err.decode("utf-8", "replace").strip().splitlines()
        raise SpeechError(f"{program} -v {voice} exited with status "
                          f"{proc.returncode}" + (f": {detail[-1]}" if detail else ""))
    try:
        pcm, rate = read_wav(io.BytesIO(out[:MAX_BYTES]))
    except (ValueError, EOFError) as exc:
        raise SpeechError(f"{program} wrote no usable audio: {exc}") from None
    if len(pcm) < 2:
        raise SpeechError(f"{program} said nothing")
    return pcm, rate
