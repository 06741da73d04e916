"""Connecting to an MQTT broker as configured (:class:`~edgevoice.config.tools.MqttBroker`):
the one place that turns the broker's TLS files and password file into aiomqtt options, for
MQTT tools and for Home Assistant alike.

Guarantees: the password is read from its file at each call (so a rotated password is
picked up), refused when the file is group- or world-accessible, and only ever handed to
aiomqtt, never logged or put in an exception; a client key file is refused on the same
grounds. Every problem is a :class:`BrokerSetupError` with one line naming the file.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Any

from edgevoice.config.tools import MqttBroker
from edgevoice.secrets import SecretError, read_secret_file

__all__ = ["BrokerSetupError", "broker_label", "client_options", "tls_context"]


class BrokerSetupError(Exception):
    """The broker's TLS files or password cannot be used (one line, naming the file)."""


def broker_label(broker: MqttBroker) -> str:
    """``MQTT broker HOST:PORT`` for messages (never the user name or password)."""
    host = f"[{broker.host}]" if ":" in broker.host else broker.host
    return f"MQTT broker {host}:{broker.port}"


def tls_context(broker: MqttBroker) -> ssl.SSLContext:
    """The broker's TLS: the system's CAs or ``ca_file``; the client certificate if set.
    Blocking (reads files)."""
    try:
        context = ssl.create_default_context(cafile=broker.ca_file)
        if broker.cert_file:
            if broker.key_file:
                st = os.stat(broker.key_file)
                if st.st_mode & 0o077:
                    raise BrokerSetupError(
                        f"MQTT key_file {broker.key_file} is accessible by group or others "
                        f"(mode {st.st_mode & 0o7777:04o}); run: chmod 600 {broker.key_file}")
            context.load_cert_chain(broker.cert_file, broker.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerSetupError(f"MQTT TLS files: {type(exc).__name__}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
    return context


async def client_options(broker: MqttBroker) -> dict[str, Any]:
    """``hostname``, ``port``, ``username``, ``password`` and ``tls_context`` for
    ``aiomqtt.Client``; the files are read off the loop. Raises BrokerSetupError."""
    password = None
    if broker.password_file:
        try:
            # Refused when group- or world-accessible, like voicelive.api_key_file.
            secret = await asyncio.to_thread(read_secret_file, broker.password_file)
        except SecretError as exc:
            raise BrokerSetupError(f"MQTT password: {exc}") from None
        password = secret.reveal()
    tls = await asyncio.to_thread(tls_context, broker) if broker.tls else None
    return {"hostname": broker.host, "port": broker.port, "username": broker.username,
            "password": password, "tls_context": tls}
