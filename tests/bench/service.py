"""Benchmark of start-up: the ``startup`` section of ``scripts/bench``.

``edgevoice run`` is started as systemd starts it: a child process with ``$NOTIFY_SOCKET``
naming a datagram socket this process listens on
(:class:`support.NotifyListener`), a config file, the API key in
``$VOICELIVE_API_KEY``. The config names the PCMs of the demo's virtual sound card (the bundled
ALSA config: ``file`` PCMs on FIFOs paced in real time, :class:`~edgevoice.devkit.demo.Rig`) and a
loopback simulator as the endpoint, with a status socket of its own. ``startup_ms`` is the
time from just before the process is spawned to the arrival of its ``READY=1`` datagram,
which the daemon sends once the microphone delivers and the wake word listens: the
interpreter, the imports, the config, the wake-word models, both devices open, the first
frame. Every run is a fresh process on a fresh rig; the median is reported with the minimum
and the maximum (the first run may pay for a cold file cache).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgevoice.devkit.demo import Rig
from edgevoice.devkit.simulator import Simulator
from edgevoice.secrets import ENV_API_KEY
from support import MANAGER_VARS, NotifyListener, stop_process

READY_TIMEOUT_S = 60.0  # a small board loading the models from an SD card is slow

def _config(endpoint: str, status_socket: Path) -> str:
    return (f'[audio]\ninput_device = "edgevoice_mic"\noutput_device = "edgevoice_speaker"\n'
            f'[voicelive]\nendpoint = "{endpoint}"\n'
            f'[service]\nlog_target = "stderr"\nstatus_socket = "{status_socket}"\n')


async def _one_start(root: Path, endpoint: str, key: str) -> float:
    """Start ``edgevoice run`` once in ``root``; returns spawn → READY=1 in ms."""
    notify = NotifyListener(root / "notify")
    try:
        with Rig(root / "rig"):  # sets ALSA_CONFIG_PATH in os.environ while it lasts
            config = root / "edgevoice.toml"
            config.write_text(_config(endpoint, root / "status.sock"))
            env = {k: v for k, v in os.environ.items() if k not in MANAGER_VARS}
            env.update({"NOTIFY_SOCKET": str(notify.path), ENV_API_KEY: key,
                        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
            with (root / "stderr.log").open("wb") as log:
                spawned = time.monotonic()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "edgevoice", "run", "--config", str(config)],
                    env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
                try:
                    deadline = spawned + READY_TIMEOUT_S
                    while (index := notify.find("READY", "1")) is None:
                        if proc.poll() is not None or time.monotonic() > deadline:
                            why = (f"exited with {proc.returncode}" if proc.returncode
                                   is not None else f"not ready in {READY_TIMEOUT_S:g} s")
                            tail = (root / "stderr.log").read_text(errors="replace")[-2000:]
                            raise RuntimeError(f"edgevoice run {why}:\n{tail}")
                        await asyncio.sleep(0.005)
                    ready_at = notify.messages[index][0]
                finally:
                    await asyncio.to_thread(stop_process, proc, 10.0)
    finally:
        notify.close()
    return (ready_at - spawned) * 1000


async def _starts(runs: int) -> dict[str, Any]:
    key = secrets.token_urlsafe(16)
    times: list[float] = []
    async with Simulator(api_key=key, strict=True) as simulator:
        for i in range(runs):
            # Not in a deep temporary path: unix socket paths must stay under 108 bytes.
            with tempfile.TemporaryDirectory(prefix=f"ev-start{i}-", dir="/tmp") as tmp:
                times.append(await _one_start(Path(tmp), simulator.url, key))
    return {
        "startup.runs": runs,
        "startup_ms": round(statistics.median(times), 1),
        "startup_ms_min": round(min(times), 1),
        "startup_ms_max": round(max(times), 1),
    }


def run_startup(runs: int = 5) -> dict[str, Any]:
    """Start the daemon ``runs`` times (a few seconds each) and return the figures."""
    if runs < 1:
        raise ValueError("runs must be >= 1")
    return asyncio.run(_starts(runs))
