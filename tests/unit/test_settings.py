from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from watcher.config.settings import SecretFileError, Settings

VARS = [
    "PARALLEL_API_KEY",
    "PARALLEL_API_KEY_FILE",
    "TRIGGER_SECRET_KEY",
    "TRIGGER_SECRET_KEY_FILE",
    "CREDENTIALS_DIRECTORY",
    "PARALLEL_BASE_URL",
    "TRIGGER_API_URL",
    "WATCHER_CONFIG",
    "WATCHER_STATE_FILE",
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in VARS:
        monkeypatch.delenv(var, raising=False)


def test_plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLEL_API_KEY", "pk-123")
    monkeypatch.setenv("TRIGGER_SECRET_KEY", "tr_prod_456")
    monkeypatch.setenv("PARALLEL_BASE_URL", "http://127.0.0.1:9/")
    s = Settings()
    assert s.parallel_api_key is not None
    assert s.parallel_api_key.get_secret_value() == "pk-123"
    assert s.parallel_base_url == "http://127.0.0.1:9"
    assert "pk-123" not in repr(s)
    assert sorted(s.secret_values()) == ["pk-123", "tr_prod_456"]


def test_file_variants(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "pk").write_text("pk-from-file\n")
    monkeypatch.setenv("PARALLEL_API_KEY_FILE", str(tmp_path / "pk"))
    s = Settings()
    assert s.parallel_api_key is not None
    assert s.parallel_api_key.get_secret_value() == "pk-from-file"


def test_systemd_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "parallel-api-key").write_text("pk-cred")
    (tmp_path / "trigger-secret-key").write_text("tr-cred")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    s = Settings()
    assert s.secret_values() == ["pk-cred", "tr-cred"]


def test_precedence_env_then_file_then_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "parallel-api-key").write_text("from-cred")
    (tmp_path / "file").write_text("from-file")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("PARALLEL_API_KEY_FILE", str(tmp_path / "file"))
    assert Settings().secret_values() == ["from-file"]
    monkeypatch.setenv("PARALLEL_API_KEY", "from-env")
    assert Settings().secret_values() == ["from-env"]


def test_unreadable_or_empty_secret_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRIGGER_SECRET_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(SecretFileError, match="TRIGGER_SECRET_KEY_FILE"):
        Settings()
    (tmp_path / "empty").write_text("  \n")
    monkeypatch.setenv("TRIGGER_SECRET_KEY_FILE", str(tmp_path / "empty"))
    with pytest.raises(SecretFileError, match="empty"):
        Settings()


def test_bad_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGER_API_URL", "ftp://x")
    with pytest.raises(ValidationError):
        Settings()


def test_state_file_from_the_environment_overrides_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from watcher.config.loader import parse_config

    config = parse_config(f"state_file: {tmp_path / 'from-file.db'}\n")
    assert Settings().apply_to(config).state_file == tmp_path / "from-file.db"
    monkeypatch.setenv("WATCHER_STATE_FILE", "/var/lib/run-watcher/state.db")
    assert Settings().apply_to(config).state_file == Path("/var/lib/run-watcher/state.db")
