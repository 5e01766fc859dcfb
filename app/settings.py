"""Settings: one frozen struct read from the environment and validated at start."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from app.tokens import AppToken, parse_app_tokens

if TYPE_CHECKING:
    from collections.abc import Mapping


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable and what is wrong."""


# Retired model ids, and the current ones a request naming them is sent as: the ids the seed's
# clients and this README once named, so they work unchanged against OpenRouter.
DEFAULT_MODEL_ALIASES = {"anthropic/claude-3.5-sonnet": "anthropic/claude-sonnet-4.5"}

PositiveInt = Annotated[int, Meta(ge=1)]
PositiveFloat = Annotated[float, Meta(gt=0)]


class Settings(msgspec.Struct, kw_only=True, frozen=True, rename="upper"):
    """Every setting of the API and the worker. Field `x` is read from the variable `X`."""

    # The seed's settings.
    openrouter_default_model: Annotated[str, Meta(min_length=1)] = "anthropic/claude-sonnet-4.5"
    max_tokens_default: PositiveInt = 1000
    session_cleanup_hours: PositiveFloat = 24.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    port: Annotated[int, Meta(ge=1, le=65535)] = 8000

    # Where things are.
    app_env: Literal["production", "development"] = "production"
    redis_url: str = "redis://localhost:6379/0"
    # REDIS_URL names nodes of a Redis Cluster (comma-separated); arq's queue then needs a
    # standalone Redis of its own (QUEUE_REDIS_URL).
    redis_cluster: bool = False
    queue_redis_url: str = ""
    # https, or http to a loopback host only: callers' keys travel to it (check_base_url).
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    # Attribution headers to OpenRouter (HTTP-Referer, X-Title); an empty one is not sent.
    app_url: str = ""
    app_title: str = "OpenRouter Chat Backend"

    # Ownership: session owners are HMAC(session_secret, key).
    session_secret: Annotated[str, Meta(pattern=r"^(|.{32,})$")] = ""

    # Limits.
    max_history_messages: Annotated[int, Meta(ge=2)] = 50
    max_message_chars: PositiveInt = 32_000
    max_system_prompt_chars: PositiveInt = 32_000
    # Every message a session stores from /v1 (images as data URLs, tool calls included).
    max_stored_message_bytes: Annotated[int, Meta(ge=1024)] = 262_144
    max_tokens_limit: PositiveInt = 32_768
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 1_048_576
    body_read_timeout_seconds: PositiveFloat = 30.0

    # Upstream.
    upstream_timeout_seconds: PositiveFloat = 120.0
    upstream_connect_timeout_seconds: PositiveFloat = 10.0
    upstream_retries: Annotated[int, Meta(ge=0, le=10)] = 2
    upstream_max_connections: PositiveInt = 512
    models_cache_seconds: Annotated[int, Meta(ge=0)] = 300
    # `old=new,...`: a request naming `old` (as `model` or in `models`) is sent as `new`.
    model_aliases: dict[str, str] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_MODEL_ALIASES)
    )

    # Redis.
    redis_timeout_seconds: PositiveFloat = 0.5
    # A turn is answered once this many replicas have its commit (WAIT): it then survives the
    # loss of its master.
    redis_wait_replicas: Annotated[int, Meta(ge=0, le=16)] = 0
    redis_max_connections: PositiveInt = 128

    # Web.
    cors_origins: tuple[str, ...] = ("*",)
    log_format: Literal["json", "console"] | None = None
    stream_keepalive_seconds: Annotated[float, Meta(gt=0, le=15)] = 10.0
    # The chat page at `/` (app/http/static); off for an API-only deployment.
    serve_ui: bool = True
    # Swagger UI at /docs and ReDoc at /redoc (pinned CDN files); /openapi.json stays either way.
    docs_enabled: bool = True

    # Worker and operators.
    metrics_retention_days: PositiveInt = 30
    prune_interval_seconds: Annotated[int, Meta(ge=1, le=3600)] = 60
    max_sessions: PositiveInt | None = None
    # Per owner (a key, or an app token): its least recently active sessions beyond it go;
    # 0 is no cap.
    max_sessions_per_owner: Annotated[int, Meta(ge=0)] = 1000
    admin_token: Annotated[str, Meta(pattern=r"^(|.{16,})$")] = ""

    # Deployment: which process, processes per replica, graceful shutdown, metrics.
    process_role: Literal["web", "worker"] = "web"
    web_concurrency: Annotated[int, Meta(ge=1, le=64)] = 1
    # Peers whose X-Forwarded-* headers are believed; empty: uvicorn's default, 127.0.0.1.
    forwarded_allow_ips: str = ""
    shutdown_grace_seconds: Annotated[float, Meta(ge=1, le=3600)] = 20.0
    # On SIGTERM, /health answers 503 this long before the server stops accepting (behind a
    # load balancer that checks it); 0: stop at once.
    shutdown_drain_seconds: Annotated[float, Meta(ge=0, le=60)] = 0.0
    metrics_token: Annotated[str, Meta(pattern=r"^(|.{16,})$")] = ""
    # A second port for /admin/* and /metrics (and /health); the public PORT then 404s them.
    admin_port: Annotated[int, Meta(ge=1, le=65535)] | None = None
    # Where a replica's processes keep their Prometheus counters; empty: a temporary one.
    prometheus_multiproc_dir: str = ""

    # Server-key mode: when openrouter_api_key is set, clients send an app token instead.
    openrouter_api_key: Annotated[str, Meta(pattern=r"^[!-~]{0,256}$")] = ""
    app_tokens: tuple[AppToken, ...] = ()
    # Per owner (a caller's key, or an app token); 0 is no limit.
    rate_limit_per_minute: Annotated[int, Meta(ge=0)] = 60
    token_limit_per_day: Annotated[int, Meta(ge=0)] = 0
    # USD per owner per UTC day, held at the catalogue's prices and settled at OpenRouter's
    # `usage.cost`; 0 is no budget.
    budget_usd_per_day: Annotated[float, Meta(ge=0, le=1e6)] = 0.0
    # Model id patterns (`*`: any characters but `:`); empty: every model.
    allowed_models: tuple[str, ...] = ()
    # How long a key OpenRouter refused (401) is refused without asking it again; 0: never.
    refused_key_seconds: Annotated[int, Meta(ge=0, le=86_400)] = 300
    # Failed authentications per client address in a minute, before it is refused; 0: no limit.
    auth_failures_per_minute: Annotated[int, Meta(ge=0)] = 20

    def __repr__(self) -> str:
        # Tracebacks and debuggers print settings; the secrets stay out of them.
        return f"Settings(app_env={self.app_env!r}, server_key_mode={self.server_key_mode})"

    @property
    def queue_url(self) -> str:
        """The Redis of the worker's queue and cron locks: QUEUE_REDIS_URL, else REDIS_URL."""
        return self.queue_redis_url or self.redis_url

    @property
    def server_key_mode(self) -> bool:
        return bool(self.openrouter_api_key)

    @property
    def session_ttl_ms(self) -> int:
        return round(self.session_cleanup_hours * 3_600_000)

    @property
    def history_cap(self) -> int:
        """Messages kept per session, rounded down to even so that /chat's pairs stay whole
        (the commit script cuts the history at a user message, so a turn is never split)."""
        return self.max_history_messages - self.max_history_messages % 2

    @property
    def effective_log_format(self) -> Literal["json", "console"]:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.app_env == "production" else "console"


