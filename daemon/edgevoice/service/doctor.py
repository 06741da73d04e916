"""``edgevoice doctor``: is this device ready? One check per part, each with a fix.

The checks, in order (each yields one :class:`Check`):

- **config**: the file parses and validates, and its wake word models load (what
  ``check-config`` checks).
- **microphone**: opens ``audio.input_device`` as the daemon does and measures its level for
  ``listen_s`` seconds (reported every half second through ``progress``); warns when it is
  silent (peak below :data:`SILENT_DBFS`) or clipped (more than :data:`CLIPPED_SHARE` of the
  samples at full scale).
- **speaker**: opens ``audio.output_device`` and plays the earcon to the end.
- **wake word**: loads the configured models behind the daemon's VAD gate; with ``wake_s``
  it listens on the microphone until one of them fires or the time runs out.
- **endpoint**: resolves the endpoint's host, does the TLS handshake (``wss://``) and then the
  Voice Live handshake with the real credentials, until ``session.updated``, through the
  daemon's own :class:`~edgevoice.link.client.VoiceLiveLink`. The key is found as
  ``edgevoice run`` finds it, else in the file install-service stored it in.
- **ducking**: the backend's program exists (``amixer``, the command hooks) or its server
  answers (PulseAudio).
- **tools**: each command tool's program exists and is executable, each MQTT broker accepts
  a connection with the tool's credentials, and the GPIO pin driver can serve the GPIO tools
  (:func:`~edgevoice.tools.pins.pin_warnings`).
- **service**: the unit is installed and enabled, systemd runs it (when systemd is the init
  system here), and the daemon answers on its status socket.

Guarantees: every check is bounded in time (``timeout_s`` for each network step, the
listening windows for the audio ones) and none raises: a failure becomes a ``fail`` line
naming what and where, with a fix. Credentials (the API key, MQTT passwords) are registered
with the redactor before use, and every text a check returns passes through it, so they never
appear in the output. Nothing is written except the earcon to the speaker (and the MQTT
brokers see a connect and a disconnect, no publish).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np

from edgevoice.audio.capture import Capture
from edgevoice.audio.devices import DeviceError
from edgevoice.audio.playback import Playback
from edgevoice.config import Config, ToolConfig
from edgevoice.daemon import EARCON_RATE, load_earcon
from edgevoice.link.auth import make_auth
from edgevoice.link.client import VoiceLiveLink
from edgevoice.link.protocol import LinkState, build_url, redact_url
from edgevoice.listen.setup import wake_gate, wake_problems
from edgevoice.listen.wake import WakeModelError
from edgevoice.secrets import REDACTOR, SecretError, protect, read_secret_file, resolve_api_key
from edgevoice.service.status import StatusUnavailable, query_status, status_line
from edgevoice.tools.pins import pin_factory, pin_warnings
from edgevoice.util import DEFAULT_PATH

Status = Literal["ok", "warn", "fail", "skip"]
CHECKS = ("config", "microphone", "speaker", "wake word", "endpoint", "ducking", "tools",
          "service")
#: A microphone whose peak stays below this (dBFS) over the window is called silent.
SILENT_DBFS = -60.0
#: A microphone with more than this share of samples at full scale is called clipped.
CLIPPED_SHARE = 0.001
SERVICE = "edgevoice"


@dataclass
class Check:
    """One line of the report. ``fix`` says what to do when ``status`` is not ok."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.detail = REDACTOR.redact(self.detail)
        self.fix = REDACTOR.redact(self.fix)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Options:
    listen_s: float = 3.0  #: how long the microphone's level is measured
    wake_s: float = 0.0  #: listen for a wake word this long (0: only load the models)
    timeout_s: float = 10.0  #: each network step (DNS, TLS, handshake, a broker)
    skip: frozenset[str] = frozenset()
    unit_dir: Path = Path("/etc/systemd/system")
    #: Where install-service stores the key (systemd hands it to the service as a credential,
    #: so the usual lookup run from a shell does not find it): tried when that lookup fails.
    installed_key: Path = Path("/etc/edgevoice/api-key")
    progress: Callable[[str], None] | None = None  #: the microphone's level as it goes


def dbfs(peak_or_rms: float) -> float:
    return 20 * math.log10(peak_or_rms / 32768) if peak_or_rms > 0 else -math.inf


