"""Settings from the environment (``KEYRACK_*``) or a ``keyrack.toml`` file."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_UNSAFE_SECRETS = {"changethis", "secret", "changeme", ""}
_MIN_DISTINCT_CHARACTERS = 8
DEV_SECRET_KEY = "dev-insecure-secret-key-do-not-deploy-0000"  # noqa: S105 - refused in production


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KEYRACK_",
        toml_file="keyrack.toml",
        extra="ignore",
        hide_input_in_errors=True,  # a refused secret key or database password is not echoed
    )

    database_url: str = "sqlite:///./keyrack.db"
    redis_url: str | None = None
    base_domain: str = "localhost"
    smtp_url: str | None = None
    mail_from: str = "keyrack@localhost"
    secret_key: str = DEV_SECRET_KEY
    environment: str = Field(default="development", pattern="^(development|test|production)$")
    api_enabled_by_default: bool = True

    # throttling defaults (SPEC §5)
    default_rate_per_second: int = Field(default=5, ge=1)
    default_concurrency: int = Field(default=1, ge=1)
    concurrency_lease_seconds: float = Field(default=30.0, gt=0)

    # verification cache: how long a cached verdict may live without an invalidation
    key_cache_ttl_seconds: float = Field(default=1.0, gt=0)
    """Without Redis, or while the invalidation relay is disconnected."""
    key_cache_safety_ttl_minutes: float = Field(default=10.0, gt=0)
    """While the relay delivers every invalidation: the bound on an entry's life in
    case an event is lost anyway (a publish that failed)."""
    key_cache_max_entries: int = Field(default=1_000_000, ge=1)
    """Keys (and unknown digests) kept in memory per process; about 0.4 KB each."""
    last_used_flush_seconds: float = Field(default=5.0, gt=0)

    reveal_window_seconds: int = Field(default=300, ge=0)
    handoff_ttl_hours: int = Field(default=24, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)

    # what ``keyrack serve`` lets one connection hold (keyrack.http.protocol)
    max_header_bytes: int = Field(default=65_536, ge=1024)
    max_headers: int = Field(default=100, ge=8)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    shutdown_grace_seconds: float = Field(default=30.0, gt=0)
    """On SIGTERM, how long requests in flight may take to finish; then they are
    cancelled and the server stops (the write-behind is still flushed)."""

    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_allow_private_targets: bool = False
    """Let webhook URLs reach loopback, private, link-local and other non-public
    addresses. Off by default: an org admin must not make the server call its own
    network (SSRF). Tests and single-host setups turn it on."""

    log_level: str = "INFO"
    metrics_token: str | None = None
    """When set, ``GET /metrics`` wants ``Authorization: Bearer <token>`` (else 401)."""
    trust_forwarded_for: bool = False
    """Believe the proxy's X-Forwarded-For and X-Forwarded-Proto: only behind a proxy
    that sets them. The last entry counts (what the proxy saw: the client's address,
    and whether it used HTTPS); earlier ones can be forged."""

    # the durable job queue (keyrack.jobs)
    in_process_worker: bool = True
    """``keyrack serve`` runs a job worker in each of its processes (``--no-worker``: not,
    for deployments with separate ``keyrack worker`` processes)."""
    job_concurrency: int = Field(default=4, ge=1)
    """Jobs a worker runs at once below the bulk band (deliveries, sweeps, probes)."""
    job_bulk_concurrency: int = Field(default=1, ge=0)
    """Jobs a worker runs at once in the bulk band (sync runs, exports), beside those;
    0 leaves them to other workers."""
    job_lease_seconds: float = Field(default=30.0, ge=1)
    """A running job whose worker stops renewing this lease (killed) runs again after it."""
    job_poll_seconds: float = Field(default=1.0, gt=0)
    """Fallback look for due jobs when no wake-up came (a separate worker on SQLite)."""
    job_shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    """On SIGTERM, how long running jobs may finish before they are handed back."""
    job_retention_days: int = Field(default=14, ge=1)
    """Finished jobs are deleted this long after they finished."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @field_validator("secret_key")
    @classmethod
    def _refuse_weak_secret(cls, value: str) -> str:
        if (
            value.strip().lower() in _UNSAFE_SECRETS
            or len(value) < 32
            or len(set(value)) < _MIN_DISTINCT_CHARACTERS  # "aaaa…", "abab…": guessable
        ):
            raise ValueError(
                "KEYRACK_SECRET_KEY must be at least 32 random characters and not a placeholder"
            )
        return value

    def check_deployable(self) -> None:
        """Refuse to run in production with the development secret key."""
        if self.environment == "production" and self.secret_key == DEV_SECRET_KEY:
            raise ValueError("set KEYRACK_SECRET_KEY before running with environment=production")
