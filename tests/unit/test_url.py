"""Voice Live URLs: hosts, paths, agents, extra query, and what never reaches a log."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from edgevoice.config import VoiceLiveConfig
from edgevoice.link.client import build_url, redact_url


def parts(url: str) -> tuple[str, str, str, dict[str, str]]:
    p = urlsplit(url)
    return p.scheme, p.netloc, p.path, dict(parse_qsl(p.query))


def test_services_host_with_model() -> None:
    cfg = VoiceLiveConfig(endpoint="https://myres.services.ai.azure.com/", model="gpt-realtime")
    assert parts(build_url(cfg)) == ("wss", "myres.services.ai.azure.com", "/voice-live/realtime",
                                     {"api-version": "2025-10-01", "model": "gpt-realtime"})


def test_cognitiveservices_host_and_full_url_kept() -> None:
    cfg = VoiceLiveConfig(
        endpoint="wss://old.cognitiveservices.azure.com/voice-live/realtime", model="gpt-4o")
    scheme, host, path, query = parts(build_url(cfg))
    assert (scheme, host, path) == ("wss", "old.cognitiveservices.azure.com", "/voice-live/realtime")
    assert query["model"] == "gpt-4o"


def test_path_prefix_and_extra_query() -> None:
    cfg = VoiceLiveConfig(endpoint="ws://127.0.0.1:9000/proxy", extra_query={"foo": "bar"})
    scheme, _, path, query = parts(build_url(cfg))
    assert scheme == "ws" and path == "/proxy/voice-live/realtime"
    assert query == {"api-version": "2025-10-01", "model": "gpt-realtime", "foo": "bar"}


def test_agent_parameters_replace_model_and_token_is_redacted() -> None:
    cfg = VoiceLiveConfig.model_validate({
        "endpoint": "wss://r.services.ai.azure.com", "auth": "entra",
        "agent": {"id": "asst_123", "project_name": "proj"}})
    url = build_url(cfg, agent_token="eyJ-secret-token")
    query = parts(url)[3]
    assert query == {"api-version": "2025-10-01", "agent-id": "asst_123",
                     "agent-project-name": "proj", "agent-access-token": "eyJ-secret-token"}
    assert "eyJ-secret-token" not in redact_url(url)
    v2 = VoiceLiveConfig.model_validate({
        "endpoint": "wss://r.services.ai.azure.com", "auth": "entra",
        "agent": {"name": "helper", "project_name": "proj", "version": "3"}})
    q2 = parts(build_url(v2))[3]
    assert q2["agent-name"] == "helper" and q2["agent-version"] == "3" and "model" not in q2
