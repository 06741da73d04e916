"""The layering the import-linter contract states, seen from a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

# socket and threading are left out: the standard library loads them itself (email.utils for
# pydantic, logging); the import-linter contract checks that no edgevoice.conversation module
# imports them.
IO_LIBRARIES = ("websockets", "pyaudio", "asyncio", "subprocess")


def loaded_after_import(module: str) -> list[str]:
    code = (f"import sys, json; import {module}; "
            f"print(json.dumps([m for m in {list(IO_LIBRARIES)!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=60)
    return json.loads(out.stdout)


def test_the_conversation_core_loads_no_io_library() -> None:
    assert loaded_after_import("edgevoice.conversation.core") == []


def test_the_link_protocol_loads_no_io_library() -> None:
    assert loaded_after_import("edgevoice.link.protocol") == []


def test_the_daemon_loads_no_dev_kit() -> None:
    code = ("import sys, edgevoice.service.serve; "
            "print(sorted(m for m in sys.modules if m.startswith('edgevoice.devkit')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "[]"
