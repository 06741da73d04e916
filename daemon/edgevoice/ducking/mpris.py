"""The ``mpris`` backend: pause every MPRIS media player that is playing, and resume exactly
those afterwards.

How it behaves:

- **Only what was playing.** On duck, every bus name ``org.mpris.MediaPlayer2.*`` is asked
  for its ``PlaybackStatus``; those that answer ``Playing`` get ``Pause``. A player that was
  paused or stopped before is not touched, on duck or on restore.
- **Exactly those, by connection.** A paused player is remembered by its unique connection
  name (``:1.42``), so restore talks to the very process that was paused; a player that quit
  meanwhile (and another that took over its name) is skipped.
- **The user wins.** On restore, a remembered player is only sent ``Play`` while it still
  reports ``Paused``: one the user stopped or started again meanwhile is left as it is.
- **Never stuck on one player.** Players are asked concurrently, each bounded by
  :data:`PLAYER_SHARE` of the ducker's timeout (the rest is for listing them); one that
  hangs or errs is logged and the others go on.
- A player that starts playing while ducked is not paused (MPRIS has no "new player" hook
  worth the extra watcher; the next duck catches it).

The D-Bus connection (dbus-fast, asyncio) is made on the first duck and kept; a connection
that died (the bus restarted) is made again. The bus is the session bus (``$DBUS_SESSION_BUS_
ADDRESS``), the system bus, or an explicit ``address``. The last-resort restore
(:meth:`~edgevoice.ducking.base.BaseDucker.restore_sync`, used at SIGTERM and exit) opens
its own connection on its own event loop in the helper thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Literal

from edgevoice.ducking.base import DEFAULT_TIMEOUT, BaseDucker, describe

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus

log = logging.getLogger("edgevoice.ducking")

MPRIS_PREFIX = "org.mpris.MediaPlayer2."
MPRIS_PATH = "/org/mpris/MediaPlayer2"
PLAYER_IFACE = "org.mpris.MediaPlayer2.Player"
_DBUS = "org.freedesktop.DBus"
_PROPS = "org.freedesktop.DBus.Properties"
#: The part of the timeout one player may take, so one that hangs is reported by name while
#: the whole call still ends in time.
PLAYER_SHARE = 0.75

Bus = Literal["session", "system"]


class MprisError(Exception):
    """A D-Bus call answered with an error (its D-Bus error name and text)."""


class MprisDucker(BaseDucker):
    """Pause playing MPRIS players and resume them (see module docs)."""

    backend = "mpris"

    def __init__(
        self,
        *,
        bus: Bus = "session",
        address: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """``bus``: ``session`` or ``system``; ``address``: a D-Bus address
        (``unix:path=/run/…``) that overrides the bus's usual lookup."""
        super().__init__(timeout=timeout)
        if bus not in ("session", "system"):
            raise ValueError(f"ducking (mpris): bus must be \"session\" or \"system\", "
                             f"got {bus!r}")
        try:
            import dbus_fast.aio  # noqa: F401 - here so other backends need no dbus-fast
        except ImportError as exc:
            raise RuntimeError(f"ducking (mpris): dbus-fast is not usable: "
                               f"{describe(exc)}") from exc
        self.bus = bus
        self.address = address
        # unique connection name -> the player's well-known name (for the log)
        self._paused: dict[str, str] = {}
        self._paused_lock = threading.Lock()  # the loop and restore_sync's thread share it
        self._conn: MessageBus | None = None  # a dbus_fast.aio.MessageBus, on the loop only

    @property
    def paused_players(self) -> list[str]:
        """The well-known names of the players paused by us and not resumed yet."""
        with self._paused_lock:
            return sorted(self._paused.values())

    # -- async side (event loop) ---------------------------------------------------------

    async def _duck(self) -> None:
        conn = await self._connection()
        names = await self._players(conn)
        results = await asyncio.gather(
            *(self._per_player(self._pause_if_playing(conn, n)) for n in names),
            return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("ducking (mpris): pausing %s failed: %s", name,
                            _reason(result, self._player_timeout))

    async def _unduck(self) -> None:
        if self._paused:
            await self._resume_all(await self._connection())

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()

    async def _connection(self) -> MessageBus:
        if self._conn is None or not self._conn.connected:
            self._release()
            self._conn = await self._connect()
        return self._conn

    async def _connect(self) -> MessageBus:
        from dbus_fast import BusType
        from dbus_fast.aio import MessageBus

        bus_type = BusType.SYSTEM if self.bus == "system" else BusType.SESSION
        return await MessageBus(bus_address=self.address, bus_type=bus_type).connect()

    @property
    def _player_timeout(self) -> float:
        return self.timeout * PLAYER_SHARE

    async def _per_player(self, step: Awaitable[None]) -> None:
        async with asyncio.timeout(self._player_timeout):
            await step

    async def _call(self, conn: MessageBus, destination: str, path: str, interface: str,
                    member: str, signature: str = "", body: list[object] | None = None
                    ) -> list[object]:
        """One method call; MprisError for an error reply. (The callers bound the time.)"""
        from dbus_fast import Message, MessageType

        message = Message(destination=destination, path=path, interface=interface,
                          member=member, signature=signature, body=body or [])
        reply = await conn.call(message)
        if reply is None or reply.message_type == MessageType.ERROR:
            detail = reply.body[0] if reply is not None and reply.body else ""
            raise MprisError(f"{reply.error_name if reply else 'no reply'}: {detail}".strip())
        return list(reply.body)

    async def _players(self, conn: MessageBus) -> list[str]:
        (names,) = await self._call(conn, _DBUS, "/org/freedesktop/DBus", _DBUS, "ListNames")
        return sorted(n for n in names if isinstance(n, str) and n.startswith(MPRIS_PREFIX))

    async def _status(self, conn: MessageBus, destination: str) -> str:
        (value,) = await self._call(conn, destination, MPRIS_PATH, _PROPS, "Get", "ss",
                                    [PLAYER_IFACE, "PlaybackStatus"])
        return str(getattr(value, "value", value))

    async def _pause_if_playing(self, conn: MessageBus, name: str) -> None:
        (owner,) = await self._call(conn, _DBUS, "/org/freedesktop/DBus", _DBUS,
                                    "GetNameOwner", "s", [name])
        owner = str(owner)
        with self._paused_lock:
            if owner in self._paused:
                return
        if await self._status(conn, owner) != "Playing":
            return
        # Remembered before the call: a Pause that times out may still have happened; one
        # the player refused (an error reply) did not.
        with self._paused_lock:
            self._paused[owner] = name
        try:
            await self._call(conn, owner, MPRIS_PATH, PLAYER_IFACE, "Pause")
        except MprisError:
            self._forget(owner)
            raise
        log.debug("ducking (mpris): paused %s (%s)", name, owner)

    async def _resume_all(self, conn: MessageBus) -> None:
        """Resume every remembered player; raise if any could not be asked (those stay
        remembered for a retry)."""
        with self._paused_lock:
            pending = dict(self._paused)
        owners = list(pending)
        results = await asyncio.gather(
            *(self._per_player(self._resume(conn, o, pending[o])) for o in owners),
            return_exceptions=True)
        failed = [f"{pending[o]}: {_reason(r, self._player_timeout)}"
                  for o, r in zip(owners, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            raise MprisError("; ".join(failed))

    async def _resume(self, conn: MessageBus, owner: str, name: str) -> None:
        try:
            status = await self._status(conn, owner)
        except MprisError as exc:
            if "ServiceUnknown" in str(exc) or "NameHasNoOwner" in str(exc):
                log.debug("ducking (mpris): %s (%s) quit while paused", name, owner)
                self._forget(owner)
                return
            raise
        if status == "Paused":
            await self._call(conn, owner, MPRIS_PATH, PLAYER_IFACE, "Play")
            log.debug("ducking (mpris): resumed %s (%s)", name, owner)
        else:
            log.info("ducking (mpris): %s is %s now (changed while paused); leaving it",
                     name, status.lower())
        self._forget(owner)

    def _forget(self, owner: str) -> None:
        with self._paused_lock:
            self._paused.pop(owner, None)

    # -- last resort (helper thread, no event loop of the daemon) -------------------------

    def _restore_blocking(self, timeout: float) -> None:
        if not self._paused:
            return
        asyncio.run(self._restore_fresh(timeout))

    async def _restore_fresh(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            conn = await self._connect()
            try:
                await self._resume_all(conn)
            finally:
                conn.disconnect()


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:.1f} s"
    return describe(exc)
