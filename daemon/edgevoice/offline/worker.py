"""The recognisers in a child process, fed while the user speaks.

PocketSphinx holds the GIL while it decodes: a whole utterance decoded in a thread stalled
the daemon's event loop for as long as its longest call (~140 ms on an x86 core, about ten
times that on a Pi Zero 2 W), and all of the decoding waited for the end of speech. In a
child process it runs on another core, as the audio comes: at the end of speech only the
last frames and the searches' final pass remain (see :class:`Listening`).

Guarantees:

- :meth:`RecognizerProcess.open` returns once the recognisers are built in the child, or
  raises :class:`RecognizerError` saying why (the child's own error, its exit, the time
  bound);
- :meth:`RecognizerProcess.feed` and :meth:`RecognizerProcess.reset` never block the loop
  (the pipe's transport buffers; the daemon bounds an utterance);
- requests are answered in the order they were made, each exactly once: with the result, or
  :class:`RecognizerError` when the child failed, died or was closed (then every pending
  request fails at once and :attr:`RecognizerProcess.alive` is False);
- the child exits when its standard input closes (the daemon closed it, or died); no shell
  runs, nothing is passed on its command line, and of the daemon's environment it gets
  only :data:`CHILD_ENV`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import struct
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from edgevoice.config.tools import ToolSpec
from edgevoice.offline.results import Rejection, Result
from edgevoice.util import child_environ

if TYPE_CHECKING:  # the daemon's side never loads PocketSphinx
    from edgevoice.offline.recognizer import AnswerRecognizer, OfflineRecognizer

#: How long the child may take to start and build the recognisers (a Pi Zero 2 W builds
#: them in seconds).
OPEN_TIMEOUT_S = 60.0
#: How long a request may wait for its answer: a whole utterance of the daemon's longest
#: (10 s) decoded on a slow board, with room to spare.
REQUEST_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 2.0
#: All the child gets of the daemon's environment (no API key, no credentials directory).
CHILD_ENV = ("PYTHONPATH", "TMPDIR", "LANG", "LC_ALL")
#: Decoding waits for this much of an utterance, to normalise it with its cepstral mean.
#: Measured with both searches fed so (no second hearing), on the bench's car commands
#: (clean): with the mean of the first 0.7 s, 0.77 ran; with 1.0 s, 0.88, as decoded as a
#: whole (the endpointer's utterance starts 0.3 s before the speech).
CMN_WINDOW_S = 1.0
SAMPLE_RATE = 16000
_HEADER = struct.Struct("<I")
#: The largest message either side accepts (an utterance of the daemon's longest is 320 kB).
MAX_MESSAGE = 8 << 20


class RecognizerError(Exception):
    """The child could not answer (the message says why)."""


class Listening:
    """One utterance at a time, decoded as it is fed (the child's state; the benches use it
    in-process to measure the same decoding).

    Decoding starts once :data:`CMN_WINDOW_S` of audio came, normalised with the cepstral
    mean of all the audio so far (a running estimate from nothing misheard most commands);
    it then catches up and goes on as the audio comes. An utterance that ends sooner is
    decoded as a whole at its end.

    :meth:`look` recognises the audio so far and keeps it: when more audio follows (the
    user only paused), the utterance is decoded again from its start (with the mean of all
    of it so far), at once, and then on as it comes. :meth:`finish` and :meth:`answer` end
    the utterance; the next audio begins a new one. Each utterance starts with the front
    end afresh: a result depends on that utterance's audio alone."""

    def __init__(self, recognizer: OfflineRecognizer | None,
                 answers: AnswerRecognizer | None = None) -> None:
        self.recognizer = recognizer
        self.answers = answers
        self.audio = bytearray()
        self._looked: Result | None = None  # the look's result, while no audio followed
        self._decoding = False

    def reset(self) -> None:
        """Forget the utterance (the searches' unfinished one ends at the next start)."""
        self.audio = bytearray()
        self._looked = None
        self._decoding = False

    def feed(self, pcm: bytes) -> None:
        self.audio += pcm
        self._looked = None
        if self.recognizer is None:
            return
        if self._decoding:
            self.recognizer.feed(pcm)
        elif len(self.audio) >= CMN_WINDOW_S * 2 * SAMPLE_RATE:
            whole = bytes(self.audio)
            self.recognizer.start(fresh=True, cmn=self.recognizer.cepstral_mean(whole))
            self.recognizer.feed(whole)
            self._decoding = True

    def look(self) -> Result:
        """The audio so far; the utterance goes on."""
        if self.recognizer is None:
            return Rejection("no-recogniser")
        if self._looked is None:
            if self._decoding:
                self._looked = self.recognizer.finish()
            elif self.audio:  # shorter than the window: as a whole
                self._looked = self.recognizer.recognize(bytes(self.audio))
            else:
                self._looked = Rejection("no-speech")
            self._decoding = False
        return self._looked

    def finish(self) -> Result:
        """The utterance is over: what it was."""
        result = self.look()
        self.reset()
        return result

    def answer(self) -> str | None:
        """The utterance is over and answers a confirmation question: the answer's words or
        None (see :class:`AnswerRecognizer`)."""
        pcm = bytes(self.audio)
        self.reset()
        if self.answers is None or not pcm:
            return None
        return self.answers.recognize(pcm)


