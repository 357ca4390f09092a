"""One settings object for the whole service, read from `SIGNBRIDGE_*` environment variables.

Secrets are `SecretStr` so they never show up in logs or reprs. `SIGNBRIDGE_ENVIRONMENT`
defaults to `production`: a deployment that forgot to say otherwise gets the safe behaviour, and
refuses to start while a secret is missing or still the development default
(`check_production`). Developers' tools (`signbridge run`, the tests) say `development`
explicitly, and are warned while they use the development secrets.

Where settings come from, strongest first: the process environment, then `.env` in the project
folder (`load_env_file`, called by every `signbridge` command and the worker before any settings
class is read, so every `SIGNBRIDGE_*` class — the chat platforms' and providers' too — sees it),
then the defaults. The project folder is the checkout this code runs from (where `make run` runs),
or the current directory for an installed package; a relative `SIGNBRIDGE_DATA_DIR` is resolved
against it, so `signbridge identities list` finds the same database from any folder.
"""

from __future__ import annotations

import os
from datetime import timedelta, tzinfo
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from signbridge.core.models import Timing

DEV_SECRET = "dev-only-signbridge-secret-change-me"
DEVELOPMENT = "development"
# Every secret with a development default: what `check_production` refuses outside development.
SECRETS_WITH_DEV_DEFAULTS = ("webhook_secret", "link_secret")
PREFIX = "SIGNBRIDGE_"
# Where the development playground (the chat `signbridge run` brings) serves the files people drop.
PLAYGROUND_FILES_PATH = "/playground/files/"
# Which file `load_env_file` reads: unset means `<project folder>/.env`; empty means none (the tests).
ENV_FILE_VARIABLE = "SIGNBRIDGE_ENV_FILE"


def project_dir() -> Path:
    """The SignBridge checkout this code runs from; the current directory for an installed package."""
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


def env_file() -> Path | None:
    """The `.env` file every command reads (`SIGNBRIDGE_ENV_FILE` names another; empty: none)."""
    named = os.environ.get(ENV_FILE_VARIABLE)
    if named is None:
        return project_dir() / ".env"
    return project_dir() / named if named else None


def load_env_file() -> list[str]:
    """Put the `SIGNBRIDGE_*` settings of `.env` into this process's environment, where every
    settings class and every child process (`signbridge run`'s worker and API) reads them; a
    variable already set wins. The file is parsed by python-dotenv, the parser pydantic-settings
    uses for its own `env_file`. Returns the names it set."""
    path = env_file()
    if path is None or not path.is_file():
        return []
    loaded = [(k, v) for k, v in dotenv_values(path).items()
              if k.startswith(PREFIX) and k != ENV_FILE_VARIABLE and v is not None and k not in os.environ]
    os.environ.update(loaded)
    return [k for k, _ in loaded]


class InsecureSettings(SystemExit):
    """Raised at start-up outside development while a secret is missing or the development default.

    A `SystemExit`, so every entry point (API, worker, chat listener) stops with exit code 1 and
    this one line on stderr instead of a traceback."""


