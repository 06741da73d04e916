"""The Voice Live link's protocol side: what the connection delivers and how its URL is built.

Pure: no sockets, no asyncio, no clocks read here (time is an argument), so the conversation
core can import the link's events without loading a WebSocket library.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from edgevoice.config import VoiceLiveConfig
from edgevoice.wire import events as ev

REALTIME_PATH = "/voice-live/realtime"


class LinkState(enum.Enum):
    IDLE = "idle"  # not wanted: no connection
    CONNECTING = "connecting"
    CONFIGURING = "configuring"  # socket open, session not ready yet
    READY = "ready"
    BACKOFF = "backoff"
    AUTH_FAILED = "auth_failed"
    CLOSED = "closed"


@dataclass(frozen=True)
class LinkUp:
    """The session is ready (after session.updated and the context replay). ``reconnected``
    is False only for the first ready session of this link."""

    reconnected: bool


@dataclass(frozen=True)
class LinkDown:
    """The connection ended or could not be made; ``retry_in`` is None when not retrying."""

    reason: str
    retry_in: float | None
    t: float


@dataclass(frozen=True)
class TurnAbandoned:
    """The current user turn's audio could not be kept (link down too long): it was dropped
    as a whole. ``dropped_ms`` says how much audio that was."""

    reason: str
    dropped_ms: float
    t: float


@dataclass(frozen=True)
class ServiceError:
    """An ``error`` event, with the type of the client event that caused it (if known)."""

    event: ev.ErrorEvent
    caused_by: str | None
    benign: bool

    @property
    def message(self) -> str:
        return self.event.error.message


LinkEvent = LinkUp | LinkDown | TurnAbandoned | ServiceError
Inbound = ev.ServerEvent | LinkEvent


def build_url(cfg: VoiceLiveConfig, agent_token: str | None = None) -> str:
    """``wss://host/…/voice-live/realtime?api-version=…&model=…`` from the config.

    ``https``/``http`` endpoints become ``wss``/``ws``; the realtime path is appended to any
    path already there (as the official SDK does); agent sessions get agent parameters
    instead of ``model``; ``extra_query`` comes last and may override nothing secret."""
    parts = urlsplit(cfg.endpoint)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith(REALTIME_PATH):
        path += REALTIME_PATH
    query: dict[str, str] = {"api-version": cfg.api_version}
    if cfg.agent is not None:
        if cfg.agent.id:
            query["agent-id"] = cfg.agent.id
        else:
            query["agent-name"] = cfg.agent.name or ""
        query["agent-project-name"] = cfg.agent.project_name
        if cfg.agent.version:
            query["agent-version"] = cfg.agent.version
        if agent_token:
            query["agent-access-token"] = agent_token
    elif cfg.model:
        query["model"] = cfg.model
    query.update(cfg.extra_query)
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def redact_url(url: str) -> str:
    """The URL with any credential-bearing query value masked, for logs."""
    parts = urlsplit(url)
    kept = []
    for pair in parts.query.split("&"):
        key = pair.split("=", 1)[0]
        kept.append(f"{key}=***" if key in ("agent-access-token", "api-key") else pair)
    return urlunsplit(parts._replace(query="&".join(kept)))
