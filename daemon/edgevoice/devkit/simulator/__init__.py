"""The loopback Voice Live simulator (``edgevoice simulator``): a WebSocket server on 127.0.0.1
that speaks the 2025-10-01 protocol, driven by a :class:`~.script.Script`.

Modules: :mod:`.server` (listener, handshake, faults, records), :mod:`.connection` (the
protocol of one connection), :mod:`.session` (the session object and ``session.update``),
:mod:`.protocol` (the client events' field tables, strict mode), :mod:`.speech` (reply voice
and VAD), :mod:`.script` (the script format)."""

from edgevoice.devkit.simulator.server import AttemptRecord, ConnectionRecord, SentError, Simulator

__all__ = ["AttemptRecord", "ConnectionRecord", "SentError", "Simulator"]
