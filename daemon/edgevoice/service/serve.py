"""``edgevoice run``: the daemon as a service — serve, reload on SIGHUP, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevoice.config import Config, ConfigError, load_config
from edgevoice.conversation import core as c
from edgevoice.daemon import Daemon, load_earcon
from edgevoice.link.auth import Auth
from edgevoice.listen import setup
from edgevoice.listen.wake import WakeModelError
from edgevoice.service.logs import setup_logging
from edgevoice.service.notify import Notifier
from edgevoice.service.signals import handle_signals
from edgevoice.service.status import StatusError, StatusServer, status_line

log = logging.getLogger("edgevoice.service")

STATUS_EVERY_S = 0.5  # how often STATUS= is checked (sent only when it changed)


async def serve(
    cfg: Config,
    *,
    config_path: Path | None,
    auth_for: Callable[[Config], Auth],
    notifier: Notifier | None = None,
) -> int:
    """``edgevoice run``: the daemon under systemd (or a terminal) until SIGTERM/SIGINT.

    - ``READY=1`` once the microphone delivers and the wake word listens; ``STATUS=`` follows
      the state (checked twice a second, sent only when it changes); ``WATCHDOG=1`` at half
      the unit's interval while :meth:`Daemon.healthy`.
    - SIGHUP: ``RELOADING=1``; the file is read again. An invalid file is logged line by line
      and the running daemon keeps its config (``READY=1`` again at once). A valid one
      applies the log level at once and the rest at the next idle moment — the parts are
      rebuilt then, so a running conversation is never dropped — then ``READY=1``.
    - ``edgevoice mute on|off|toggle`` through the status socket mutes the running daemon
      (the state is kept in the state directory; a rebuilt daemon reads it back).
    - SIGTERM: ``STOPPING=1``; the daemon shuts down (speaker stopped, volumes restored,
      socket closed) and 0 is returned. Bounded: a few seconds.
    Returns 2 when the config's wake word models cannot be loaded at start.
    """
    service = _Service(cfg, config_path=config_path, auth_for=auth_for,
                       notifier=notifier or Notifier())
    return await service.run()


@dataclass
class _Running:
    """One built daemon, its credentials and the task running it."""

    daemon: Daemon
    auth: Auth
    task: asyncio.Task[None]
    stop: asyncio.Event

    async def close(self) -> None:
        """Stop the daemon and wait for it; raises what it failed with."""
        self.stop.set()
        await self.task
        await self.auth.close()


class _Service:
    """The state of :func:`serve` between its steps: the signals asked for, the phase the
    status shows, the running daemon (if any), the status server and the watchdog."""

    def __init__(self, cfg: Config, *, config_path: Path | None,
                 auth_for: Callable[[Config], Auth], notifier: Notifier) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.auth_for = auth_for
        self.notifier = notifier
        self.stopping = asyncio.Event()
        self.reload_asked = asyncio.Event()
        self.state_dir = _state_dir()
        self.phase = "starting"  # the status's state until the daemon runs
        self.daemon: Daemon | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def run(self) -> int:
        remove = handle_signals(asyncio.get_running_loop(), stop=self.stopping.set,
                                reload=self.reload_asked.set)
        status_server = await _start_status_server(self.cfg, self.snapshot, self.command)
        try:
            return await self._serve()
        finally:
            remove()
            if self._watchdog is not None:
                self._watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watchdog
            if status_server is not None:
                await status_server.close()

    def snapshot(self) -> dict[str, Any]:
        snap = self.daemon.snapshot() if self.daemon is not None else {}
        if self.phase != "running":
            snap["state"] = self.phase
        return snap

    def command(self, request: str) -> dict[str, Any]:
        """A command from the status socket (:data:`~edgevoice.service.status.COMMANDS`)."""
        daemon = self.daemon
        if daemon is None or self.phase not in ("running", "reloading"):
            return {"error": f"cannot {request} now: the daemon is {self.phase}"}
        what = request.split()[-1]
        muted = {"on": True, "off": False}.get(what, not daemon.muted)
        daemon.set_muted(muted, "command")
        return {"ok": True, "muted": daemon.muted}

    def _status(self) -> str:
        return status_line(self.snapshot())

    async def _serve(self) -> int:
        """Start, serve, swap to a reloaded config at an idle moment (as often as asked),
        stop."""
        cfg = self.cfg
        previous: Config | None = None  # the one to go back to if a reloaded one fails
        while True:
            running = await self._start(cfg, reloading=previous is not None)
            if running is None:
                if previous is None:
                    return 2
                cfg, previous = previous, None
                continue
            await self._wait_ready(running)
            pending = await self._serve_until_swap(running)
            if pending is None:
                await self._stop(running)
                return 0
            await running.close()
            cfg, previous = pending, cfg
            self.phase = "reloading"

    async def _start(self, cfg: Config, *, reloading: bool) -> _Running | None:
        """Build the daemon from ``cfg`` and start it; None (logged) if it cannot be built."""
        auth = self.auth_for(cfg)
        try:
            daemon = Daemon(cfg, auth=auth, state_dir=self.state_dir,
                            muted=self.daemon is not None and self.daemon.muted)
        except (WakeModelError, ValueError) as exc:
            await auth.close()
            if reloading:
                log.error("reload refused: %s; going back to the running configuration", exc)
            else:
                log.error("%s", exc)
            return None
        self.daemon = daemon
        if reloading:
            # The stopped Daemon, now unreferenced, sits in reference cycles (tasks,
            # callbacks) with its native buffers; without a full collection each SIGHUP
            # kept ~0.5 MB for a long while (found by the soak run). Collect now.
            gc.collect()
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop), name="daemon")
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self.notifier.run_watchdog(self._healthy),
                                                 name="watchdog")
        return _Running(daemon, auth, task, stop)

    def _healthy(self) -> bool:
        return self.daemon is not None and self.daemon.healthy()

    async def _wait_ready(self, running: _Running) -> None:
        """Until the daemon listens (then ``READY=1``) or a stop is asked. Raises what
        stopped the daemon before (a device that cannot open at all)."""
        await _first_of(running.daemon.ready.wait(), self.stopping.wait(), running.task)
        if running.task.done():
            await running.task
        if not self.stopping.is_set():  # stopped before it listened: never READY
            self.phase = "running"
            self.notifier.ready(self._status())

    async def _serve_until_swap(self, running: _Running) -> Config | None:
        """Serve, following the status and taking reload requests, until a stop is asked or
        the daemon ended (None), or the daemon is idle with a reloaded config pending (that
        config)."""
        pending: Config | None = None
        # The waits are made once (the reload one again after each reload), not twice a
        # second: a task less to make and cancel each time.
        stop = asyncio.ensure_future(self.stopping.wait())
        reload = asyncio.ensure_future(self.reload_asked.wait())
        try:
            while not self.stopping.is_set() and not running.task.done():
                await asyncio.wait((stop, reload, running.task), timeout=STATUS_EVERY_S,
                                   return_when=asyncio.FIRST_COMPLETED)
                if self.reload_asked.is_set():
                    self.reload_asked.clear()
                    reload = asyncio.ensure_future(self.reload_asked.wait())
                    pending = self._reload()
                    if pending is None:
                        continue
                if pending is not None and running.daemon.core.state is c.State.IDLE:
                    break
                self.notifier.status(self._status())
        finally:
            stop.cancel()
            reload.cancel()
        return None if self.stopping.is_set() else pending

    def _reload(self) -> Config | None:
        """A reload request: the config file read again and checked (``RELOADING=1``). A
        valid one applies its log level now and is returned; an invalid one is logged line by
        line, ``READY=1`` is sent again and None returned (any earlier pending one is dropped
        too: the file is what counts)."""
        self.notifier.reloading()
        try:
            cfg = load_config(self.config_path)
            # What a rebuild would load: fail now, not after the running daemon was stopped.
            setup.wake_gate(cfg)
            if cfg.conversation.earcon:
                load_earcon(cfg)
        except (ConfigError, WakeModelError, ValueError) as exc:
            lines = exc.errors if isinstance(exc, ConfigError) else [str(exc)]
            for line in lines:
                log.error("reload refused: %s", line)
            log.error("reload refused: keeping the running configuration")
            self.notifier.ready(self._status())
            return None
        setup_logging(cfg.service.log_level, journal=cfg.service.journal())
        log.info("reloading: the new configuration applies at the next idle moment")
        return cfg

    async def _stop(self, running: _Running) -> None:
        self.phase = "stopping"
        self.notifier.stopping()
        await running.close()


def _state_dir() -> Path | None:
    """systemd's ``StateDirectory=`` (the first one), where the tools keep their record."""
    value = os.environ.get("STATE_DIRECTORY")
    return Path(value.split(":")[0]) if value else None


async def _start_status_server(
    cfg: Config, snapshot: Callable[[], dict[str, Any]],
    commands: Callable[[str], dict[str, Any]] | None = None,
) -> StatusServer | None:
    """The status socket's server, serving ``snapshot()``; None when the config has no
    socket or it cannot be created (logged: the daemon serves on without it)."""
    socket_path = cfg.service.status_socket_path()
    if socket_path is None:
        return None
    server = StatusServer(socket_path, snapshot, commands=commands)
    try:
        await server.start()
    except StatusError as exc:
        log.warning("status socket off: %s", exc)
        return None
    return server


async def _first_of(*aws: Awaitable[Any]) -> None:
    """Wait until the first of ``aws`` finishes; cancel the coroutines among the rest."""
    tasks = [a if isinstance(a, asyncio.Task) else asyncio.ensure_future(a) for a in aws]
    own = [t for a, t in zip(aws, tasks, strict=True) if t is not a]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in own:
            t.cancel()