def _level(samples: np.ndarray) -> tuple[float, float, float]:
    """(RMS dBFS, peak dBFS, share of samples at full scale) of PCM16 samples."""
    if samples.size == 0:
        return -math.inf, -math.inf, 0.0
    x = samples.astype(np.float64)
    rms = float(np.sqrt(np.mean(x * x)))
    peak = float(np.max(np.abs(x)))
    clipped = float(np.mean((samples >= 32767) | (samples <= -32768)))
    return dbfs(rms), dbfs(peak), clipped


def _bar(level_db: float, width: int = 30) -> str:
    filled = 0 if level_db == -math.inf else max(0, min(width, round((level_db + 90) / 90 * width)))
    return "#" * filled + "." * (width - filled)


def _db(x: float) -> str:
    return "-inf" if x == -math.inf else f"{x:.0f}"


def _finite(x: float) -> float | None:
    """A level for JSON: None for silence (-inf, which JSON cannot hold)."""
    return round(x, 1) if math.isfinite(x) else None


# ----------------------------------------------------------------------------- audio


async def check_microphone(cfg: Config, opts: Options) -> Check:
    audio = cfg.audio
    chunks: list[bytes] = []
    capture = Capture(on_frame=lambda frame, t: chunks.append(frame), device=audio.input_device,
                      frame_ms=audio.frame_ms, rate=audio.input_rate or None,
                      backoff=audio.reopen_backoff_s)
    fix_device = ("`edgevoice devices` lists the capture devices; set audio.input_device "
                  "to one of them")
    try:
        await capture.start(require_device=True)
    except DeviceError as exc:
        return Check("microphone", "fail", f"cannot open {audio.input_device!r}: {exc}",
                     fix_device)
    name = capture.device_name or audio.input_device
    try:
        levels: list[float | None] = []
        deadline = time.monotonic() + opts.listen_s
        taken = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            part = np.frombuffer(b"".join(chunks[taken:]), "<i2")
            taken = len(chunks)
            rms, _, _ = _level(part)
            levels.append(_finite(rms))
            if opts.progress is not None:
                opts.progress(f"microphone {_db(rms):>5} dBFS |{_bar(rms)}|")
    finally:
        await capture.aclose()
    samples = np.frombuffer(b"".join(chunks), "<i2")
    rms, peak, clipped = _level(samples)
    seconds = samples.size / 16000
    data = {"device": name, "seconds": round(seconds, 2), "rms_dbfs": _finite(rms),
            "peak_dbfs": _finite(peak), "clipped_share": round(clipped, 5), "levels": levels}
    where = f"{name!r}: level {_db(rms)} dBFS, peak {_db(peak)} dBFS over {seconds:.1f} s"
    if samples.size == 0:
        return Check("microphone", "fail", f"{name!r} opened but delivered no audio in "
                     f"{opts.listen_s:g} s", "check the device in `arecord -l`; another "
                     "program may hold it", data)
    if peak < SILENT_DBFS:
        return Check("microphone", "warn", f"{where}: silent", "unmute it and raise the "
                     "capture gain (alsamixer -V capture), or pick another audio.input_device; "
                     "then speak during the check", data)
    if clipped > CLIPPED_SHARE:
        return Check("microphone", "warn", f"{where}: clipped ({clipped:.1%} of the samples at "
                     "full scale)", "lower the capture gain (alsamixer -V capture): clipped "
                     "speech hurts the wake word and recognition", data)
    return Check("microphone", "ok", where, data=data)


