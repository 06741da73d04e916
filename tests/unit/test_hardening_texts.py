"""What leaves the daemon as text: log lines that cannot be forged, transcripts that can be
kept out, secrets in URLs masked, only live tokens in the redactor, the status's tool calls,
a chime that must be a WAV."""

from __future__ import annotations

import asyncio
import logging
import wave
from pathlib import Path
from typing import Any

import pytest

from edgevoice.config import Config, ConfigError, VoiceLiveConfig, parse_config
from edgevoice.conversation.core import Telemetry, TelemetryName
from edgevoice.daemon import load_earcon, telemetry_details
from edgevoice.link.auth import EntraAuth
from edgevoice.link.client import build_url, redact_url
from edgevoice.secrets import REDACTOR
from edgevoice.service.logs import CompactFormatter
from edgevoice.service.status import format_status


def record(msg: str, *args: object, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("edgevoice.tools", logging.WARNING, __file__, 1, msg, args, None)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_stderr_lines_cannot_be_forged_by_model_or_user_text() -> None:
    forged = "x\n12:00:00.000 INFO edgevoice.tools: tool unlock [c9]: ok\r\x1b[2K\u2028"
    line = CompactFormatter().format(record("tool %s failed", forged, tool=forged,
                                            arguments='{"a":"b\\nc"}'))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "\\n12:00:00.000" in line and "\\x1b[2K" in line and "\\u2028" in line
    assert "tool=x\\n12:00" in line


def test_transcripts_can_be_kept_out_of_the_log() -> None:
    said = Telemetry(TelemetryName.USER_SAID, 1.0, {"text": "open the garage"})
    assert telemetry_details(said) == "text=open the garage"
    assert telemetry_details(said, transcripts=False) == "text=(15 chars)"
    assert Config().service.log_transcripts is True
    assert parse_config("[service]\nlog_transcripts = false\n", "x.toml").service \
        .log_transcripts is False


@pytest.mark.parametrize("name", ["agent_access_token", "agent-access-token", "sig", "api_key",
                                  "X-Auth-Token", "sas_token", "client_secret", "password",
                                  "subscription-key", "access_token", "Authorization"])
def test_secret_query_parameters_are_refused_and_masked(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f'[voicelive]\nextra_query = {{ "{name}" = "s3cr3t-v4lue" }}\n', "x.toml")
    assert any(f"voicelive.extra_query: '{name}' is a secret" in e for e in info.value.errors)
    # Masked in any URL that is logged, even one built around the config check.
    cfg = VoiceLiveConfig.model_construct(**{**VoiceLiveConfig().__dict__,
                                             "extra_query": {name: "s3cr3t-v4lue", "a": "b"}})
    url = build_url(cfg)
    assert "s3cr3t-v4lue" in url and "s3cr3t-v4lue" not in redact_url(url)
    assert "a=b" in redact_url(url) and "api-version=" in redact_url(url)


def test_ordinary_query_parameters_pass() -> None:
    cfg = parse_config('[voicelive]\nextra_query = { "deployment" = "x", "region" = "y" }\n',
                       "x.toml")
    assert redact_url(build_url(cfg.voicelive)).endswith("deployment=x&region=y")


class _Token:
    def __init__(self, token: str) -> None:
        self.token, self.expires_on = token, 4e9


class _Credential:
    def __init__(self) -> None:
        self.n = 0

    async def get_token(self, *scopes: str, **kw: Any) -> _Token:
        self.n += 1
        return _Token(f"entra-token-number-{self.n:04d}")


def test_the_redactor_keeps_only_live_tokens() -> None:
    before = len(REDACTOR)
    auth = EntraAuth("scope/.default", _Credential())

    async def go() -> None:
        for _ in range(50):  # 50 reconnects
            await auth.headers()
        assert len(REDACTOR) == before + 1  # only the token in use
        assert REDACTOR.redact("entra-token-number-0050") == "***"
        assert REDACTOR.redact("entra-token-number-0049") == "entra-token-number-0049"
        await auth.close()

    asyncio.run(go())
    assert len(REDACTOR) == before


def test_status_shows_tool_arguments_shortened_and_the_confirmation() -> None:
    text = format_status({"state": "idle", "tool_calls": [
        {"name": "unlock", "ok": True, "ms": 12.0, "at": 1.7e9, "outcome": "ok",
         "arguments": '{"door":"front","note":"' + "x" * 200 + '\\nforged"}',
         "confirmed_by": "user", "confirmed_at": "2024-11-21T15:40:01.200"}]})
    row = next(line for line in text.splitlines() if "unlock" in line)
    assert '{"door":"front","note":"xxx' in row and "…" in row and "forged" not in row
    assert "confirmed by user at 15:40:01" in row and len(row) < 160


def test_an_earcon_that_is_not_a_wav_is_one_check_config_line(tmp_path: Path) -> None:
    bad = tmp_path / "chime.wav"
    bad.write_bytes(b"ID3\x03\x00 not a wav at all" * 10)
    with pytest.raises(ConfigError) as info:
        parse_config(f'[conversation]\nearcon_file = "{bad}"\n', "x.toml")
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith(f"x.toml: conversation.earcon_file: {bad}: not a "
                                           f"PCM WAV file")
    eight_bit = tmp_path / "8bit.wav"
    with wave.open(str(eight_bit), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(16000)
        w.writeframes(b"\x80" * 160)
    with pytest.raises(ConfigError, match="must be 16-bit PCM WAV, got 8-bit"):
        parse_config(f'[conversation]\nearcon_file = "{eight_bit}"\n', "x.toml")
    # What a reload checks before it swaps: a ValueError (refused), never wave.Error (fatal).
    cfg = Config.model_construct(**{**Config().__dict__})
    cfg.conversation = cfg.conversation.model_construct(
        **{**cfg.conversation.__dict__, "earcon_file": str(bad)})
    with pytest.raises(ValueError, match="not a PCM WAV file"):
        load_earcon(cfg)
