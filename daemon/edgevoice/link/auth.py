"""Authentication for the Voice Live WebSocket upgrade.

- :class:`ApiKeyAuth` sends ``api-key: <key>``.
- :class:`EntraAuth` asks an azure-identity async credential (``DefaultAzureCredential`` by
  default) for a token before *every* (re)connect and sends ``Authorization: Bearer``. A token
  that expires within :data:`MIN_TOKEN_LIFETIME_S` is refused, so no expired token is sent.

Both also provide tokens for agent sessions (``agent-access-token``), and neither ever puts a
secret into an exception message or a log line.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from edgevoice.config import VoiceLiveConfig
from edgevoice.secrets import Secret, forget, protect, resolve_api_key

MIN_TOKEN_LIFETIME_S = 120.0


class AuthError(Exception):
    """Credentials could not be obtained (not an HTTP rejection)."""


class Auth(Protocol):
    async def headers(self) -> dict[str, str]: ...

    async def token(self, scope: str) -> Secret: ...

    async def close(self) -> None: ...


class TokenCredential(Protocol):
    """The async azure-identity credential interface (``get_token``)."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...


class ApiKeyAuth:
    def __init__(self, key: Secret) -> None:
        self._key = key
        protect(key)

    async def headers(self) -> dict[str, str]:
        return {"api-key": self._key.reveal()}

    async def token(self, scope: str) -> Secret:
        raise AuthError("agent sessions need Microsoft Entra auth (voicelive.auth = \"entra\")")

    async def close(self) -> None:
        return None


class EntraAuth:
    """Bearer tokens from an azure-identity async credential, fetched per connect.

    Without ``credential`` a ``DefaultAzureCredential`` is made, and :meth:`close` closes it;
    a credential passed in belongs to the caller and is left open."""

    def __init__(self, scope: str, credential: TokenCredential | None = None) -> None:
        self._owns = credential is None
        if credential is None:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential()
        self._credential = credential
        self.scope = scope
        # The tokens handed out and still masked in logs, by scope: a new token of a scope
        # replaces the old one (in use no more), so the redactor holds only live tokens.
        self._live: dict[str, Secret] = {}

    async def token(self, scope: str) -> Secret:
        try:
            access = await self._credential.get_token(scope)
        except Exception as exc:  # azure-identity raises many types; never leak their details
            raise AuthError(
                f"Microsoft Entra token for {scope} failed: {type(exc).__name__}"
            ) from None
        remaining = float(access.expires_on) - time.time()
        if remaining < MIN_TOKEN_LIFETIME_S:
            raise AuthError(
                f"Microsoft Entra token for {scope} expires in {remaining:.0f} s, refusing it"
            )
        secret = Secret(access.token)
        old = self._live.get(scope)
        if old is not None and old != secret:
            forget(old)
        self._live[scope] = secret
        protect(secret)
        return secret

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {(await self.token(self.scope)).reveal()}"}

    async def close(self) -> None:
        for secret in self._live.values():
            forget(secret)
        self._live.clear()
        if self._owns:
            close = getattr(self._credential, "close", None)
            if close is not None:
                await close()


def make_auth(cfg: VoiceLiveConfig, api_key: Secret | None = None) -> Auth:
    """The configured auth: Entra, or the API key (given, else resolved from its sources).
    Raises SecretError when no API key can be found."""
    if cfg.auth == "entra":
        return EntraAuth(cfg.credential_scope)
    return ApiKeyAuth(api_key or resolve_api_key(cfg.api_key_file))
