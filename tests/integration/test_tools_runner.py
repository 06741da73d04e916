"""Tools kept from the daemon's secrets: the tool runner (run_as = "user"), the environment
children get, the key leaving the environment, and the daemon not being dumpable.

The separate-user test runs for real as root: the runner and a daemon-like process run under
two uids (setpriv), the daemon holds a key in its environment and a credentials file, and a
tool tries to read both.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgevoice.tools import ToolBox, ToolSpec
from edgevoice.tools.runner import Runner
from support import alive, until

pytestmark = pytest.mark.timeout(60)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tools"
RECORD = FIXTURES / "record.py"
HANG = FIXTURES / "hang.py"
DAEMON_UID, TOOLS_UID = 61000, 61001
KEY = "sekrit-0123456789-abcdef"


def user_tool(name: str, argv: list[str], **command: Any) -> ToolSpec:
    return ToolSpec.model_validate({"name": name, "timeout_s": 5,
                                    "command": {"argv": argv, "run_as": "user", **command}})


async def test_the_runner_runs_a_command_with_only_its_environment(tmp_path: Path) -> None:
    sock, out = tmp_path / "runner.sock", tmp_path / "runs.jsonl"
    runner = Runner(sock)
    await runner.start()
    try:
        assert oct(sock.stat().st_mode & 0o777) == "0o660"
        os.environ["EDGEVOICE_TEST_SHOWN"] = "yes"
        box = ToolBox([user_tool("rec", [sys.executable, str(RECORD), str(out), "a b"],
                                 env=["EDGEVOICE_TEST_SHOWN"])], runner_socket=sock)
        output = json.loads(await box.call("c1", "rec", "{}"))
        assert output == {"ok": True, "exit_status": 0, "stdout": "recorded 1 args"}
        (run,) = [json.loads(x) for x in out.read_text().splitlines()]
        assert run["argv"] == ["a b"]
        assert {k for k in run["env"] if k != "LC_CTYPE"} == {"EDGEVOICE_TEST_SHOWN", "PATH"}
        # The timeout closes the connection; the runner kills the command's whole group.
        pids = tmp_path / "pids.json"
        box = ToolBox([ToolSpec.model_validate({
            "name": "hang", "timeout_s": 1,
            "command": {"argv": [sys.executable, str(HANG), str(pids)], "run_as": "user"}})],
            runner_socket=sock)
        output = json.loads(await box.call("c2", "hang", "{}"))
        assert output["ok"] is False and output["error"].startswith("timed out after 1 s")
        started = json.loads(pids.read_text())
        await until(lambda: not alive(started["pid"]) and not alive(started["child"]),
                    timeout=5, what="the command and its child killed")
    finally:
        os.environ.pop("EDGEVOICE_TEST_SHOWN", None)
        await runner.close()


async def test_the_runner_runs_only_the_programs_of_run_as_user_tools(tmp_path: Path) -> None:
    config = tmp_path / "edgevoice.toml"
    config.write_text('[[tools]]\nname = "ok"\ncommand = { argv = ["/bin/true"], '
                      'run_as = "user" }\n[[tools]]\nname = "mine"\n'
                      'command = { argv = ["/bin/false"] }\n')
    runner = Runner(tmp_path / "r.sock", config)
    await runner.start()
    try:
        box = ToolBox([user_tool("ok", ["/bin/true"]), user_tool("sh", ["/bin/sh", "-c"]),
                       user_tool("mine", ["/bin/false"])], runner_socket=tmp_path / "r.sock")
        assert json.loads(await box.call("c1", "ok", "{}"))["ok"] is True
        for i, name in enumerate(["sh", "mine"]):
            output = json.loads(await box.call(f"d{i}", name, "{}"))
            assert "is not the program of a run_as = \"user\" tool" in output["error"], output
    finally:
        await runner.close()


async def test_no_runner_is_a_clear_failure(tmp_path: Path) -> None:
    box = ToolBox([user_tool("ok", ["/bin/true"])], runner_socket=tmp_path / "none.sock")
    output = json.loads(await box.call("c1", "ok", "{}"))
    assert output["ok"] is False and "the tool runner" in output["error"] and \
        "is not available" in output["error"]


def test_the_key_leaves_the_environment_and_proc_once_read() -> None:
    code = textwrap.dedent("""
        import os
        from edgevoice.secrets import resolve_api_key
        key = resolve_api_key(None)
        print(key.reveal() == os.environ.get("KEY_COPY"), "VOICELIVE_API_KEY" in os.environ,
              os.environ["KEY_COPY"].encode() in open("/proc/self/environ", "rb").read()
              .replace(b"KEY_COPY=" + os.environ["KEY_COPY"].encode(), b""))
    """)
    env = {**os.environ, "VOICELIVE_API_KEY": KEY, "KEY_COPY": KEY}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=30, check=True).stdout.split()
    assert out == ["True", "False", "False"]


# ----------------------------------------------------------------------------- as root

DAEMON = textwrap.dedent("""
    import asyncio, json, os, sys
    from pathlib import Path
    from edgevoice.tools import ToolBox, ToolSpec
    if sys.argv[1] == "hardened":
        from edgevoice.secrets import make_undumpable
        assert make_undumpable()
    creds = sys.argv[3]
    pid = {"type": "object", "properties": {"pid": {"type": "string", "pattern": "^[0-9]+$",
           "maxLength": 10}}, "required": ["pid"]}
    tools = []
    for who in ("user", "daemon"):
        tools.append(ToolSpec.model_validate({"name": f"environ_{who}", "parameters": pid,
            "command": {"argv": ["/bin/cat", "/proc/{pid}/environ"], "run_as": who}}))
        tools.append(ToolSpec.model_validate({"name": f"cred_{who}",
            "command": {"argv": ["/bin/cat", creds], "run_as": who}}))
    box = ToolBox(tools, runner_socket=Path(sys.argv[2]))
    async def main():
        out = {}
        for t in tools:
            out[t.name] = json.loads(await box.call(t.name, t.name,
                                                    json.dumps({"pid": str(os.getpid())})
                                                    if "environ" in t.name else "{}"))
        print(json.dumps(out))
    asyncio.run(main())
