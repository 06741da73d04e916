"""Logging setup: stderr with a redacting filter (journald comes with the service work)."""

from __future__ import annotations

import logging
import sys

from edgevoice.secrets import REDACTOR

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def setup_logging(level: str = "info") -> None:
    """Log to stderr at ``level``; every handler carries the secret redactor. Idempotent."""
    root = logging.getLogger()
    root.setLevel(LEVELS.get(level, logging.INFO))
    if not any(getattr(h, "_edgevoice", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._edgevoice = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for handler in root.handlers:
        if REDACTOR not in handler.filters:
            handler.addFilter(REDACTOR)
    # websockets logs every frame at debug; keep it at info unless asked.
    logging.getLogger("websockets").setLevel(max(root.level, logging.INFO))
