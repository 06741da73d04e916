"""The Voice Live link: one logical conversation over a sequence of WebSocket connections.

:class:`VoiceLiveLink` is a thin asyncio driver around the sans-I/O
:class:`~edgevoice.link.protocol.VoiceLiveProtocol`, which keeps the conversation (handshake,
ordered outbox, event ids, turn audio and its bound, context replay, responses, exactly-once
function calls, the recycle and idle decisions; its docstring states those guarantees). This
module does the I/O: it connects (auth headers, URL, proxy, timeouts), backs off and honours
``Retry-After``, pings, feeds every frame read to the protocol and writes what it hands out,
times the handshake and runs the periodic close check, and says how the link is doing.

What it guarantees to the caller (the conversation core):

- **Typed input.** Server events and link events (:class:`LinkUp`, :class:`LinkDown`,
  :class:`TurnAbandoned`, :class:`ServiceError`) arrive in order in :attr:`events`; nothing
  the network sends raises into the caller.
- **Non-blocking output.** :meth:`send` and :meth:`append_audio` never block and never raise
  on network trouble: events go to the protocol's ordered outbox, which a writer task drains
  while the session is ready.
- **Reconnects by itself** with jittered exponential backoff (reset after a stable minute),
  honouring ``Retry-After`` on HTTP 429, and a long back-off with one clear log line on HTTP
  401/403. Keepalive pings detect a dead peer. Each handshake step (``session.created``, then
  ``session.updated``) must come within ``connect_timeout_s``. The connection is recycled
  before the service's session limit, only at a quiet moment (never mid-reply, never
  mid-turn), and closed when no longer wanted.
- **Status.** :attr:`state`, :attr:`status_text`, :attr:`last_reason` and :attr:`retry_at`
  say what the link does and why it is down; connection failures are logged once per streak.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from edgevoice import __version__
from edgevoice.config import VoiceLiveConfig, is_loopback_host
from edgevoice.link.auth import Auth, AuthError
from edgevoice.link.backoff import Backoff
from edgevoice.link.context import ConversationLog
from edgevoice.link.protocol import (
    Inbound,
    LinkDown,
    LinkState,
    LinkUp,
    ServiceError,
    TurnAbandoned,
    VoiceLiveProtocol,
    build_url,
    redact_url,
)
from edgevoice.wire import events as ev
from edgevoice.wire.session import RequestSession

__all__ = ["LinkDown", "LinkState", "LinkUp", "ServiceError", "TurnAbandoned",
           "VoiceLiveLink", "build_url", "redact_url"]

log = logging.getLogger("edgevoice.voicelive")

WATCH_S = 0.5  # how often a ready connection is checked for a recycle or an idle close


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


class VoiceLiveLink:
    """See the module docstring for the guarantees. Use from one event loop only."""

    def __init__(
        self,
        cfg: VoiceLiveConfig,
        session: RequestSession,
        auth: Auth,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
        connect_fn: Callable[..., Any] = connect,
    ) -> None:
        self.cfg = cfg
        self.auth = auth
        self.clock = clock
        self.backoff = backoff or Backoff(cfg.backoff_s, cfg.backoff_jitter, cfg.stable_after_s)
        self.protocol = VoiceLiveProtocol(cfg, session)
        self._connect_fn = connect_fn
        self.events: asyncio.Queue[Inbound] = asyncio.Queue()
        self.state = LinkState.IDLE
        self.status_text = "Voice Live: idle"
        #: Called with the clock time right after each audio append was written to the socket
        #: (latency figures: wake-to-send). Must not raise or block.
        self.on_audio_written: Callable[[float], None] | None = None
        self.stats = self.protocol.stats  # one dict: the protocol's counts and the driver's
        self.last_error: str | None = None
        self.last_reason: str | None = None  # short form of last_error, for the status
        self.retry_at: float | None = None

        self._ws: ClientConnection | None = None
        self._close_sent = False  # the protocol's close_reason was acted on
        self._write_error: Exception | None = None
        self._has_data = asyncio.Event()  # the protocol may have frames to hand out
        self._progress = asyncio.Event()  # the handshake moved on
        self._wanted = asyncio.Event()
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()
        self._failure_streak = 0
        self._auth_logged = False

    # ------------------------------------------------------------------ the protocol's state

    @property
    def session(self) -> RequestSession:
        """The session sent on each connect (client session updates merged in)."""
        return self.protocol.session

    @property
    def context(self) -> ConversationLog:
        return self.protocol.context

    @property
    def hold_recycle(self) -> bool:
        """The caller sets this while a turn is in progress: no recycle, no idle close."""
        return self.protocol.hold_recycle

    @hold_recycle.setter
    def hold_recycle(self, value: bool) -> None:
        self.protocol.hold_recycle = value

    # ------------------------------------------------------------------ lifecycle

    def start(self, wanted: bool = True) -> None:
        """Start the background task; with ``wanted`` it connects right away."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="voicelive")
        self.set_wanted(wanted)

    async def close(self) -> None:
        """Close the socket and stop reconnecting. Idempotent; returns within a few seconds."""
        self._stop.set()
        self._wanted.set()  # wake the loop so it sees the stop
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(1000, "client closing"), 3.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._set_state(LinkState.CLOSED, "Voice Live: closed")

    def set_wanted(self, wanted: bool) -> None:
        """Keep a connection (True) or let it go (False: closed at the next quiet moment)."""
        if wanted:
            self._wanted.set()
        else:
            self._wanted.clear()
        self.protocol.set_wanted(wanted)
        self._pump()

    @property
    def ready(self) -> bool:
        return self.state is LinkState.READY

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the session is ready. Raises TimeoutError."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    # ------------------------------------------------------------------ sending

    def send(self, event: ev.ClientEvent) -> str:
        """Queue a client event; returns its ``event_id``. Never blocks, never raises on the
        network (see :meth:`VoiceLiveProtocol.send` for what happens while the link is
        down)."""
        event_id = self.protocol.send(event, self.clock())
        self._pump()
        return event_id

    def drop_turn_audio(self) -> None:
        """Forget the current turn's audio (see :meth:`VoiceLiveProtocol.drop_turn_audio`)."""
        self.protocol.drop_turn_audio()

    def append_audio(self, pcm: bytes) -> None:
        """Queue one chunk of user audio (already in the session's input format). Raises
        ValueError only for a chunk above the service's 15 MiB per-append limit."""
        self.protocol.append_audio(pcm, self.clock())
        self._pump()

    def _pump(self) -> None:
        """Carries out what the protocol produced after an input: its events go to the
        queue, the writer is woken, a close it decided on is started."""
        for item in self.protocol.events_received():
            self.events.put_nowait(item)
        self._has_data.set()
        reason = self.protocol.close_reason
        if reason is not None and not self._close_sent and self._ws is not None:
            self._close_sent = True
            self._close_soon(reason)

    # ------------------------------------------------------------------ state

    def _set_state(self, state: LinkState, text: str) -> None:
        if state is not self.state or text != self.status_text:
            log.debug("link state %s: %s", state.value, text)
        self.state = state
        self.status_text = text
        if state is LinkState.READY:
            self._ready.set()
        else:
            self._ready.clear()

    def _close_soon(self, why: str) -> None:
        ws = self._ws
        if ws is not None:
            log.info("closing the Voice Live connection (%s)", why)
            task = asyncio.get_running_loop().create_task(ws.close(1000, why))
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)

    # ------------------------------------------------------------------ main loop

    async def _run(self) -> None:
        while not self._stop.is_set():
            if not self._wanted.is_set():
                self._set_state(LinkState.IDLE, "Voice Live: idle")
                await self._wanted.wait()
                continue
            delay = await self._connect_once()
            if self._stop.is_set():
                break
            if delay is None:
                continue  # recycle or idle close: reconnect only when wanted
            self.retry_at = self.clock() + delay
            if self.state is not LinkState.AUTH_FAILED:
                self._set_state(LinkState.BACKOFF, f"reconnecting in {delay:.0f} s"
                                f" ({self.last_reason or 'disconnected'})")
            self.events.put_nowait(LinkDown(self.last_error or "disconnected", delay, self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            self.retry_at = None

    def _fail(self, message: str, reason: str, *, level: int = logging.WARNING) -> None:
        """Log a connection failure once per streak (then at debug) — no log flood.
        ``reason`` is the short form for the status (no URL)."""
        self.stats["failures"] += 1
        self._failure_streak += 1
        self.last_error = message
        self.last_reason = reason
        log.log(level if self._failure_streak == 1 else logging.DEBUG, "%s", message)

    async def _connect_once(self) -> float | None:
        """One connection attempt and, if it succeeds, its whole life. Returns the delay
        before the next attempt, or None to go on at once (recycle / not wanted)."""
        self._set_state(LinkState.CONNECTING, "Voice Live: connecting")
        try:
            headers = await self.auth.headers()
            agent_token = None
            if self.cfg.agent is not None:
                agent_token = (await self.auth.token(self.cfg.agent.access_token_scope)).reveal()
        except AuthError as exc:
            return self._auth_failed(str(exc))
        url = build_url(self.cfg, agent_token)
        host = urlsplit(url).hostname or ""
        try:
            ws = await self._connect_fn(
                url,
                additional_headers={**headers, "x-ms-client-request-id": str(uuid.uuid4())},
                user_agent_header=f"edgevoice/{__version__} websockets/{websockets.__version__}",
                open_timeout=self.cfg.connect_timeout_s,
                ping_interval=self.cfg.ping_interval_s,
                ping_timeout=self.cfg.ping_timeout_s,
                close_timeout=3.0,
                max_size=self.cfg.max_message_mib * 1024 * 1024,
                proxy=None if is_loopback_host(host) else True,
                compression=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                return self._auth_failed(
                    f"Voice Live: authentication failed (HTTP {status}) at {redact_url(url)}: "
                    "check the API key, or the Entra role assignment (Cognitive Services User)",
                    f"authentication failed, HTTP {status}")
            delay = self.backoff.next_delay()
            if status == 429:
                retry = _retry_after(exc.response.headers)
                delay = max(delay, retry or 0.0)
                self._fail(f"Voice Live: throttled (HTTP 429), retrying in {delay:.1f} s",
                           "throttled, HTTP 429")
            else:
                self._fail(f"Voice Live: HTTP {status} on connect to {redact_url(url)}",
                           f"HTTP {status} on connect")
            return delay
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            what = "connection refused" if isinstance(exc, ConnectionRefusedError) \
                else "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            self._fail(f"Voice Live: cannot connect to {redact_url(url)}: "
                       f"{type(exc).__name__}: {exc}", f"cannot connect: {what}")
            return self.backoff.next_delay()
        return await self._serve(ws)

    def _auth_failed(self, message: str, reason: str = "authentication failed") -> float:
        self.stats["failures"] += 1
        self.last_error = message
        self.last_reason = reason
        if not self._auth_logged:
            log.error("%s", message)
            self._auth_logged = True
        else:
            log.debug("%s", message)
        self._set_state(LinkState.AUTH_FAILED, "Voice Live: authentication failed")
        return self.cfg.auth_failure_backoff_s

    async def _serve(self, ws: ClientConnection) -> float | None:
        """One open connection's life: handshake, then reading and writing until it ends.
        Returns the delay before the next attempt, or None after a close the protocol asked
        for (recycle, idle) or on stop."""
        self._ws = ws
        self._close_sent = False
        self._write_error = None
        self._set_state(LinkState.CONFIGURING, "Voice Live: configuring the session")
        self.protocol.connection_opened()
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._reader(ws), name="voicelive-reader")
        writer = loop.create_task(self._writer(ws), name="voicelive-writer")
        watcher: asyncio.Task[None] | None = None
        try:
            if not await self._handshake(reader, writer):
                return self.backoff.next_delay()
            watcher = loop.create_task(self._watch(), name="voicelive-watch")
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (writer, watcher, reader):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 3.0)
            self._ws = None
            self._on_disconnect()
        code, reason = ws.close_code, ws.close_reason
        if self._stop.is_set():
            return None
        if self._close_sent:
            self.stats["recycles"] += 1
            return None
        sent = ws.protocol.close_sent
        if ws.protocol.close_rcvd is None and sent is not None and sent.code != 1000:
            # This side gave up on the peer (no pong within ping_timeout_s, a frame over
            # max_size): the close code it is left with, 1006, would hide why.
            self._fail(f"Voice Live: connection failed: {sent.reason} (code {sent.code})",
                       f"connection lost ({sent.reason})")
            return self.backoff.next_delay()
        self._fail(f"Voice Live: connection closed (code {code}{': ' + reason if reason else ''})",
                   f"connection lost (code {code})")
        return self.backoff.next_delay()

    def _on_disconnect(self) -> None:
        now = self.clock()
        self.backoff.disconnected(now)
        self._ready.clear()
        self.protocol.connection_closed(now)
        self._pump()

    async def _handshake(
        self, reader: asyncio.Task[None], writer: asyncio.Task[None]
    ) -> bool:
        """Waits for each handshake step the protocol awaits, ``connect_timeout_s`` each.
        False (with the reason logged) on a timeout or a lost connection."""
        timeout = self.cfg.connect_timeout_s
        loop = asyncio.get_running_loop()
        while (name := self.protocol.awaiting) is not None:
            self._progress.clear()
            progress = loop.create_task(self._progress.wait())
            try:
                done, _ = await asyncio.wait({progress, reader, writer}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                progress.cancel()
            if progress in done:
                continue
            if writer in done and self._write_error is not None:
                self._fail(f"Voice Live: connection lost while configuring: {self._write_error}",
                           "connection lost while configuring")
                return False
            why = f"connection closed before {name}" if done \
                else f"no {name} from the server in {timeout:g} s"
            self._fail(f"Voice Live: {why}", why)
            return False
        return self.protocol.ready

    def _session_ready(self) -> None:
        """The protocol just became ready (its LinkUp not yet in the queue)."""
        self.backoff.connected(self.clock())
        self._failure_streak = 0
        self._auth_logged = False
        self.last_error = None
        self.last_reason = None
        self._set_state(LinkState.READY, "Voice Live: connected")

    async def _writer(self, ws: ClientConnection) -> None:
        """Writes what the protocol hands out, in order, while the connection lives."""
        try:
            while True:
                frames = self.protocol.data_to_send()
                if not frames:
                    self._has_data.clear()
                    await self._has_data.wait()
                    continue
                for frame in frames:
                    await ws.send(frame.text)
                    if frame.audio and self.on_audio_written is not None:
                        self.on_audio_written(self.clock())
        except (ConnectionClosed, OSError) as exc:
            # What was handed out and not written is covered: turn audio is kept for a
            # resend, the replay and the next handshake carry the rest.
            self._write_error = exc

    async def _watch(self) -> None:
        """Asks the protocol, every :data:`WATCH_S`, whether to recycle or close the
        connection; stops once it asked."""
        while self.protocol.close_reason is None:
            await asyncio.sleep(WATCH_S)
            self.protocol.tick(self.clock())
            self._pump()

    # ------------------------------------------------------------------ receiving

    async def _reader(self, ws: ClientConnection) -> None:
        """Feeds every frame read to the protocol."""
        try:
            async for frame in ws:
                self._receive(frame)
        except ConnectionClosed:
            pass

    def _receive(self, frame: str | bytes) -> None:
        awaiting = self.protocol.awaiting
        self.protocol.receive_text(frame, self.clock())
        if self.protocol.awaiting != awaiting:
            self._progress.set()
        if self.protocol.ready and self.state is not LinkState.READY:
            # Before its LinkUp reaches the queue: the caller sees the link connected.
            self._session_ready()
        self._pump()
