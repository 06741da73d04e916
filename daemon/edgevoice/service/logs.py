"""Logging: to the systemd journal with structured fields, or to stderr; secrets never.

Where records go (:func:`setup_logging`):

- **journal** when asked (``journal=True``) or, by default, when stderr already is the
  journal (systemd sets ``$JOURNAL_STREAM`` to the device and inode of the stream it gave the
  service; a process whose stderr was redirected elsewhere is not fooled). Each record is one
  journal entry with ``MESSAGE``, ``PRIORITY``, ``SYSLOG_IDENTIFIER=edgevoice``, ``LOGGER``,
  ``CODE_FILE``/``CODE_LINE``/``CODE_FUNC``, ``THREAD_NAME``, ``EXCEPTION_TEXT`` when there
  is a traceback, and one ``EDGEVOICE_<NAME>`` field per ``extra=`` value: ``log.info("…",
  extra={"state": "idle", "turn": 3, "latency_ms": 412.5})`` gives ``EDGEVOICE_STATE=idle``,
  ``EDGEVOICE_TURN=3``, ``EDGEVOICE_LATENCY_MS=412.5``. Names are upper-cased with anything
  but ``[A-Z0-9_]`` turned into ``_``; values that are not plain scalars (or lists of them)
  are left out. ``journalctl -u edgevoice EDGEVOICE_TURN=3`` then finds one turn.
- **stderr** otherwise, one compact line per record: ``12:01:05.123 INFO edgevoice.link:
  connected state=ready turn=3``.

Forged lines: control characters (newlines, escape sequences…) in a message and in every
extra field are escaped (``\\n``, ``\\x1b``), so text from the model or the user — a tool's
arguments, a transcript — can never start a line of its own in either target; only a
traceback keeps its lines.

Without systemd-python (the ``systemd`` extra, which needs libsystemd): records go to stderr
(which systemd still captures into the journal, as plain lines without the fields), and the
first call that wanted the journal says so once, at warning level. sd_notify keeps working
through :mod:`edgevoice.service.notify`'s own socket code.

Secrets: both handlers carry :data:`edgevoice.secrets.REDACTOR`, and every text that leaves
through them — the message, the traceback, each extra field — is redacted again on the way
out. The stock ``JournalHandler.emit`` is not used because it also sends every attribute of
the record (``record.__dict__``: the unformatted ``args`` and the ``exc_info`` exception),
which would carry a secret past the redactor.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from edgevoice.secrets import REDACTOR, Secret, filter_root_handlers
from edgevoice.util import escape_controls

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}

IDENTIFIER = "edgevoice"
FIELD_PREFIX = "EDGEVOICE_"
_FIELD_MAX = 64  # journald's limit on field names

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}

try:
    from systemd.journal import JournalHandler as _JournalHandler
    from systemd.journal import send as _journal_send
except ImportError:  # pragma: no cover - only where systemd-python is not installed
    _JournalHandler = None  # type: ignore[assignment,misc]
    _journal_send = None

#: What the first setup_logging that wanted the journal says when systemd-python is missing.
NO_JOURNAL = ("systemd-python is not installed: logging to stderr without journal fields "
              "(sd_notify still works); pip install 'edgevoice[systemd]' for them")
_said_no_journal = False


def field_name(key: str) -> str:
    """The journal field for an ``extra=`` key: ``latency_ms`` → ``EDGEVOICE_LATENCY_MS``."""
    return (FIELD_PREFIX + re.sub(r"[^A-Z0-9_]", "_", key.upper()))[:_FIELD_MAX]


def _scalar(value: Any) -> str | None:
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 3))
    if isinstance(value, str | int):
        return str(value)
    return None


def _field_value(value: Any) -> str | None:
    """The text of an extra value: scalars and lists of scalars; None for anything else."""
    if isinstance(value, list | tuple | set | frozenset):
        items = [_scalar(v) for v in value]
        if any(i is None for i in items):
            return None
        return ",".join(i for i in items if i is not None)
    if isinstance(value, Secret):
        return str(value)  # masks itself
    return _scalar(value)


def extra_fields(record: logging.LogRecord) -> dict[str, str]:
    """The record's ``extra=`` values as redacted journal fields (see the module docstring)."""
    fields: dict[str, str] = {}
    for key, value in vars(record).items():
        if key in _RECORD_ATTRS or key.startswith("_"):
            continue
        text = _field_value(value)
        if text is not None:
            fields[field_name(key)] = escape_controls(REDACTOR.redact(text))
    return fields