async def check_speaker(cfg: Config, opts: Options) -> Check:
    audio = cfg.audio
    try:
        earcon = load_earcon(cfg)
    except ValueError as exc:
        return Check("speaker", "fail", str(exc), "point conversation.earcon_file at a "
                     "readable WAV, or remove it for the built-in chime")
    playback = Playback(device=audio.output_device, rate=audio.output_rate or None,
                        period_ms=audio.output_period_ms, prebuffer_ms=0,
                        backoff=audio.reopen_backoff_s)
    fix_device = ("`edgevoice devices` lists the playback devices; set audio.output_device "
                  "to one of them")
    try:
        await playback.start(require_device=True)
    except DeviceError as exc:
        return Check("speaker", "fail", f"cannot open {audio.output_device!r}: {exc}",
                     fix_device)
    name = playback.device_name or audio.output_device
    seconds = len(earcon) / 2 / EARCON_RATE
    try:
        playback.feed("doctor-earcon", earcon, "pcm16")
        playback.finish("doctor-earcon")
        try:
            await asyncio.wait_for(playback.wait_drained(), seconds + 5.0)
        except TimeoutError:
            return Check("speaker", "fail", f"{name!r} did not play the earcon within "
                         f"{seconds + 5:.1f} s", fix_device)
        await asyncio.sleep(0.2)  # the device's own buffer plays out before it is closed
        stats = playback.stats
    finally:
        await playback.aclose()
    data = {"device": name, "seconds": round(seconds, 2), "dropped_ms": stats.dropped_ms,
            "underflows": stats.device_underflows}
    if stats.dropped_ms > 0:
        return Check("speaker", "fail", f"{name!r} lost {stats.dropped_ms:.0f} ms of the "
                     "earcon", fix_device, data)
    return Check("speaker", "ok", f"{name!r}: played the earcon ({seconds:.2f} s); did you "
                 "hear it?", data=data)


async def check_wake(cfg: Config, opts: Options) -> Check:
    problems = wake_problems(cfg)
    if problems:
        return Check("wake word", "fail", "; ".join(problems), "fix the model names or files "
                     "in [wake] (edgevoice check-config lists the same)")
    try:
        gate = await asyncio.to_thread(wake_gate, cfg)
    except WakeModelError as exc:
        return Check("wake word", "fail", str(exc), "fix the model in [wake]")
    names = gate.detector.names
    loaded = f"loaded {', '.join(names)}"
    if opts.wake_s <= 0:
        gate.detector.close()
        return Check("wake word", "ok", f"{loaded} (--wake SECONDS listens for one)",
                     data={"models": names})
    audio = cfg.audio
    found: list[Any] = []
    heard = asyncio.Event()
    best: dict[str, float] = {}

    def on_frame(frame: bytes, t: float) -> None:
        if heard.is_set():
            return
        hits = gate.process(frame, t)
        for name, score in gate.detector.last_scores.items():
            best[name] = max(best.get(name, 0.0), float(score))
        if hits:
            found.extend(hits)
            heard.set()

    capture = Capture(on_frame=on_frame, device=audio.input_device, frame_ms=audio.frame_ms,
                      rate=audio.input_rate or None, backoff=audio.reopen_backoff_s)
    try:
        try:
            await capture.start(require_device=True)
        except DeviceError as exc:
            return Check("wake word", "fail", f"{loaded}, but the microphone does not open: "
                         f"{exc}", "see the microphone line")
        if opts.progress is not None:
            opts.progress(f"wake word: say {' or '.join(names)} (listening {opts.wake_s:g} s)")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(heard.wait(), opts.wake_s)
    finally:
        await capture.aclose()
        gate.detector.close()
    scores = {k: round(v, 3) for k, v in best.items()}
    if found:
        hit = found[0]
        return Check("wake word", "ok", f"{loaded}; heard {hit.name} (score {hit.score:.3f})",
                     data={"models": names, "detected": hit.name,
                           "score": round(float(hit.score), 3)})
    return Check("wake word", "fail", f"{loaded}; no detection in {opts.wake_s:g} s (best "
                 f"scores {scores})", "say the wake word clearly, near the microphone; a best "
                 "score close to the threshold means a lower wake.models threshold may do",
                 data={"models": names, "best": scores})


# ----------------------------------------------------------------------------- endpoint