def _recognition_tools(tools: Sequence[ToolSpec]) -> list[ToolSpec]:
    """What the child needs of the tools: their sentences, slots and parameters (no actions:
    the child runs nothing)."""
    return [t.model_copy(update={"command": None, "gpio": None, "mqtt": None, "mixer": None})
            for t in tools if t.sentences]


class RecognizerProcess:
    """The child process (see the module docs). Build with :meth:`open`."""

    def __init__(self, proc: asyncio.subprocess.Process,
                 on_lost: Callable[[RecognizerProcess], None] | None = None) -> None:
        self._proc = proc
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._on_lost = on_lost
        self.alive = True
        self.why = ""  # why the child is gone

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    async def open(cls, tools: Sequence[ToolSpec], yes: Sequence[str] | None = None,
                   timeout_s: float = OPEN_TIMEOUT_S,
                   on_lost: Callable[[RecognizerProcess], None] | None = None,
                   ) -> RecognizerProcess:
        """Start the child and build the command recogniser of ``tools`` (and, with ``yes``,
        the answer recogniser of those affirmatives) in it. ``on_lost`` is called once, from
        the loop, if the child later goes away by itself (it died, was killed, failed a
        request's time bound or wrote garbage), not when it is closed."""
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edgevoice.offline.worker",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env=child_environ(CHILD_ENV))
        except OSError as exc:
            raise RecognizerError(f"the recogniser process could not start: {exc}") from None
        self = cls(proc, on_lost)
        self._reader = asyncio.create_task(self._read(), name="recogniser replies")
        try:
            await self._request("load", (_recognition_tools(tools),
                                         list(yes) if yes is not None else None), timeout_s)
        except BaseException:
            await self.close()
            raise
        return self

    def reset(self) -> None:
        """Forget the current utterance's audio."""
        self._send("reset", None)

    def feed(self, pcm: bytes) -> None:
        """More audio of the current utterance (16 kHz mono PCM16)."""
        if pcm:
            self._send("audio", pcm)

    async def look(self) -> Result:
        """The utterance so far (it goes on; see :meth:`Listening.look`)."""
        result: Result = await self._request("look", None)
        return result

    async def finish(self) -> Result:
        """The utterance is over: what it was."""
        result: Result = await self._request("finish", None)
        return result

    async def answer(self) -> str | None:
        """The utterance is over and answers a question: the words, or None."""
        text: str | None = await self._request("answer", None)
        return text

    async def close(self) -> None:
        """End the child (bounded: killed after :data:`CLOSE_TIMEOUT_S`); pending requests
        fail. Idempotent."""
        self._on_lost = None
        self._gone("the recogniser process was closed")
        if self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    # ------------------------------------------------------------------ internals

    def _send(self, op: str, payload: Any) -> None:
        stdin = self._proc.stdin
        if not self.alive or stdin is None or stdin.is_closing():
            return
        body = pickle.dumps((op, payload), pickle.HIGHEST_PROTOCOL)
        stdin.write(_HEADER.pack(len(body)) + body)

    async def _request(self, op: str, payload: Any,
                       timeout_s: float = REQUEST_TIMEOUT_S) -> Any:
        if not self.alive:
            raise RecognizerError(self.why)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        self._send(op, payload)
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            # The order of the replies is all that pairs them with requests: a late one
            # would answer the next request. The child is ended instead.
            self._gone(f"the recogniser took longer than {timeout_s:g} s")
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            raise RecognizerError(self.why) from None

    async def _read(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            while True:
                size = _HEADER.unpack(await stdout.readexactly(_HEADER.size))[0]
                if size > MAX_MESSAGE:
                    raise ValueError(f"a reply of {size} bytes")
                ok, value = pickle.loads(await stdout.readexactly(size))
                if not self._pending:
                    continue
                future = self._pending.popleft()
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(RecognizerError(value))
        except asyncio.IncompleteReadError:
            status = await self._proc.wait()
            self._gone(f"the recogniser process exited with status {status}")
        except (ValueError, pickle.UnpicklingError) as exc:
            self._gone(f"the recogniser process wrote an unreadable reply: {exc}")
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    def _gone(self, why: str) -> None:
        if self.alive:
            self.alive = False
            self.why = why
            if self._on_lost is not None:
                asyncio.get_running_loop().call_soon(self._on_lost, self)
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(RecognizerError(self.why))


# ---------------------------------------------------------------------- the child


def _read_message(stream: BinaryIO) -> tuple[str, Any] | None:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    size = _HEADER.unpack(head)[0]
    if size > MAX_MESSAGE:
        raise ValueError(f"a request of {size} bytes")
    body = stream.read(size)
    if len(body) < size:
        return None
    op, payload = pickle.loads(body)
    return op, payload


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """The child's loop: requests in order until ``requests`` ends. A request that fails
    (or audio that could not be decoded) is answered with the error, at the next request
    for audio; the loop goes on."""
    from edgevoice.offline.recognizer import AnswerRecognizer, OfflineRecognizer

    state = Listening(None)
    failed: str | None = None  # decoding the audio failed: the next request says so

    def reply(ok: bool, value: Any) -> None:
        body = pickle.dumps((ok, value), pickle.HIGHEST_PROTOCOL)
        replies.write(_HEADER.pack(len(body)) + body)
        replies.flush()

    while (message := _read_message(requests)) is not None:
        op, payload = message
        try:
            if op == "audio":
                state.feed(payload)
                continue
            if op == "reset":
                state.reset()
                failed = None
                continue
            if failed is not None and op != "load":
                state.reset()
                reply(False, failed)
                failed = None
                continue
            if op == "load":
                tools, yes = payload
                state = Listening(OfflineRecognizer(tools),
                                  AnswerRecognizer(yes) if yes is not None else None)
                reply(True, None)
            elif op == "look":
                reply(True, state.look())
            elif op == "finish":
                reply(True, state.finish())
            elif op == "answer":
                reply(True, state.answer())
            else:
                reply(False, f"unknown request {op!r}")
        except Exception as exc:  # one failed utterance, not the child
            state.reset()
            if op in ("audio", "reset"):
                failed = f"{type(exc).__name__}: {exc}"
            else:
                reply(False, f"{type(exc).__name__}: {exc}")


def main() -> None:
    # The daemon ends the child by closing its input (or the child sees the end of it when
    # the daemon died). A stop signal for the whole group (Ctrl-C in a terminal, systemd's
    # SIGTERM to the unit's processes) must not end it first: the daemon would take that
    # for a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The replies get a descriptor of their own: whatever a library prints goes to stderr
    # (the journal), never into the protocol.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