def _format_escaped(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """``formatter.format(record)`` with control characters of the message escaped: a
    message carrying model or user text stays one line (a traceback after it keeps its own
    lines). The record is left as it was, for other handlers."""
    saved = record.msg, record.args
    try:
        record.msg, record.args = escape_controls(record.getMessage()), None
        return formatter.format(record)
    finally:
        record.msg, record.args = saved


if _JournalHandler is not None:

    class EdgevoiceJournalHandler(_JournalHandler):
        """A JournalHandler that sends exactly the documented fields, each redacted."""

        def emit(self, record: logging.LogRecord) -> None:
            try:
                message = REDACTOR.redact(_format_escaped(self.formatter or
                                                          logging.Formatter(), record))
                fields: dict[str, Any] = dict(self._extra)
                fields.update(extra_fields(record))
                fields.update(
                    PRIORITY=str(self.map_priority(record.levelno)),
                    LOGGER=record.name,
                    THREAD_NAME=record.threadName or "",
                )
                if record.exc_text:
                    fields["EXCEPTION_TEXT"] = REDACTOR.redact(record.exc_text)
                self.send(message, CODE_FILE=record.pathname, CODE_LINE=record.lineno,
                          CODE_FUNC=record.funcName, **fields)
            except Exception:
                self.handleError(record)

else:  # pragma: no cover
    EdgevoiceJournalHandler = None  # type: ignore[assignment,misc]


class _Plain(logging.Formatter):
    """The plain formatting of a :class:`CompactFormatter` (without its extras)."""

    def __init__(self, outer: logging.Formatter) -> None:
        super().__init__()
        self._outer = outer

    def format(self, record: logging.LogRecord) -> str:
        return logging.Formatter.format(self._outer, record)


class CompactFormatter(logging.Formatter):
    """``12:01:05.123 INFO edgevoice.link: message key=value …`` (extras redacted)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%H:%M:%S", self.converter(record.created)) + \
            f".{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        text = _format_escaped(_Plain(self), record)
        extras = extra_fields(record)
        if extras:
            pairs = " ".join(f"{k[len(FIELD_PREFIX):].lower()}={v}" for k, v in extras.items())
            first, sep, rest = text.partition("\n")
            text = f"{first} {pairs}{sep}{rest}"
        return REDACTOR.redact(text)


def journal_stream_is_stderr(env: Mapping[str, str] | None = None,
                             stream: TextIO | None = None) -> bool:
    """True when ``$JOURNAL_STREAM`` (``DEVICE:INODE``) names ``stream`` (default stderr):
    systemd connected it to the journal."""
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    stream = sys.stderr if stream is None else stream
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def setup_logging(level: str = "info", *, journal: bool | None = None,
                  identifier: str = IDENTIFIER) -> logging.Handler:
    """Send log records at ``level`` and above to the journal or to stderr; returns the
    handler. Idempotent: a second call changes the level (a reload) and the target if it
    differs, and never adds a second handler.

    level: ``debug`` | ``info`` | ``warning`` | ``error`` (``service.log_level``).
    journal: True: the journal (falls back to stderr without systemd-python); False: stderr;
        None: the journal when stderr is connected to it (see the module docstring).
    identifier: ``SYSLOG_IDENTIFIER`` of journal entries.
    """
    root = logging.getLogger()
    root.setLevel(LEVELS.get(level, logging.INFO))
    if journal is None:
        journal = journal_stream_is_stderr()
    want_journal = bool(journal) and EdgevoiceJournalHandler is not None

    ours = [h for h in root.handlers if getattr(h, "_edgevoice", False)]
    handler: logging.Handler | None = None
    for h in ours:
        is_journal = EdgevoiceJournalHandler is not None and isinstance(h, EdgevoiceJournalHandler)
        if handler is None and is_journal == want_journal and \
                getattr(h, "_edgevoice_identifier", identifier) == identifier:
            handler = h
        else:
            root.removeHandler(h)
            h.close()
    if handler is None:
        if want_journal:
            handler = EdgevoiceJournalHandler(SYSLOG_IDENTIFIER=identifier)
            handler.setFormatter(logging.Formatter("%(message)s"))
        else:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(CompactFormatter())
        handler._edgevoice = True  # type: ignore[attr-defined]
        handler._edgevoice_identifier = identifier  # type: ignore[attr-defined]
        root.addHandler(handler)
    filter_root_handlers()
    global _said_no_journal
    if journal and not want_journal and not _said_no_journal:
        _said_no_journal = True
        logging.getLogger("edgevoice.service").warning(NO_JOURNAL)
    # websockets logs every frame at debug; keep it at info unless asked.
    logging.getLogger("websockets").setLevel(max(root.level, logging.INFO))
    return handler