_LIST_FIELDS = frozenset({"CORS_ORIGINS", "ALLOWED_MODELS"})


def model_pattern(pattern: str) -> re.Pattern[str]:
    """An ALLOWED_MODELS pattern: `*` stands for any run of characters but `:`."""
    return re.compile("[^:]*".join(re.escape(part) for part in pattern.split("*")))


def parse_model_aliases(value: str) -> dict[str, str]:
    """`old=new,old2=new2` as a mapping; `none` for no aliases at all."""
    if value.strip().lower() == "none":
        return {}
    aliases: dict[str, str] = {}
    for part in (part.strip() for part in value.split(",")):
        old, equals, new = (side.strip() for side in part.partition("="))
        if not part:
            continue
        if not equals or not old or not new or old == new:
            raise SettingsError(
                f"invalid setting: MODEL_ALIASES: {part!r} is not `old=new` (two different "
                "model ids); write `old=new,...`, or `none`"
            )
        aliases[old] = new
    return aliases


def is_loopback_host(host: str) -> bool:
    """`localhost`, or an address of 127.0.0.0/8 or ::1: traffic that never leaves the machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> None:
    """OPENROUTER_BASE_URL must be https: every call carries an OpenRouter key in a header.

    Plain http is allowed to a loopback host only (a stand-in, or a local proxy that does TLS).
    """
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
    except ValueError:  # e.g. an unclosed `[` of an IPv6 address
        scheme, host = "", ""
    if scheme == "https" and host:
        return
    if scheme == "http" and is_loopback_host(host):
        return
    raise SettingsError(
        f"invalid setting: OPENROUTER_BASE_URL: {url!r} is not an https:// URL; the OpenRouter "
        "key of every call travels to it, so only https is accepted, or http to a loopback "
        "host (localhost, 127.0.0.0/8, ::1)"
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from `environ` (default: the process environment).

    Raises `SettingsError` naming the variable when a value does not fit.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    for name in Settings.__struct_encode_fields__:
        value = env.get(name)
        if value is None or value == "":
            continue
        if name in _LIST_FIELDS:
            raw[name] = tuple(part.strip() for part in value.split(",") if part.strip())
        elif name == "LOG_LEVEL":
            raw[name] = value.upper()
        elif name == "MODEL_ALIASES":
            raw[name] = parse_model_aliases(value)
        elif name == "APP_TOKENS":
            try:
                raw[name] = parse_app_tokens(value)
            except ValueError as exc:
                raise SettingsError(f"invalid setting: APP_TOKENS: {exc}") from None
        else:
            raw[name] = value
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid setting: {_describe(exc)}") from None
    default = settings.openrouter_default_model
    if settings.allowed_models and not any(
        model_pattern(pattern).fullmatch(default) for pattern in settings.allowed_models
    ):
        raise SettingsError(
            f"OPENROUTER_DEFAULT_MODEL {settings.openrouter_default_model!r} is not in "
            f"ALLOWED_MODELS ({', '.join(settings.allowed_models)}): every turn that names no "
            "model would be refused; allow it, or pick a default among the allowed models"
        )
    check_base_url(settings.openrouter_base_url)
    if settings.admin_port == settings.port:
        raise SettingsError(
            f"invalid setting: ADMIN_PORT: {settings.admin_port} is also PORT; the operators' "
            "routes need a port of their own (or unset ADMIN_PORT to serve them on PORT)"
        )
    if settings.redis_cluster and not settings.queue_redis_url:
        raise SettingsError(
            "QUEUE_REDIS_URL is required when REDIS_CLUSTER=true: the worker's queue (arq) "
            "runs on a standalone Redis; name one, apart from the cluster"
        )
    if not settings.redis_cluster and "," in settings.redis_url:
        raise SettingsError(
            "invalid setting: REDIS_URL names several servers; set REDIS_CLUSTER=true if they "
            "are nodes of a Redis Cluster, or name one Redis"
        )
    if settings.server_key_mode and not settings.app_tokens:
        raise SettingsError(
            "APP_TOKENS is required when OPENROUTER_API_KEY is set: clients authenticate with "
            "an app token (chat-backend token new NAME makes one); or unset "
            "OPENROUTER_API_KEY for callers to send their own keys"
        )
    if settings.app_tokens and not settings.server_key_mode:
        raise SettingsError(
            "APP_TOKENS is set but OPENROUTER_API_KEY is not: app tokens are only accepted in "
            "server-key mode; set both, or neither for callers' own keys"
        )
    return settings


def require_session_secret(settings: Settings) -> Settings:
    """The API's settings with a session secret: refused in production without one.

    In development a random one is made, valid for this process only.
    """
    if settings.session_secret:
        return settings
    if settings.app_env == "production":
        raise SettingsError(
            "SESSION_SECRET is required when APP_ENV=production: it keys the owner hash of "
            "every session. Set it to a long random string shared by all replicas "
            "(python -c 'import secrets; print(secrets.token_urlsafe(48))'), "
            "or set APP_ENV=development for a throwaway one."
        )
    return msgspec.structs.replace(settings, session_secret=secrets.token_urlsafe(48))


def _describe(exc: msgspec.ValidationError) -> str:
    """Turn msgspec's `... - at `$.NAME`` into `NAME: ...`."""
    message = str(exc)
    head, sep, path = message.rpartition(" - at `$.")
    if not sep:
        return message
    return f"{path.rstrip('`')}: {head}"
