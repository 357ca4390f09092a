"""One settings object for the whole service, read from `SIGNBRIDGE_*` environment variables.

Secrets are `SecretStr` so they never show up in logs or reprs. Outside development the
service refuses to start with the built-in development secrets (see `check_production`).
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-only-signbridge-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_", env_file=None, extra="ignore")

    environment: str = "development"
    data_dir: Path = Path(".data")
    public_url: str = "http://127.0.0.1:8000"
    database_url: str = ""  # empty: SQLite under data_dir

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "signbridge"
    # Open flows kept in the worker's sticky cache; beyond it the least recent is evicted and
    # replayed from its (short) history when its next event arrives. Bounds worker memory.
    worker_max_cached_workflows: int = 1000

    # Generic webhook IM (a company's own chat tool).
    webhook_secret: SecretStr = SecretStr(DEV_SECRET)
    webhook_outbound_url: str = ""
    webhook_tolerance_seconds: int = 300

    # REST API bearer keys (comma separated) and chat user ids that act as operators.
    api_keys: str = ""
    operators: str = ""

    bot_name: str = "SignBridge"  # how people @-mention the bot in chat commands
    default_provider: str = "local"
    max_document_bytes: int = 20 * 1024 * 1024
    fetch_timeout_seconds: float = 30.0

    # Defaults for each request; a request may override them.
    deadline: timedelta = timedelta(days=7)
    reminder_first_after: timedelta = timedelta(hours=24)
    reminder_every: timedelta = timedelta(hours=24)
    reminder_max: int = 3
    poll_after: timedelta = timedelta(hours=1)

    # How long a step retries before the flow shows STUCK (it keeps retrying, less often).
    step_retry_window: timedelta = timedelta(minutes=30)
    # After a chat message whose delivery is unknown (no answer in time): wait this long (doubling
    # per attempt) before sending it again with the same idempotency key.
    resend_pause: timedelta = timedelta(minutes=1)

    # Key used to derive signing-link tokens' MACs and signed download URLs.
    link_secret: SecretStr = SecretStr(DEV_SECRET)
    download_url_ttl: timedelta = timedelta(days=7)

    stamp_font: Path | None = Field(default=None, description="TTF/OTF used for visible stamps (needs CJK)")

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def operator_list(self) -> list[str]:
        return [k.strip() for k in self.operators.split(",") if k.strip()]

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'signbridge.db').resolve()}"

    card_language: str = ""  # "zh" or "en" for every platform; empty: per platform

    def language_for(self, platform: str) -> Literal["zh", "en"]:
        """Chinese on the Chinese platforms and the webhook IM, English on Slack, unless configured."""
        if self.card_language in ("zh", "en"):
            return self.card_language  # type: ignore[return-value]
        return "en" if platform == "slack" else "zh"

    def check_production(self) -> None:
        """Refuse to run outside development with secrets anyone can read in this repository."""
        if self.environment == "development":
            return
        for name in ("webhook_secret", "link_secret"):
            if getattr(self, name).get_secret_value() == DEV_SECRET:
                raise ValueError(f"SIGNBRIDGE_{name.upper()} must be set outside development")


@lru_cache
def get_settings() -> Settings:
    return Settings()
