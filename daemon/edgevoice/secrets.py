"""Secrets: the Voice Live API key, never in the config file, logs, exceptions or reprs.

Where the key comes from, first hit wins:
1. ``$VOICELIVE_API_KEY`` (handy for a shell session; a per-run override);
2. the file named by ``voicelive.api_key_file`` — refused when group- or world-readable;
3. systemd's credential ``$CREDENTIALS_DIRECTORY/voicelive-api-key`` (``LoadCredential=``).

:class:`Secret` masks itself in ``str``/``repr``/f-strings and pickling; only
:meth:`Secret.reveal` gives the value, at the one place that puts it on the wire.
:class:`RedactingFilter` is defence in depth: any log record that would still contain a
known secret has it replaced by ``***``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

ENV_API_KEY = "VOICELIVE_API_KEY"
CREDENTIAL_NAME = "voicelive-api-key"
MASK = "***"


class SecretError(Exception):
    """A secret could not be loaded; the message names the source, never the value."""


class Secret:
    """A string that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


def read_secret_file(path: str | Path, *, check_mode: bool = True) -> Secret:
    """Read a one-line secret file. Raises SecretError (naming the file) when it is missing,
    empty, unreadable, or — with ``check_mode`` — readable by group or others."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretError(f"{path}: key file not found") from None
    except OSError as exc:
        raise SecretError(f"{path}: cannot access key file: {exc.strerror}") from None
    if check_mode and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(
            f"{path}: key file is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"{path}: cannot read key file: {type(exc).__name__}") from None
    if not value:
        raise SecretError(f"{path}: key file is empty")
    return Secret(value)


def resolve_api_key(api_key_file: str | None, env: Mapping[str, str] | None = None) -> Secret:
    """Find the API key by the documented order. Raises SecretError saying where it looked."""
    own = env is None
    env = os.environ if env is None else env
    if env.get(ENV_API_KEY, "").strip():
        secret = Secret(env[ENV_API_KEY].strip())
        if own:
            forget_env(ENV_API_KEY)  # read once; no child or /proc reader finds it later
        return secret
    if api_key_file:
        return read_secret_file(api_key_file)
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir and (Path(cred_dir) / CREDENTIAL_NAME).exists():
        # systemd owns the credentials directory and its modes; no mode check there.
        return read_secret_file(Path(cred_dir) / CREDENTIAL_NAME, check_mode=False)
    raise SecretError(
        f"no Voice Live API key: set ${ENV_API_KEY}, voicelive.api_key_file, or systemd "
        f"LoadCredential={CREDENTIAL_NAME}:… (or use voicelive.auth = \"entra\")"
    )


PR_SET_DUMPABLE = 4


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no C library to speak of
        return None


def forget_env(name: str) -> None:
    """Remove ``name`` from the process environment and overwrite its value where the
    kernel shows it (``/proc/<pid>/environ`` reads the environment block the process was
    started with, which ``unsetenv`` alone leaves untouched)."""
    value = os.environ.get(name)
    if value is None:
        return
    libc = _libc()
    if libc is not None:
        libc.getenv.restype = ctypes.c_void_p
        address = libc.getenv(os.fsencode(name))
        if address:
            size = len(os.fsencode(value))
            ctypes.memset(address, ord("x"), size)  # same length: the block stays well-formed
    del os.environ[name]


def make_undumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)``: no core dump, and ``/proc/<pid>/environ``, ``mem`` and
    ptrace are closed even to processes of the same user. True when it took effect."""
    libc = _libc()
    if libc is None:  # pragma: no cover
        return False
    return libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0


class RedactingFilter(logging.Filter):
    """Replaces registered secret values in log records (message, args, exception text)."""

    def __init__(self) -> None:
        super().__init__()
        self._values: set[str] = set()

    def add(self, secret: Secret | str) -> None:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if len(value) >= 4:  # masking very short strings would mangle ordinary text
            self._values.add(value)

    def discard(self, secret: Secret | str) -> None:
        """Stop masking a secret that is no longer in use (an expired or replaced token)."""
        self._values.discard(secret.reveal() if isinstance(secret, Secret) else secret)

    def __len__(self) -> int:
        return len(self._values)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._values:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True

    def redact(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``***``."""
        for value in self._values:
            text = text.replace(value, MASK)
        return text


#: The process-wide filter; :func:`protect` registers secrets with it.
REDACTOR = RedactingFilter()


def protect(secret: Secret | str) -> None:
    """Register a secret for redaction and make sure the root handlers carry the filter."""
    REDACTOR.add(secret)
    filter_root_handlers()


def forget(secret: Secret | str) -> None:
    """Unregister a secret that is no longer used (see :meth:`RedactingFilter.discard`)."""
    REDACTOR.discard(secret)


def filter_root_handlers() -> None:
    """Give every handler of the root logger :data:`REDACTOR` (once; safe to call again)."""
    for handler in logging.getLogger().handlers:
        if REDACTOR not in handler.filters:
            handler.addFilter(REDACTOR)
