"""Benchmark of the Voice Live link's reconnect: the ``reconnect`` section of ``scripts/bench``.

A :class:`~edgevoice.link.client.VoiceLiveLink` on the default configuration (backoff
schedule starting at 0.25 s, ±50 % jitter) talks to the loopback simulator on 127.0.0.1. Once
its session is ready, the simulator aborts the TCP connection (a server-side drop: the client
sees 1006, as when the service or the network goes away) and the time until the link's next
:class:`~edgevoice.link.client.LinkUp` is taken: noticing the drop, the backoff delay,
connecting, ``session.created`` → ``session.update`` → ``session.updated`` and the context
replay. Every trial uses a fresh link, so every drop is an isolated one (the backoff's first
step); drops within ``stable_after_s`` of each other back off further, by design. Figures:

* ``reconnect_ms_p50`` / ``_p95`` / ``_max`` — drop → session ready again, over ``trials``.
* ``reconnect.backoff_ms_p50`` — the part of it that was the drawn backoff delay
  (:attr:`~edgevoice.link.client.LinkDown.retry_in`); ``reconnect.handshake_ms_p50`` —
  the rest, per trial (noticing the drop, connecting and configuring the session).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import statistics
import time
from typing import Any, TypeVar

import numpy as np

from edgevoice.config import Config
from edgevoice.devkit.simulator import Simulator
from edgevoice.link.auth import make_auth
from edgevoice.link.client import LinkDown, LinkUp, VoiceLiveLink
from edgevoice.secrets import Secret

_T = TypeVar("_T")
TIMEOUT_S = 10.0  # per awaited event: the default backoff's first step is at most 0.375 s


async def _next(link: VoiceLiveLink, kind: type[_T]) -> tuple[_T, float]:
    """The next event of ``kind`` on the link's queue (others are skipped) and the monotonic
    time it was taken. Raises TimeoutError after :data:`TIMEOUT_S`."""
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            event = await link.events.get()
            if isinstance(event, kind):
                return event, time.monotonic()


async def _trial(simulator: Simulator, cfg: Config, key: Secret) -> tuple[float, float]:
    """One drop on a fresh link: (drop → ready again, the backoff delay drawn), in ms."""
    auth = make_auth(cfg.voicelive, key)
    link = VoiceLiveLink(cfg.voicelive, cfg.request_session(), auth)
    try:
        link.start(wanted=True)
        await _next(link, LinkUp)
        dropped_at = time.monotonic()
        if await simulator.drop_connections() != 1:
            raise RuntimeError("expected exactly one open connection to drop")
        down, _ = await _next(link, LinkDown)
        up, ready_at = await _next(link, LinkUp)
        if not up.reconnected:
            raise RuntimeError("the link came up as a first connection after a drop")
        return (ready_at - dropped_at) * 1000, (down.retry_in or 0.0) * 1000
    finally:
        await link.close()
        await auth.close()


async def _reconnects(trials: int) -> dict[str, Any]:
    key = secrets.token_urlsafe(16)
    async with Simulator(api_key=key, strict=True) as simulator:
        cfg = Config.model_validate({"voicelive": {"endpoint": simulator.url}})
        totals: list[float] = []
        handshakes: list[float] = []
        backoffs: list[float] = []
        for _ in range(trials):
            total, backoff = await _trial(simulator, cfg, Secret(key))
            totals.append(total)
            backoffs.append(backoff)
            handshakes.append(total - backoff)
            # The next trial's drop must find only its own connection open.
            await simulator.wait_until(lambda: all(c.closed for c in simulator.connections),
                                       timeout=TIMEOUT_S)
    return {
        "reconnect.trials": trials,
        "reconnect_ms_p50": round(statistics.median(totals), 1),
        "reconnect_ms_p95": round(float(np.percentile(totals, 95)), 1),
        "reconnect_ms_max": round(max(totals), 1),
        "reconnect.backoff_ms_p50": round(statistics.median(backoffs), 1),
        "reconnect.handshake_ms_p50": round(statistics.median(handshakes), 1),
    }


def run_reconnect(trials: int = 20) -> dict[str, Any]:
    """Measure ``trials`` isolated drops (each one about 0.1–0.4 s) and return the figures."""
    if trials < 1:
        raise ValueError("trials must be >= 1")
    # Each drop is logged as a warning, as it should be in service; here they are the point.
    quiet = logging.getLogger("edgevoice.voicelive")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return asyncio.run(_reconnects(trials))
    finally:
        quiet.setLevel(level)