async def check_endpoint(cfg: Config, opts: Options) -> Check:
    vl = cfg.voicelive
    url = build_url(vl)
    shown = redact_url(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    data: dict[str, Any] = {"url": shown}
    loop = asyncio.get_running_loop()
    # 1. DNS
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port), opts.timeout_s)
    except (OSError, TimeoutError) as exc:
        return Check("endpoint", "fail", f"cannot resolve {host}: {exc or 'timed out'}",
                     "check voicelive.endpoint and the network (DNS: /etc/resolv.conf)", data)
    data["addresses"] = sorted({str(i[4][0]) for i in infos})
    # 2. TLS
    if parts.scheme == "wss":
        context = ssl.create_default_context()
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context, server_hostname=host),
                opts.timeout_s)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            return Check("endpoint", "fail", f"TLS to {host}:{port} failed: "
                         f"{exc or 'timed out'}", "check the system clock and CA certificates "
                         "(apt-get install ca-certificates), and any proxy", data)
        tls = writer.get_extra_info("ssl_object")
        data["tls"] = tls.version() if tls is not None else None
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2.0)
    else:
        data["tls"] = None
    # 3. the Voice Live handshake with the real credentials
    api_key = None
    if vl.auth == "api-key":
        try:
            api_key = resolve_api_key(vl.api_key_file)
        except SecretError as exc:
            if not opts.installed_key.exists():
                return Check("endpoint", "fail", f"no API key: {exc}", "put the key in "
                             f"{opts.installed_key} (chmod 600) or $VOICELIVE_API_KEY", data)
            try:
                api_key = read_secret_file(opts.installed_key)
            except SecretError as exc:
                return Check("endpoint", "fail", f"the service's API key: {exc}",
                             f"run as root (sudo), or fix {opts.installed_key}: one line, "
                             "chmod 600", data)
    if api_key is not None:
        protect(api_key)
    link = VoiceLiveLink(vl, cfg.request_session(), make_auth(vl, api_key))
    start = time.monotonic()
    try:
        link.start()
        deadline = start + opts.timeout_s
        while (time.monotonic() < deadline and not link.ready and link.last_error is None
               and link.state is not LinkState.AUTH_FAILED):
            await asyncio.sleep(0.02)
        ready, error = link.ready, link.last_error
    finally:
        await link.close()
    took = (time.monotonic() - start) * 1000
    if ready:
        data["handshake_ms"] = round(took)
        via = f", TLS {data['tls']}" if data["tls"] else ""
        return Check("endpoint", "ok", f"{shown}: session.updated after {took:.0f} ms "
                     f"({vl.auth}{via})", data=data)
    if error is None:
        error = f"no session.updated within {opts.timeout_s:g} s"
    fix = ("check the API key (or the Entra role assignment) for this resource"
           if "authentication" in error else
           "check voicelive.endpoint and voicelive.model; the resource's region must offer "
           "Voice Live")
    return Check("endpoint", "fail", error, fix, data)


# ----------------------------------------------------------------------------- ducking, tools


def _program(argv0: str) -> str | None:
    """The program a command would run, as the tool runner finds it; None when missing or
    not executable."""
    if "/" in argv0:
        return argv0 if os.path.isfile(argv0) and os.access(argv0, os.X_OK) else None
    return shutil.which(argv0, path=DEFAULT_PATH)


