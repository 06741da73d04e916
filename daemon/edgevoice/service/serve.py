"""``edgevoice run``: the daemon as a service — serve, reload on SIGHUP, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Awaitable, Callable
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
    - SIGTERM: ``STOPPING=1``; the daemon shuts down (speaker stopped, volumes restored,
      socket closed) and 0 is returned. Bounded: a few seconds.
    Returns 2 when the config's wake word models cannot be loaded at start.
    """
    notifier = notifier or Notifier()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    reload_asked = asyncio.Event()
    remove = handle_signals(loop, stop=stopping.set, reload=reload_asked.set)
    state_dir = Path(os.environ["STATE_DIRECTORY"].split(":")[0]) \
        if os.environ.get("STATE_DIRECTORY") else None
    current: dict[str, Any] = {"phase": "starting", "daemon": None}

    def snapshot() -> dict[str, Any]:
        daemon = current["daemon"]
        snap = daemon.snapshot() if daemon is not None else {}
        if current["phase"] != "running":
            snap["state"] = current["phase"]
        return snap

    status_server: StatusServer | None = None
    socket_path = cfg.service.status_socket_path()
    if socket_path is not None:
        status_server = StatusServer(socket_path, snapshot)
        try:
            await status_server.start()
        except StatusError as exc:
            log.warning("status socket off: %s", exc)
            status_server = None
    watchdog: asyncio.Task[None] | None = None
    previous_cfg: Config | None = None  # the one to go back to if a reloaded one fails
    try:
        while True:
            auth = auth_for(cfg)
            try:
                daemon = Daemon(cfg, auth=auth, state_dir=state_dir)
            except (WakeModelError, ValueError) as exc:
                await auth.close()
                if previous_cfg is None:
                    log.error("%s", exc)
                    return 2
                log.error("reload refused: %s; going back to the running configuration", exc)
                cfg, previous_cfg = previous_cfg, None
                continue
            current["daemon"] = daemon
            if previous_cfg is not None:
                # A reload: the stopped Daemon, now unreferenced, sits in reference cycles
                # (tasks, callbacks) with its native buffers; without a full collection each
                # SIGHUP kept ~0.5 MB for a long while (found by the soak run). Collect now.
                gc.collect()
            daemon_stop = asyncio.Event()
            run = asyncio.create_task(daemon.run(daemon_stop), name="daemon")
            if watchdog is None:
                watchdog = asyncio.create_task(
                    notifier.run_watchdog(lambda: current["daemon"] is not None
                                          and current["daemon"].healthy()), name="watchdog")
            await _first_of(daemon.ready.wait(), stopping.wait(), run)
            if run.done():
                await run  # raises what stopped it (a device that cannot open at all)
            if not stopping.is_set():  # stopped before it listened: never READY
                current["phase"] = "running"
                notifier.ready(status_line(snapshot()))
            pending_cfg: Config | None = None
            while not stopping.is_set() and not run.done():
                await _first_of(stopping.wait(), reload_asked.wait(), asyncio.sleep(0.5))
                if reload_asked.is_set():
                    reload_asked.clear()
                    notifier.reloading()
                    try:
                        pending_cfg = load_config(config_path)
                        # What a rebuild would load: fail now, not after the running daemon
                        # was stopped.
                        setup.wake_gate(pending_cfg)
                        if pending_cfg.conversation.earcon:
                            load_earcon(pending_cfg)
                    except (ConfigError, WakeModelError, ValueError) as exc:
                        pending_cfg = None
                        lines = exc.errors if isinstance(exc, ConfigError) else [str(exc)]
                        for line in lines:
                            log.error("reload refused: %s", line)
                        log.error("reload refused: keeping the running configuration")
                        notifier.ready(status_line(snapshot()))
                        continue
                    setup_logging(pending_cfg.service.log_level,
                                  journal=pending_cfg.service.journal())
                    log.info("reloading: the new configuration applies at the next idle "
                             "moment")
                if pending_cfg is not None and daemon.core.state is c.State.IDLE:
                    break
                notifier.status(status_line(snapshot()))
            if stopping.is_set() or pending_cfg is None:
                current["phase"] = "stopping"
                notifier.stopping()
                daemon_stop.set()
                await run
                await auth.close()
                return 0
            daemon_stop.set()
            await run
            await auth.close()
            cfg, previous_cfg = pending_cfg, cfg
            current["phase"] = "reloading"
    finally:
        remove()
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        if status_server is not None:
            await status_server.close()


async def _first_of(*aws: Awaitable[Any]) -> None:
    """Wait until the first of ``aws`` finishes; cancel the coroutines among the rest."""
    tasks = [a if isinstance(a, asyncio.Task) else asyncio.ensure_future(a) for a in aws]
    own = [t for a, t in zip(aws, tasks, strict=True) if t is not a]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in own:
            t.cancel()