class Settings(BaseSettings, Timing):
    """Every `Timing` field is a setting too (`SIGNBRIDGE_DEADLINE`, `SIGNBRIDGE_REMINDER_MAX`, …,
    `SIGNBRIDGE_STEP_RETRY_WINDOW`: how long a step retries before the flow shows STUCK): what
    each new request starts with (`timing()`); a request may override single values."""

    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_", env_file=None, extra="ignore")

    environment: str = "production"
    data_dir: Path = Path(".data")
    public_url: str = "http://127.0.0.1:8000"
    database_url: str = ""  # empty: SQLite under data_dir
    # SQLite only: NORMAL (WAL) makes a commit no fsync; a power cut may lose the last commits but
    # never corrupts the file. FULL fsyncs every commit. Empty: NORMAL in development, FULL
    # otherwise (store.db.sqlite_synchronous reads it).
    sqlite_synchronous: Literal["", "NORMAL", "FULL"] = ""

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "signbridge"
    # Open flows kept in the worker's sticky cache; beyond it the least recent is evicted and
    # replayed from its (short) history when its next event arrives. Bounds worker memory.
    worker_max_cached_workflows: int = 1000
    # The built-in provider's events a live delivery missed are signalled again by each worker's
    # relay once they are this old; it looks this often and backs off per event (at most 5 min).
    delivery_relay_seconds: float = 5.0

    # Generic webhook IM (a company's own chat tool).
    webhook_secret: SecretStr = SecretStr(DEV_SECRET)
    webhook_outbound_url: str = ""
    webhook_tolerance_seconds: int = 300
    # How long an outbound call waits for the IM's answer. Long on purpose: a call that times out
    # after it arrived is sent again (same idempotency key, after `resend_pause`), so waiting for a
    # slow IM is what keeps each message a single POST.
    webhook_timeout_seconds: float = 30.0

    # REST API bearer keys (comma separated) and chat user ids that act as operators.
    api_keys: str = ""
    operators: str = ""

    bot_name: str = "SignBridge"  # how people @-mention the bot in chat commands
    default_provider: str = "local"
    max_document_bytes: int = 20 * 1024 * 1024
    max_seal_image_bytes: int = 1024 * 1024  # an organisation's uploaded seal image (PNG or JPEG)
    fetch_timeout_seconds: float = 30.0  # one document fetch, every redirect included

    # Where documents may be fetched from (comma separated). File URLs are untrusted input: only
    # these hosts are asked, and never at an internal address unless its network is listed in
    # `fetch_allow_networks` (CIDR, e.g. an on-premises IM at 10.0.0.0/8).
    webhook_file_hosts: str = ""  # empty: the host of webhook_outbound_url
    api_file_hosts: str = ""  # REST `file_url`; empty: REST callers must upload the file
    fetch_allow_networks: str = ""

    # After a chat message whose delivery is unknown (no answer in time): wait this long (doubling
    # per attempt) before sending it again with the same idempotency key.
    resend_pause: timedelta = timedelta(minutes=1)

    # Key used to derive signing-link tokens' MACs and signed download URLs.
    link_secret: SecretStr = SecretStr(DEV_SECRET)
    download_url_ttl: timedelta = timedelta(days=7)

    stamp_font: Path | None = Field(default=None, description="TTF/OTF used for visible stamps (needs CJK)")
    # The signers' time zone (IANA name): signature stamps and the signing page's deadline show it.
    timezone: str = "Asia/Shanghai"
    # PAdES signing and validation run in a pool of this many processes per API / worker process
    # (`signbridge.pdf.pool`): empty = one per core; 0 = in a thread of the process itself.
    signing_processes: int | None = Field(default=None, ge=0)

    @field_validator("signing_processes", mode="before")
    @classmethod
    def _empty_is_per_core(cls, v: object) -> object:
        """`SIGNBRIDGE_SIGNING_PROCESSES=` (as .env.example shows it) means the default, one per core."""
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        """A typo must stop the service at start, not stamp every signature in UTC."""
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as Asia/Shanghai)") from e
        return v

    @property
    def zone(self) -> tzinfo:
        return ZoneInfo(self.timezone)

    @field_validator("data_dir")
    @classmethod
    def _in_project(cls, v: Path) -> Path:
        """Relative to the project folder, not to wherever the command was typed."""
        return v if v.is_absolute() else project_dir() / v

    # Office → PDF: Gotenberg when its URL is set, else LibreOffice (`soffice` on PATH, or this path).
    gotenberg_url: str = ""
    soffice_path: str = ""
    convert_timeout_seconds: float = 90.0  # within the step's 2-minute activity timeout
    max_pages: int = 200  # more pages than anyone reads before signing (a 500-page spreadsheet export)

    # Bulk sends: rows starting at once (until their links are out), and the most rows one CSV may have.
    bulk_concurrency: int = Field(default=5, ge=1, le=100)
    bulk_max_rows: int = Field(default=10_000, ge=1, le=100_000)
    # The pause switch is read from the database at most this often by each API process.
    pause_check_seconds: float = 2.0
    # API processes `signbridge api` / `signbridge run` / compose start (uvicorn workers sharing one
    # port): one event loop per core, so a busy loop does not queue the next chat callbacks.
    api_processes: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)

    # One-time codes on the built-in provider's signing page: "on" (the default everywhere: a
    # signer who is not verified by chat single sign-on proves who they are with a code sent to
    # their email or mobile) or "off" (the typed name is enough — only for a closed test setup).
    sign_codes: Literal["on", "off"] = "on"
    # Where codes and external signers' links go. Email: SMTP, e.g.
    # `smtp://user:pass@smtp.example.com:587?starttls=1` or `smtps://user:pass@host:465`.
    smtp_url: SecretStr = SecretStr("")
    smtp_from: str = ""
    smtp_timeout_seconds: float = 20.0
    # SMS by Aliyun (dysmsapi, V3 signature): key, approved signature name and template codes.
    aliyun_sms_access_key_id: str = ""
    aliyun_sms_access_key_secret: SecretStr = SecretStr("")
    aliyun_sms_sign_name: str = ""
    aliyun_sms_code_template: str = ""  # a verification-code template with the variable ${code}
    aliyun_sms_link_template: str = ""  # a notification template with ${name}, ${title}, ${url}
    aliyun_sms_endpoint: str = "https://dysmsapi.aliyuncs.com"
    # SMS by Tencent Cloud (API 3.0, TC3-HMAC-SHA256).
    tencent_sms_secret_id: str = ""
    tencent_sms_secret_key: SecretStr = SecretStr("")
    tencent_sms_sdk_app_id: str = ""
    tencent_sms_sign_name: str = ""
    tencent_sms_code_template_id: str = ""  # one parameter: the code (digits only)
    tencent_sms_link_template_id: str = ""  # parameters: name, title, url
    tencent_sms_region: str = "ap-guangzhou"
    tencent_sms_endpoint: str = "https://sms.tencentcloudapi.com"
    # Which SMS service to use when both are configured: "aliyun" or "tencent" (empty: Aliyun first).
    sms_provider: str = ""

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @field_validator("fetch_allow_networks")
    @classmethod
    def _networks_parse(cls, v: str) -> str:
        _networks(v)  # a typo must stop the service at start, not open or close a network silently
        return v

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def webhook_file_host_list(self) -> list[str]:
        """The webhook IM hands out its files from its own host unless told otherwise."""
        hosts = _hosts(self.webhook_file_hosts)
        outbound = urlsplit(self.webhook_outbound_url).hostname
        return hosts or ([outbound] if outbound else [])

    @property
    def api_file_host_list(self) -> list[str]:
        return _hosts(self.api_file_hosts)

    @property
    def fetch_allow_network_list(self) -> list[IPv4Network | IPv6Network]:
        return _networks(self.fetch_allow_networks)

    @property
    def fetchable_own_paths(self) -> tuple[str, ...]:
        """Paths on SignBridge's own origin that documents may be fetched from: in development the
        playground's files (it is the chat there, served by the API itself); nowhere else."""
        return (PLAYGROUND_FILES_PATH,) if self.environment == DEVELOPMENT else ()

    @property
    def operator_list(self) -> list[str]:
        return [k.strip() for k in self.operators.split(",") if k.strip()]

    def timing(self) -> Timing:
        """What every new request starts with (a request may override single values)."""
        return Timing.model_validate(self.model_dump(include=set(Timing.model_fields)))

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'signbridge.db').resolve()}"

    card_language: str = ""  # "zh" or "en" for every platform; empty: per platform

    def language_for(self, platform: str) -> Literal["zh", "en"]:
        """Chinese on the Chinese platforms and the webhook IM, English on Slack, unless configured."""
        if self.card_language in ("zh", "en"):
            return self.card_language  # type: ignore[return-value]
        return "en" if platform == "slack" else "zh"

    def development_secrets(self) -> list[str]:
        """The variables whose secret is missing or still the development default anyone can read here."""
        return [f"SIGNBRIDGE_{name.upper()}" for name in SECRETS_WITH_DEV_DEFAULTS
                if getattr(self, name).get_secret_value().strip() in ("", DEV_SECRET)]

    def check_production(self) -> None:
        """Refuse to run outside development with a missing secret or one anyone can read in this repository."""
        if self.environment == DEVELOPMENT or not (unset := self.development_secrets()):
            return
        raise InsecureSettings(
            f"signbridge: refusing to start: {' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} missing or "
            f"the development default, and SIGNBRIDGE_ENVIRONMENT is {self.environment!r}; set "
            f"{'it' if len(unset) == 1 else 'them'} to a secret of your own (e.g. `openssl rand -hex 32`)")


def _hosts(value: str) -> list[str]:
    return [h.strip().lower().strip("[]") for h in value.split(",") if h.strip()]


def _networks(value: str) -> list[IPv4Network | IPv6Network]:
    return [ip_network(n.strip(), strict=False) for n in value.split(",") if n.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
