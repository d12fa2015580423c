"""Secrets and endpoints from the environment, with the ecosystem's own names.

Precedence, highest first, for each secret:

1. the variable itself (``PARALLEL_API_KEY``, ``TRIGGER_SECRET_KEY``);
2. a file named by ``<NAME>_FILE`` (Docker and Kubernetes secrets);
3. a systemd credential, ``$CREDENTIALS_DIRECTORY/parallel-api-key`` or
   ``.../trigger-secret-key`` (``LoadCredential=``).

Base URLs come from ``PARALLEL_BASE_URL`` and ``TRIGGER_API_URL``; the YAML file's
``sources.*.base_url`` is used when the variable is not set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from watcher.config.base import ApiVersion
from watcher.config.loader import ConfigError
from watcher.config.operations import ShardConfig, split_listen
from watcher.core.sharding import parse_shard

if TYPE_CHECKING:
    from watcher.config.model import WatcherConfig

__all__ = ["DEFAULT_PARALLEL_URL", "DEFAULT_TRIGGER_URL", "SecretFileError", "Settings"]

DEFAULT_PARALLEL_URL = "https://api.parallel.ai"
DEFAULT_TRIGGER_URL = "https://api.trigger.dev"

_SECRETS = {
    "parallel_api_key": ("PARALLEL_API_KEY", "parallel-api-key"),
    "trigger_secret_key": ("TRIGGER_SECRET_KEY", "trigger-secret-key"),
}
_MAX_SECRET = 64 * 1024


class SecretFileError(ValueError):
    """A ``*_FILE`` or credential file named in the environment cannot be read."""


def _read_secret(path: Path, origin: str) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_SECRET + 1)
    except OSError as exc:
        raise SecretFileError(f"{origin}: cannot read {str(path)!r}: {exc.strerror}") from None
    if len(data) > _MAX_SECRET:
        raise SecretFileError(f"{origin}: {str(path)!r} is larger than {_MAX_SECRET} bytes")
    value = data.decode("utf-8", errors="strict").strip()
    if not value:
        raise SecretFileError(f"{origin}: {str(path)!r} is empty")
    return value


class _SecretFiles(PydanticBaseSettingsSource):
    """``<NAME>_FILE`` variables, then systemd's ``$CREDENTIALS_DIRECTORY``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name not in _SECRETS:
            return None, field_name, False
        env_name, credential = _SECRETS[field_name]
        file_var = os.environ.get(f"{env_name}_FILE")
        if file_var:
            return _read_secret(Path(file_var), f"{env_name}_FILE"), field_name, False
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if cred_dir:
            path = Path(cred_dir) / credential
            if path.is_file():
                return _read_secret(path, "CREDENTIALS_DIRECTORY"), field_name, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


class Settings(BaseSettings):
    """Environment settings. Secrets are ``SecretStr``: their repr is masked."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, frozen=True)

    parallel_api_key: SecretStr | None = None
    trigger_secret_key: SecretStr | None = None
    parallel_base_url: str | None = None
    trigger_api_url: str | None = None
    trigger_api_version: ApiVersion | None = None
    watcher_config: Path | None = None
    watcher_state_file: Path | None = None
    """Overrides the file's ``state_file`` (the systemd unit points it at ``StateDirectory``)."""
    watcher_http_listen: str | None = None
    """Overrides ``http.listen`` (the container image listens on ``0.0.0.0:9464``)."""
    watcher_shard: str | None = None
    """``INDEX/COUNT``; overrides the file's ``shard``."""
    watcher_api_token: SecretStr | None = None
    """Bearer token of the watch API; required when it listens beyond loopback."""

    @field_validator("watcher_http_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value:
            split_listen(value)
        return value or None

    @field_validator("watcher_shard")
    @classmethod
    def _shard(cls, value: str | None) -> str | None:
        if value:
            parse_shard(value)
        return value or None

    @field_validator("watcher_api_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < 16:
            raise ValueError("must be at least 16 characters (try: openssl rand -hex 32)")
        return value

    @field_validator("parallel_api_key", "trigger_secret_key")
    @classmethod
    def _usable_key(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty or damaged key would fail later as an illegal HTTP header value.
        if value is None:
            return None
        key = value.get_secret_value().strip()
        if not key:
            raise ValueError("is set but empty; set the key, or unset the variable")
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in key):
            raise ValueError("holds spaces or control characters; an API key is one token")
        return SecretStr(key)

    @field_validator("parallel_base_url", "trigger_api_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Init values, then the environment, then ``*_FILE`` and credentials."""
        return init_settings, env_settings, _SecretFiles(settings_cls)

    def apply_to(self, config: WatcherConfig) -> WatcherConfig:
        """The config with the environment's overrides of file settings applied."""
        update: dict[str, Any] = {}
        if self.watcher_state_file is not None:
            update["state_file"] = self.watcher_state_file
        if self.watcher_http_listen is not None:
            update["http"] = config.http.model_copy(update={"listen": self.watcher_http_listen})
        if self.watcher_shard is not None:
            shard = parse_shard(self.watcher_shard)
            if config.cluster is not None and shard.count > 1:
                raise ConfigError(
                    [
                        "environment WATCHER_SHARD: with cluster:, the cluster assigns the "
                        "watches to its live members itself; unset WATCHER_SHARD"
                    ]
                )
            update["shard"] = ShardConfig(index=shard.index, count=shard.count)
        return config.model_copy(update=update) if update else config

    def secret_values(self) -> list[str]:
        """Every secret value, so that logging can scrub them."""
        secrets = (self.parallel_api_key, self.trigger_secret_key, self.watcher_api_token)
        return [s.get_secret_value() for s in secrets if s]
