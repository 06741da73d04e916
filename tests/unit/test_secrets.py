"""The API key: where it comes from, and that it never shows."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

from edgevoice.secrets import (
    REDACTOR,
    Secret,
    SecretError,
    protect,
    read_secret_file,
    resolve_api_key,
)

KEY = "sk-live-5f1c0ffee0ddba11"


def test_secret_never_prints_itself() -> None:
    s = Secret(KEY)
    for text in (str(s), repr(s), f"{s}", f"{s!r}", format(s), str([s]), str({"k": s})):
        assert KEY not in text
    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert s.reveal() == KEY


def test_order_env_then_file_then_systemd_credential(tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("from-file\n")
    key_file.chmod(0o600)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "voicelive-api-key").write_text("from-systemd")
    env = {"VOICELIVE_API_KEY": "from-env", "CREDENTIALS_DIRECTORY": str(creds)}
    assert resolve_api_key(str(key_file), env).reveal() == "from-env"
    del env["VOICELIVE_API_KEY"]
    assert resolve_api_key(str(key_file), env).reveal() == "from-file"
    assert resolve_api_key(None, env).reveal() == "from-systemd"
    with pytest.raises(SecretError, match=r"no Voice Live API key: set \$VOICELIVE_API_KEY"):
        resolve_api_key(None, {})


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY)
    key_file.chmod(mode)
    with pytest.raises(SecretError) as info:
        read_secret_file(key_file)
    message = str(info.value)
    assert str(key_file) in message and f"{mode:04o}" in message and "chmod 600" in message
    assert KEY not in message


def test_missing_and_empty_key_files(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="key file not found"):
        read_secret_file(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(SecretError, match="key file is empty"):
        read_secret_file(empty)


def test_logs_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.handler.addFilter(REDACTOR)
    protect(Secret(KEY))
    log = logging.getLogger("edgevoice.test")
    log.warning("connecting with %s", KEY)
    log.warning(f"header api-key: {KEY}")
    try:
        raise RuntimeError(f"server said bad key {KEY}")
    except RuntimeError:
        log.exception("failed")
    assert KEY not in caplog.text
    assert caplog.text.count("***") >= 3
