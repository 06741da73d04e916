"""Benchmark of the whole daemon's listening: the ``daemon`` section of ``scripts/bench``.

Two figures, both on the demo's virtual sound card (FIFO-paced ALSA ``file`` PCMs: the
microphone delivers at the device clock, in real time):

* ``wake.loop_lag_ms_max`` — the largest event-loop lag while the whole
  :class:`~edgevoice.daemon.Daemon` listens to the wake corpus (tests/fixtures/wake, as
  :func:`bench.wake.load_corpus` lays it out, with :data:`GAP_S` of silence between the clips:
  the VAD gate closes between them, so every clip is a speech onset whose pre-roll is replayed
  through the models), with the corpus's two wake words configured. Wake words start
  conversations with the loopback simulator (run as a child process, so that its work is not
  on the measured loop), so replies, barge-ins and follow-ups happen as they would. The lag
  is measured by a probe task on the daemon's loop that sleeps :data:`PROBE_PERIOD_S` again
  and again: how late each wake-up came. ``wake.loop_lag_ms_p99`` is its 99th percentile;
  ``wake.loop_lag_detections`` the wake words the worker found (the daemon did listen),
  ``wake.loop_lag_frames_dropped`` the frames it dropped and ``wake.loop_lag_late_ms_max``
  how far the newest frame was past a detection when it reached the loop.
* ``daemon.idle_cpu_s_per_audio_s`` — the whole ``edgevoice run`` process (a child process,
  on the default configuration, with the simulator as endpoint) listening to silence — the
  microphone floor, white noise at −70 dBFS — for ``idle_s`` seconds (at least 60): the
  process's CPU time (user + system, from ``/proc/PID/stat``, all threads) ÷ the audio
  seconds the virtual microphone delivered meanwhile. The measurement starts a few seconds
  after ``READY=1``, so start-up is not in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.wake import BENCH_MODELS, load_corpus
from edgevoice.config import Config
from edgevoice.devkit.demo import Rig, running_daemon
from edgevoice.devkit.simulator import Simulator
from edgevoice.secrets import ENV_API_KEY, Secret
from support import MANAGER_VARS, NotifyListener, stop_process

#: (key, comparison, limit) — the targets of the issue.
TARGETS: list[tuple[str, str, float]] = [
    ("wake.loop_lag_ms_max", "<=", 15.0),
    ("daemon.idle_cpu_s_per_audio_s", "<=", 0.01),
]

PROBE_PERIOD_S = 0.01
#: Silence added between the corpus clips: with their own 1 s of padding on each side, more
#: than the gate's 2.08 s hangover, so that each clip opens the gate afresh.
GAP_S = 1.5
MIC_BYTES_PER_S = 32000  # 16 kHz PCM16 mono
READY_TIMEOUT_S = 60.0
SETTLE_S = 3.0  # after READY=1, before the idle measurement starts
MIN_IDLE_S = 60.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def floor_noise(seconds: float, seed: int = 1) -> bytes:
    """A microphone's floor: white noise at −70 dBFS (digital zeros would flatter the VAD)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(seconds * 16000))
    x *= 32768 * 10 ** (-70 / 20) / np.sqrt(np.mean(x**2))
    return np.round(x).astype("<i2").tobytes()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    # Fields 14 and 15 (utime, stime) of proc(5); the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class LagProbe:
    """A task on the running loop that sleeps ``period`` over and over and records how late
    each wake-up came (seconds). Start with :meth:`start`, stop with :meth:`stop`."""

    def __init__(self, period: float = PROBE_PERIOD_S) -> None:
        self.period = period
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lag-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.period
            await asyncio.sleep(self.period)
            self.lags.append(max(0.0, loop.time() - due))


