"""Small shared helpers."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError


def between(lo: float, hi: float) -> AfterValidator:
    """A validator that accepts ``lo <= value <= hi`` and otherwise raises an error whose
    message reads "must be between LO and HI, got V" (the config error format)."""

    def check(value: Any) -> Any:
        if not lo <= value <= hi:
            raise PydanticCustomError(
                "range", "must be between {lo} and {hi}, got {value}",
                {"lo": _num(lo), "hi": _num(hi), "value": _num(value)},
            )
        return value

    return AfterValidator(check)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and not isinstance(x, bool) else str(x)


def data_path(name: str) -> Path:
    """A file bundled in the package's ``data/`` folder (earcons, the demo's recording)."""
    return Path(str(resources.files("edgevoice") / "data" / name))


_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# Used when PATH is not passed through: the usual system directories, nothing of the daemon's.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: What the daemon's own helpers (amixer, ducking hooks) may see of its environment: where
#: the user's sound server and ALSA settings are, and the locale. Never a credential.
AUDIO_ENV = ("HOME", "LANG", "LC_ALL", "TZ", "XDG_RUNTIME_DIR", "ALSA_CONFIG_PATH",
             "PULSE_SERVER", "PULSE_RUNTIME_PATH", "PULSE_COOKIE")


def child_environ(names: Iterable[str] = AUDIO_ENV,
                  environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a child process: the variables ``names`` that are set, and
    PATH (:data:`DEFAULT_PATH` unless PATH is among ``names``). Nothing else of the daemon's
    environment (an API key, a credentials directory) reaches a child."""
    environ = os.environ if environ is None else environ
    env = {k: environ[k] for k in names if k in environ}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


# Lone surrogates too: they cannot be encoded, and a journal entry with one would be lost.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def escape_controls(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1, the Unicode line and paragraph
    separators, lone surrogates) written as ``\\n``, ``\\t``, ``\\r`` or
    ``\\xNN``/``\\uNNNN``: text from the model or the user can never start a new log line or
    move the cursor of a terminal."""
    return _CONTROLS.sub(_escape_one, text)


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c)
    if named:
        return named
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