""")


@pytest.fixture
def two_users() -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to run two users")
    root = Path(tempfile.mkdtemp(prefix="edgevoice-runas-"))
    try:
        root.chmod(0o755)
        run = root / "run"
        run.mkdir(mode=0o750)
        os.chown(run, TOOLS_UID, TOOLS_UID)
        creds = root / "credentials"
        creds.mkdir(mode=0o500)
        (creds / "voicelive-api-key").write_text(KEY + "\n")
        (creds / "voicelive-api-key").chmod(0o400)
        os.chown(creds / "voicelive-api-key", DAEMON_UID, DAEMON_UID)
        os.chown(creds, DAEMON_UID, DAEMON_UID)  # as systemd's credentials directory
        (root / "daemon.py").write_text(DAEMON)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_user(uid: int, groups: list[int], argv: list[str], **kw: Any) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}",
            f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups",
            "--", *argv]


def test_a_tool_run_as_the_tool_user_cannot_read_the_daemons_secrets(two_users: Path) -> None:
    sock = two_users / "run" / "runner.sock"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(sys.path)}
    runner = subprocess.Popen(
        as_user(TOOLS_UID, [], [sys.executable, "-m", "edgevoice", "tool-runner",
                                "--socket", str(sock)]),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        asyncio.run(until(sock.exists, timeout=20, what="the runner's socket"))
        results = {}
        for mode in ("plain", "hardened"):
            done = subprocess.run(
                as_user(DAEMON_UID, [TOOLS_UID],
                        [sys.executable, str(two_users / "daemon.py"), mode, str(sock),
                         str(two_users / "credentials" / "voicelive-api-key")]),
                env={**env, "VOICELIVE_API_KEY": KEY}, capture_output=True, text=True,
                timeout=40)
            assert done.returncode == 0, done.stderr
            results[mode] = json.loads(done.stdout)
    finally:
        runner.terminate()
        runner.wait(10)
    for mode, out in results.items():
        for name in ("environ_user", "cred_user"):
            # As the tool user: refused by the kernel, whatever the daemon does.
            assert out[name]["ok"] is False, (mode, name, out[name])
            assert "Permission denied" in out[name]["error"]
            assert KEY not in json.dumps(out[name])
    # For contrast, as the daemon's own user: the credentials file is readable, and so is the
    # environment unless the daemon made itself undumpable (as `edgevoice run` does).
    assert KEY in results["plain"]["cred_daemon"]["stdout"]
    assert KEY in results["plain"]["environ_daemon"]["stdout"]
    assert results["hardened"]["environ_daemon"]["ok"] is False
    assert KEY not in json.dumps(results["hardened"]["environ_daemon"])


async def test_amixer_and_ducking_hooks_never_see_the_key(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from edgevoice.config.tools import MixerSettings
    from edgevoice.ducking.command import CommandDucker
    from edgevoice.tools.builtins import set_volume

    monkeypatch.setenv("VOICELIVE_API_KEY", KEY)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/edgevoice.service")
    monkeypatch.setenv("PULSE_SERVER", "unix:/run/pulse.sock")  # audio context does pass
    out = tmp_path / "runs.jsonl"
    amixer = tmp_path / "amixer"
    amixer.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                      f"subprocess.run([{sys.executable!r}, {str(RECORD)!r}, {str(out)!r}])\n"
                      f"print('  Mono: Playback 40 [40%] [on]')\n")
    amixer.chmod(0o755)
    assert await set_volume(MixerSettings(), 40, amixer=str(amixer)) == {"volume_percent": 40}
    hook = [sys.executable, str(RECORD), str(out)]
    ducker = CommandDucker(duck=hook, unduck=hook)
    await ducker.duck()
    await ducker.unduck()
    seen = [json.loads(x)["env"] for x in out.read_text().splitlines()]
    assert len(seen) == 3
    for env in seen:
        assert "VOICELIVE_API_KEY" not in env and "CREDENTIALS_DIRECTORY" not in env
        assert KEY not in json.dumps(env)
        assert env["PULSE_SERVER"] == "unix:/run/pulse.sock"
