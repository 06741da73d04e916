"""SIGTERM/SIGINT and SIGHUP reach the daemon's callbacks on its event loop."""

from __future__ import annotations

import asyncio
import os
import signal

from edgevoice.service.signals import handle_signals
from support import until


async def test_signals_stop_and_reload_on_the_loop() -> None:
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    remove = handle_signals(loop, stop=lambda: seen.append("stop"),
                            reload=lambda: seen.append("reload"))
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        await until(lambda: len(seen) == 3, what="the three signals")
    finally:
        remove()
    assert seen == ["reload", "stop", "stop"]
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