@contextlib.asynccontextmanager
async def simulator_process(key: str) -> AsyncIterator[str]:
    """``edgevoice simulator`` as a child process on a free port (strict, replies paced in
    real time); yields its endpoint URL."""
    env = {k: v for k, v in os.environ.items() if k not in MANAGER_VARS}
    env.update({ENV_API_KEY: key, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgevoice", "simulator", "--port", "0", "--strict"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        found = re.search(r"(wss?://[^/\s]+)", line)
        if found is None:
            raise RuntimeError(f"edgevoice simulator did not start: {line!r}")
        yield found.group(1)
    finally:
        await asyncio.to_thread(stop_process, proc)


async def _loop_lag(fixtures_dir: Path) -> dict[str, Any]:
    corpus = load_corpus(fixtures_dir)
    gap = bytes(int(GAP_S * MIC_BYTES_PER_S))
    spaced = b"".join(corpus.pcm[2 * c.start : 2 * c.end] + gap for c in corpus.clips)
    key = secrets.token_urlsafe(16)
    async with simulator_process(key) as url:
        cfg = Config.model_validate({
            "wake": {"models": [{"name": m} for m in BENCH_MODELS]},
            "voicelive": {"endpoint": url}})
        with tempfile.TemporaryDirectory(prefix="ev-lag-") as tmp:
            async with running_daemon(cfg, Path(tmp), api_key=Secret(key)) as run:
                mic = run.rig.mic
                probe = LagProbe()
                probe.start()
                audio = spaced + bytes(MIC_BYTES_PER_S)  # and a second to settle
                mic.feed(audio)
                deadline = time.monotonic() + len(audio) / MIC_BYTES_PER_S + 30
                while mic.written < len(audio) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                await probe.stop()
                errors = run.daemon.errors
                stats = run.daemon.listener.stats
    lags = np.array(probe.lags) * 1000
    return {
        "wake.loop_lag_ms_max": round(float(lags.max()), 1),
        "wake.loop_lag_ms_p99": round(float(np.percentile(lags, 99)), 1),
        "wake.loop_lag_audio_s": round(len(spaced) / MIC_BYTES_PER_S, 1),
        "wake.loop_lag_onsets": len(corpus.clips),
        "wake.loop_lag_detections": stats.detections,
        "wake.loop_lag_frames_dropped": stats.frames_dropped,
        "wake.loop_lag_late_ms_max": stats.late_ms_max,
        "wake.loop_lag_daemon_errors": errors,
    }


def _config(endpoint: str, status_socket: Path) -> str:
    return (f'[audio]\ninput_device = "edgevoice_mic"\noutput_device = "edgevoice_speaker"\n'
            f'[voicelive]\nendpoint = "{endpoint}"\n'
            f'[service]\nlog_target = "stderr"\nstatus_socket = "{status_socket}"\n')


async def _idle_cpu(idle_s: float) -> dict[str, Any]:
    key = secrets.token_urlsafe(16)
    async with Simulator(api_key=key, strict=True) as simulator:
        # Not in a deep temporary path: unix socket paths must stay under 108 bytes.
        with tempfile.TemporaryDirectory(prefix="ev-idle-", dir="/tmp") as tmp:
            root = Path(tmp)
            notify = NotifyListener(root / "notify")
            try:
                with Rig(root / "rig") as rig:  # sets ALSA_CONFIG_PATH while it lasts
                    config = root / "edgevoice.toml"
                    config.write_text(_config(simulator.url, root / "status.sock"))
                    env = {k: v for k, v in os.environ.items() if k not in MANAGER_VARS}
                    env.update({"NOTIFY_SOCKET": str(notify.path), ENV_API_KEY: key,
                                "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
                    with (root / "stderr.log").open("wb") as log:
                        proc = subprocess.Popen(
                            [sys.executable, "-m", "edgevoice", "run", "--config", str(config)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=log)
                        try:
                            return await _measure_idle(proc, notify, rig, root, idle_s)
                        finally:
                            await asyncio.to_thread(stop_process, proc, 10.0)
            finally:
                notify.close()


async def _measure_idle(proc: subprocess.Popen[bytes], notify: NotifyListener, rig: Rig,
                        root: Path, idle_s: float) -> dict[str, Any]:
    rig.mic.feed(floor_noise(idle_s + SETTLE_S + READY_TIMEOUT_S + 10))
    deadline = time.monotonic() + READY_TIMEOUT_S
    while notify.find("READY", "1") is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (root / "stderr.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"edgevoice run did not get ready:\n{tail}")
        await asyncio.sleep(0.05)
    await asyncio.sleep(SETTLE_S)
    cpu0, audio0 = process_cpu_s(proc.pid), rig.mic.written
    await asyncio.sleep(idle_s)
    cpu1, audio1 = process_cpu_s(proc.pid), rig.mic.written
    if proc.poll() is not None:
        raise RuntimeError(f"edgevoice run exited with {proc.returncode} while measured")
    audio_s = (audio1 - audio0) / MIC_BYTES_PER_S
    return {
        "daemon.idle_cpu_s_per_audio_s": round((cpu1 - cpu0) / audio_s, 4),
        "daemon.idle_audio_s": round(audio_s, 1),
        "daemon.idle_cpu_s": round(cpu1 - cpu0, 2),
    }


def run_daemon(fixtures_dir: Path, *, idle_s: float = MIN_IDLE_S) -> dict[str, Any]:
    """Run the section (about ``idle_s`` + 80 s of real time); returns its keys."""
    if idle_s < MIN_IDLE_S:
        raise ValueError(f"idle_s must be >= {MIN_IDLE_S:g} s, got {idle_s}")

    async def both() -> dict[str, Any]:
        return {**await _loop_lag(fixtures_dir), **await _idle_cpu(idle_s)}

    return asyncio.run(both())
