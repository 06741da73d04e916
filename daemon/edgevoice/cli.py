"""Command line: ``edgevoice run | demo | status | mute | devices | check-config | doctor |
simulator | tool-runner``.

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from edgevoice import __version__
from edgevoice.config import Config, ConfigError, DuckingConfig, find_config_path, load_config
from edgevoice.secrets import ENV_API_KEY, Secret, SecretError, make_undumpable, protect
from edgevoice.service.logs import setup_logging
from edgevoice.util import is_loopback_host


def _load(args: argparse.Namespace) -> tuple[Config, Path | None]:
    path = find_config_path(getattr(args, "config", None))
    return load_config(path), path


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config, path = _load(args)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    where = str(path) if path else "built-in defaults"
    from edgevoice.listen.setup import wake_problems

    # The models' files too: what `edgevoice run` would refuse at start.
    problems = wake_problems(config)
    for line in problems:
        print(f"{where}: {line}", file=sys.stderr)
    if problems:
        return 2
    from edgevoice.tools.pins import pin_warnings
    from edgevoice.triggers import trigger_notes

    # Not errors: a missing input device is waited for at run time; a tool that would fail
    # at its first call on this machine (no PWM, a Pi 5).
    warnings = pin_warnings(config.tools)
    for line in [*trigger_notes(config.triggers), *warnings]:
        print(f"{where}: warning: {line}", file=sys.stderr)
    tools = f", {len(config.tools)} tool(s)" if config.tools else ""
    if config.triggers:
        tools += f", {len(config.triggers)} trigger(s)"
    warned = f", {len(warnings)} warning(s)" if warnings else ""
    print(f"{where}: valid{tools}{warned}")
    address = config.metrics.address()
    if address is not None and not is_loopback_host(address[0]):
        print(f"{where}: warning: metrics.listen {config.metrics.listen} is reachable from "
              f"the network (no authentication): keep it on loopback or behind a firewall",
              file=sys.stderr)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from edgevoice.audio.devices import quiet_native_logs
    from edgevoice.listen.setup import wake_problems
    from edgevoice.service import doctor

    make_undumpable()  # it reads the API key and MQTT passwords
    setup_logging("debug" if args.verbose else "error", journal=False)
    quiet_native_logs()
    args.skip = ["wake word" if name == "wake" else name for name in args.skip]
    unknown = set(args.skip) - set(doctor.CHECKS)
    if unknown:
        print(f"edgevoice doctor: unknown check(s) to skip: {', '.join(sorted(unknown))} "
              f"(checks: {', '.join(doctor.CHECKS)})", file=sys.stderr)
        return 2
    # Bounded: the level window is kept in memory, and every check must end.
    for name, value, hi in (("--listen", args.listen, 60), ("--wake", args.wake, 600),
                            ("--timeout", args.timeout, 120)):
        if not 0 <= value <= hi or (name == "--listen" and value < 0.5):
            print(f"edgevoice doctor: {name} {value:g} is out of range (at most {hi} s)",
                  file=sys.stderr)
            return 2
    config: Config | None = None
    try:
        config, path = _load(args)
    except ConfigError as exc:
        first = exc.errors[0] if exc.errors else str(exc)
        more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
        check = doctor.Check("config", "fail", first + more,
                             "edgevoice check-config lists every problem with its key path")
    else:
        where = str(path) if path else "built-in defaults (no config file found)"
        problems = wake_problems(config)
        tools = f", {len(config.tools)} tool(s)" if config.tools else ""
        check = doctor.Check("config", "ok", f"{where}: valid{tools}")
        if problems:  # the other checks still run: only the wake word needs the models
            check = doctor.Check("config", "fail", f"{where}: {'; '.join(problems)}",
                                 "fix the models in [wake]")
    out = sys.stdout

    def progress(line: str) -> None:
        print(f"{'':<17} {line}", file=out, flush=True)

    opts = doctor.Options(listen_s=args.listen, wake_s=args.wake, timeout_s=args.timeout,
                          skip=frozenset(args.skip), unit_dir=Path(args.unit_dir),
                          installed_key=Path(args.installed_key),
                          progress=None if args.json else progress)
    report = None if args.json else lambda c: print(doctor.format_check(c), file=out, flush=True)
    checks = asyncio.run(doctor.run_checks(config, check, opts, report))
    ok = doctor.passed(checks, opts.skip)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        bad = [c.name for c in checks if c.status in ("fail", "warn")]
        print("all checks passed" if ok else f"to fix: {', '.join(bad) or 'skipped checks'}",
              file=out)
    return 0 if ok else 1


def cmd_devices(args: argparse.Namespace) -> int:
    from edgevoice.audio.devices import devices_command, quiet_native_logs

    config, _ = _load(args)
    quiet_native_logs()
    return devices_command(config.audio.input_device, config.audio.output_device, sys.stdout)


def cmd_demo(args: argparse.Namespace) -> int:
    from edgevoice.devkit.demo import run_demo

    config, _ = _load(args)
    if not args.config:
        # Without --config the demo is self-contained: the installed config's tools and
        # ducking hooks (found through $EDGEVOICE_CONFIG or /etc/edgevoice) never run, above
        # all not for a real model reached with --endpoint.
        config = config.model_copy(update={"tools": [], "ducking": DuckingConfig()})
    setup_logging("debug" if args.verbose else "warning")
    api_key = None  # with --endpoint and no --api-key: the usual lookup ($VOICELIVE_API_KEY …)
    if args.api_key:
        api_key = Secret(args.api_key)
        protect(api_key)
    if args.script and args.endpoint:
        print("demo: --script is for the simulator; it cannot go with --endpoint", file=sys.stderr)
        return 2
    if args.offline and (args.script or args.endpoint):
        print("demo: --offline reaches no service; it cannot go with --script or --endpoint",
              file=sys.stderr)
        return 2
    try:
        return asyncio.run(
            run_demo(config, out=sys.stdout, as_json=args.json, endpoint=args.endpoint,
                     api_key=api_key, output=Path(args.output), timeout_s=args.timeout,
                     script_path=Path(args.script) if args.script else None,
                     offline=args.offline)
        )
    except ValueError as exc:  # the script or --output: one line naming the file
        print(f"demo: {exc}", file=sys.stderr)
        return 2


def cmd_run(args: argparse.Namespace) -> int:
    from edgevoice.audio.devices import quiet_native_logs
    from edgevoice.link.auth import Auth, make_auth
    from edgevoice.service.serve import serve

    # Before any secret is read: no core dump, and no process of the same user (a tool run
    # as the daemon) can read this one's memory or /proc/<pid>/environ.
    make_undumpable()
    config, path = _load(args)
    setup_logging("debug" if args.verbose else config.service.log_level,
                  journal=config.service.journal())
    quiet_native_logs()
    api_key = None
    if config.voicelive.auth == "api-key":
        from edgevoice.secrets import resolve_api_key

        api_key = resolve_api_key(config.voicelive.api_key_file)
        protect(api_key)

    def auth_for(cfg: Config) -> Auth:
        return make_auth(cfg.voicelive, api_key)

    return asyncio.run(serve(config, config_path=path, auth_for=auth_for))

def cmd_tool_runner(args: argparse.Namespace) -> int:
    from edgevoice.tools.runner import serve_runner

    make_undumpable()
    setup_logging("debug" if args.verbose else "info")
    config = Path(args.config) if args.config else None
    if config is not None:
        load_config(config)  # a bad file is exit 2 now, not a refusal of every call later
    asyncio.run(serve_runner(Path(args.socket), config, args.max_processes))
    return 0


def cmd_simulator(args: argparse.Namespace) -> int:
    from edgevoice.devkit.simulator import Simulator
    from edgevoice.devkit.simulator.script import Script

    setup_logging("debug" if args.verbose else "info")
    try:
        script = Script.load(args.script) if args.script else None
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    key = os.environ.get(ENV_API_KEY) or None

    async def serve() -> None:
        sim = Simulator(host=args.host, port=args.port, script=script, api_key=key,
                        pace=args.pace, tts=not args.no_tts, strict=args.strict)
        await sim.start()
        print(f"Voice Live simulator listening on {sim.url}/voice-live/realtime"
              + (" (api-key required)" if key else ""), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await sim.close()

    asyncio.run(serve())
    return 0


def _status_socket(args: argparse.Namespace) -> Path | None:
    """``--socket`` or the config's status socket; None (said on stderr) when turned off."""
    from edgevoice.config import DEFAULT_STATUS_SOCKET

    if args.socket:
        return Path(args.socket)
    config, _ = _load(args)
    path = config.service.status_socket_path()
    if path is None:
        print("edgevoice: the status socket is turned off (service.status_socket = \"\"); "
              f"use --socket PATH (default {DEFAULT_STATUS_SOCKET})", file=sys.stderr)
    return path


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from edgevoice.service.status import StatusUnavailable, format_status, query_status

    path = _status_socket(args)
    if path is None:
        return 1
    try:
        snapshot = query_status(path, timeout=args.timeout)
    except StatusUnavailable as exc:
        print(f"edgevoice: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(snapshot, indent=2, ensure_ascii=False))
    else:
        print(format_status(snapshot))
    return 0


def cmd_mute(args: argparse.Namespace) -> int:
    from edgevoice.service.status import StatusUnavailable, request

    path = _status_socket(args)
    if path is None:
        return 1
    try:
        reply = request(path, f"mute {args.what}", timeout=args.timeout)
    except StatusUnavailable as exc:
        print(f"edgevoice: {exc}", file=sys.stderr)
        return 1
    if reply.get("error"):
        print(f"edgevoice: {reply['error']}", file=sys.stderr)
        return 1
    print("muted" if reply.get("muted") else "unmuted")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgevoice", description="Hands-free voice assistant daemon (Azure AI Voice Live)."
    )
    parser.add_argument("--version", action="version", version=f"edgevoice {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", metavar="PATH",
                       help="config file (default: $EDGEVOICE_CONFIG, /etc/edgevoice/config.toml, "
                            "built-in defaults)")
        return p

    p = with_config(sub.add_parser("run", help="run the daemon (what the systemd unit starts)"))
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_run)

    p = with_config(sub.add_parser("check-config", help="validate the configuration"))
    p.set_defaults(func=cmd_check_config)

    p = with_config(sub.add_parser(
        "doctor", help="check this device: config, microphone, speaker, wake word, endpoint, "
                       "ducking, tools, service (exit 0 only when all pass)"))
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.add_argument("--listen", type=float, default=3.0, metavar="S",
                   help="measure the microphone's level for S seconds (default: %(default)s)")
    p.add_argument("--wake", type=float, default=0.0, metavar="S",
                   help="listen up to S seconds for the wake word (default: only load it)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="each network step (DNS, TLS, handshake, MQTT) (default: %(default)s)")
    p.add_argument("--skip", action="append", default=[], metavar="CHECK",
                   help="leave a check out (repeatable): microphone, speaker, wake, endpoint, "
                        "ducking, tools, service")
    p.add_argument("--unit-dir", default="/etc/systemd/system", help=argparse.SUPPRESS)
    p.add_argument("--installed-key", default="/etc/edgevoice/api-key", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    p.set_defaults(func=cmd_doctor)

    p = with_config(sub.add_parser(
        "devices", help="list capture and playback devices; mark the configured ones"))
    p.set_defaults(func=cmd_devices)

    p = with_config(sub.add_parser(
        "demo", help="the whole daemon on a virtual sound card, talking to the loopback "
                     "simulator (or to --endpoint)"))
    p.add_argument("--endpoint", help="a real Voice Live endpoint, e.g. "
                   "wss://<resource>.services.ai.azure.com (default: in-process simulator)")
    p.add_argument("--api-key", help=f"API key for --endpoint (prefer ${ENV_API_KEY}: "
                   "arguments are visible to other users)")
    p.add_argument("--json", action="store_true", help="one JSON object per timeline entry")
    p.add_argument("--script", help="the simulator's script (TOML) instead of the bundled one, "
                   "e.g. config/examples/simulator-script-outcomes.toml (a filtered reply)")
    p.add_argument("--offline", action="store_true", help="no service reachable: the command is "
                   "understood on the device from the demo tool's sentences")
    p.add_argument("--output", default="demo-reply.wav", help="reply WAV (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=90.0, help="give up after this many seconds")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    p.set_defaults(func=cmd_demo)

    p = with_config(sub.add_parser(
        "status", help="what the running daemon is doing (exit 1 when it is not running)"))
    p.add_argument("--json", action="store_true", help="the daemon's status snapshot as JSON")
    p.add_argument("--socket", metavar="PATH",
                   help="the status socket (default: service.status_socket of the config)")
    p.add_argument("--timeout", type=float, default=3.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_status)

    p = with_config(sub.add_parser(
        "mute", help="the privacy mute of the running daemon: no wake word, no audio leaves"))
    p.add_argument("what", choices=["on", "off", "toggle"])
    p.add_argument("--socket", metavar="PATH",
                   help="the status socket (default: service.status_socket of the config)")
    p.add_argument("--timeout", type=float, default=3.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_mute)

    p = sub.add_parser(
        "tool-runner", help='run the run_as = "user" tools for the daemon, as this user '
                            "(what edgevoice-tools.service starts)")
    p.add_argument("--socket", required=True, metavar="PATH", help="the unix socket to serve")
    p.add_argument("--config", metavar="PATH",
                   help='only run the programs of run_as = "user" tools of this config '
                        "(default: any program the daemon asks for)")
    p.add_argument("--max-processes", type=int, default=4, help="commands at once")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_tool_runner)

    p = sub.add_parser("simulator", help="run the loopback Voice Live simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--script",
                   help="a simulator script (see config/examples/simulator-script.toml)")
    p.add_argument("--pace", type=float, default=1.0,
                   help="reply audio speed, times real time (0: as fast as possible)")
    p.add_argument("--no-tts", action="store_true", help="tones instead of espeak-ng speech")
    p.add_argument("--strict", action="store_true",
                   help="answer unknown fields (at any depth) and wrongly typed values in "
                        "client events with an error, instead of ignoring them")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_simulator)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    except SecretError as exc:
        print(f"edgevoice: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