async def check_ducking(cfg: Config, opts: Options) -> Check:
    d = cfg.ducking
    if d.backend == "none":
        return Check("ducking", "ok", "none (other audio is not lowered while edgevoice talks)")
    if d.backend == "command":
        missing = [p for p in (d.command.duck[0], d.command.unduck[0]) if _program(p) is None]
        if missing:
            return Check("ducking", "fail", f"ducking.command: {', '.join(missing)} not found or "
                         "not executable", "give the full path of an executable program")
        return Check("ducking", "ok", f"command: {d.command.duck[0]} / {d.command.unduck[0]}")
    if d.backend == "alsa":
        amixer = shutil.which("amixer", path=DEFAULT_PATH)
        if amixer is None:
            return Check("ducking", "fail", "alsa: amixer is not installed",
                         "apt-get install alsa-utils")
        try:
            proc = await asyncio.create_subprocess_exec(
                amixer, "-D", d.alsa.device, "sget", d.alsa.control,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(proc.communicate(), opts.timeout_s)
        except (OSError, TimeoutError) as exc:
            return Check("ducking", "fail", f"alsa: amixer failed: {exc}", "check ducking.alsa")
        if proc.returncode != 0:
            lines = [ln.strip() for ln in err.decode(errors="replace").splitlines() if ln.strip()]
            return Check("ducking", "fail", f"alsa: no control {d.alsa.control!r} on "
                         f"{d.alsa.device!r}: {lines[-1] if lines else 'amixer failed'}",
                         f"`amixer -D {d.alsa.device} scontrols` lists the controls; set "
                         "ducking.alsa.control and ducking.alsa.device")
        return Check("ducking", "ok", f"alsa: {d.alsa.control!r} on {d.alsa.device!r}")
    # pulse
    def probe() -> int:
        import pulsectl

        with pulsectl.Pulse("edgevoice-doctor", server=d.pulse.server,
                            connect=False) as pulse:
            pulse.connect(wait=False, timeout=opts.timeout_s)
            return len(pulse.sink_input_list())

    try:
        streams = await asyncio.wait_for(asyncio.to_thread(probe), opts.timeout_s + 1)
    except Exception as exc:  # pulsectl raises its own and OSError types
        return Check("ducking", "fail", f"pulse: cannot reach the sound server "
                     f"{d.pulse.server or '(default)'}: {type(exc).__name__}: {exc}",
                     "start PulseAudio/PipeWire for the daemon's user, or set "
                     "ducking.pulse.server")
    return Check("ducking", "ok", f"pulse: server {d.pulse.server or '(default)'} answers "
                 f"({streams} stream(s) playing)")


async def _mqtt_reachable(tool: ToolConfig, timeout_s: float) -> str | None:
    """None when the tool's broker accepts a connection with its credentials, else why."""
    import aiomqtt

    from edgevoice.mqtt import BrokerSetupError, client_options

    assert tool.mqtt is not None
    try:
        options = await client_options(tool.mqtt)
    except BrokerSetupError as exc:
        return str(exc)
    try:
        async with asyncio.timeout(timeout_s):
            async with aiomqtt.Client(**options, timeout=timeout_s):
                pass
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        return str(exc) or "timed out"
    return None


async def check_tools(cfg: Config, opts: Options) -> Check:
    if not cfg.tools:
        return Check("tools", "ok", "none declared")
    problems: list[str] = []
    fixes: dict[str, str] = {}
    done: list[str] = []
    brokers: dict[tuple[str, int, str | None], str | None] = {}
    for i, tool in enumerate(cfg.tools):
        where = f"tools[{i}] ({tool.name})"
        if tool.command is not None:
            argv0 = tool.command.argv[0]
            if _program(argv0) is None:
                problems.append(f"{where}: program {argv0} not found or not executable")
                fixes["command"] = "install the program or give its full path in argv"
            else:
                done.append(f"{tool.name}: {argv0}")
        elif tool.mqtt is not None:
            key = (tool.mqtt.host, tool.mqtt.port, tool.mqtt.username)
            if key not in brokers:
                brokers[key] = await _mqtt_reachable(tool, opts.timeout_s)
            why = brokers[key]
            if why is not None:
                problems.append(f"{where}: MQTT broker {tool.mqtt.host}:{tool.mqtt.port}: {why}")
                fixes["mqtt"] = ("start the broker, or fix the tool's host, port, username or "
                                 "password_file")
            else:
                done.append(f"{tool.name}: broker {tool.mqtt.host}:{tool.mqtt.port}")
    pins = pin_warnings(cfg.tools)
    problems += [p.rsplit(": pip install", 1)[0] for p in pins]
    if pins:
        fixes["gpio"] = "pip install lgpio into edgevoice's venv"
    gpio = [t for t in cfg.tools if t.gpio is not None]
    if gpio and not pins:
        done.append(f"{len(gpio)} GPIO tool(s) through {pin_factory()}")
    offline = await _offline_ready(cfg)
    if offline is not None:
        ok, text = offline
        if ok:
            done.append(text)
        else:
            problems.append(text)
            fixes["offline"] = ("apt-get install espeak-ng; check the sentences with "
                                "edgevoice check-config")
    data = {"count": len(cfg.tools), "problems": problems}
    if problems:
        return Check("tools", "fail", "; ".join(problems), "; ".join(fixes.values()), data)
    return Check("tools", "ok", f"{len(cfg.tools)} tool(s): " + ", ".join(done or ["built-ins"]),
                 data=data)


async def _offline_ready(cfg: Config) -> tuple[bool, str] | None:
    """Whether offline commands work here (None: they are off): the recogniser builds from
    the sentences (timed) and espeak-ng, the device's voice, is there."""
    from edgevoice.daemon import offline_mode

    mode = offline_mode(cfg)
    if mode == "off":
        return None
    if shutil.which("espeak-ng") is None:
        return False, "offline: espeak-ng (the device's own voice) is not installed"
    from edgevoice.offline.recognizer import OfflineRecognizer

    started = time.monotonic()
    try:
        recognizer = await asyncio.to_thread(OfflineRecognizer, cfg.tools)
    except Exception as exc:
        return False, f"offline: the recogniser cannot be built: {exc}"
    took = time.monotonic() - started
    count = sum(1 for t in cfg.tools if t.sentences)
    del recognizer
    return True, (f"offline ({mode}): sentences of {count} tool(s) understood on the device "
                  f"(loaded in {took:.1f} s)")


# ----------------------------------------------------------------------------- service


async def _systemctl(*args: str, timeout_s: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "systemctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, "timed out"
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def check_service(cfg: Config, opts: Options) -> Check:
    unit = opts.unit_dir / f"{SERVICE}.service"
    if not unit.is_file():
        return Check("service", "fail", f"{unit} is not installed", "sudo scripts/install-service "
                     "(from the checkout)")
    data: dict[str, Any] = {"unit": str(unit)}
    systemd_runs = Path("/run/systemd/system").is_dir() and shutil.which("systemctl")
    if systemd_runs:
        code, enabled = await _systemctl("is-enabled", SERVICE, timeout_s=opts.timeout_s)
        data["enabled"] = enabled
        if code != 0:
            return Check("service", "fail", f"{SERVICE} is installed but "
                         f"{enabled or 'not enabled'}", f"sudo systemctl enable --now {SERVICE}",
                         data)
        code, active = await _systemctl("is-active", SERVICE, timeout_s=opts.timeout_s)
        data["active"] = active
        if code != 0:
            return Check("service", "fail", f"{SERVICE} is enabled but {active}",
                         f"sudo systemctl start {SERVICE}; see journalctl -u {SERVICE} -n 50",
                         data)
    else:
        # No service manager here (a container, a chroot): the enable link is what
        # `systemctl enable` leaves behind.
        wants = list(opts.unit_dir.glob(f"*.wants/{SERVICE}.service"))
        data["enabled"] = "enabled" if wants else "disabled"
        if not wants:
            return Check("service", "fail", f"{SERVICE} is installed but not enabled",
                         f"sudo systemctl enable {SERVICE}", data)
    path = cfg.service.status_socket_path()
    if path is None:
        return Check("service", "warn", "installed and enabled; the status socket is turned off "
                     "(service.status_socket = \"\"), so how it runs is unknown",
                     "set service.status_socket to see the daemon's status", data)
    try:
        snapshot = await asyncio.to_thread(query_status, path, opts.timeout_s)
    except StatusUnavailable as exc:
        return Check("service", "fail", f"installed and enabled, but {exc}",
                     f"sudo systemctl restart {SERVICE}; see journalctl -u {SERVICE} -n 50", data)
    data["status"] = status_line(snapshot)
    manager = "" if systemd_runs else " (systemd is not running here)"
    return Check("service", "ok", f"installed, enabled, running{manager}: {data['status']}",
                 data=data)


# ----------------------------------------------------------------------------- all


async def run_checks(cfg: Config | None, config_check: Check, opts: Options,
                     report: Callable[[Check], None] | None = None) -> list[Check]:
    """Every check, in the order of :data:`CHECKS`; ``report`` sees each as it completes.
    With no ``cfg`` (the config failed) the rest are skipped."""
    checks = [config_check]
    if report:
        report(config_check)
    steps = {"microphone": check_microphone, "speaker": check_speaker, "wake word": check_wake,
             "endpoint": check_endpoint, "ducking": check_ducking, "tools": check_tools,
             "service": check_service}
    for name, step in steps.items():
        if name in opts.skip:
            check = Check(name, "skip", "skipped (--skip)")
        elif cfg is None:
            check = Check(name, "skip", "not checked: the config is not valid")
        else:
            try:
                check = await step(cfg, opts)
            except Exception as exc:  # a check never takes the report down
                check = Check(name, "fail", f"the check itself failed: {type(exc).__name__}: "
                              f"{exc}", "run with -v and report it")
        checks.append(check)
        if report:
            report(check)
    return checks


def passed(checks: list[Check], skipped: frozenset[str] = frozenset()) -> bool:
    """True when every check is ok, or skipped because it was asked to be."""
    return all(c.status == "ok" or (c.status == "skip" and c.name in skipped) for c in checks)


def format_check(check: Check) -> str:
    line = f"{check.status:<5} {check.name:<11} {check.detail}"
    if check.fix and check.status != "ok":
        line += f"\n{'':<17} fix: {check.fix}"
    return line
