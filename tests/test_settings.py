"""Settings: read from the environment, validated with messages naming the variable."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from app.settings import Settings, SettingsError, load_settings
from tests.conftest import SESSION_SECRET
from tests.support.processes import ProcfileProcess, WebProcess
from tests.support.redis_server import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.standin import StandinServer

ROOT = Path(__file__).resolve().parent.parent
VARIABLES = sorted(Settings.__struct_encode_fields__)


# ---- load_settings ---------------------------------------------------------------------------


def test_seed_settings_are_read() -> None:
    settings = load_settings(
        {
            "OPENROUTER_DEFAULT_MODEL": "openai/gpt-4o-mini",
            "MAX_TOKENS_DEFAULT": "256",
            "SESSION_CLEANUP_HOURS": "2",
            "LOG_LEVEL": "WARNING",
            "PORT": "9123",
        }
    )

    assert settings.openrouter_default_model == "openai/gpt-4o-mini"
    assert settings.max_tokens_default == 256
    assert settings.session_cleanup_hours == 2
    assert settings.session_ttl_ms == 2 * 3_600_000
    assert settings.log_level == "WARNING"
    assert settings.port == 9123


def test_issue_defaults_apply_when_unset() -> None:
    settings = load_settings({})

    # One the real catalogue lists (tests/fixtures/openrouter-models.json).
    assert settings.openrouter_default_model == "anthropic/claude-sonnet-4.5"
    assert settings.model_aliases == {"anthropic/claude-3.5-sonnet": "anthropic/claude-sonnet-4.5"}
    assert settings.session_cleanup_hours == 24
    assert settings.max_history_messages == 50
    assert settings.max_message_chars == 32_000
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.models_cache_seconds == 300


def test_empty_value_counts_as_unset() -> None:
    assert load_settings({"PORT": ""}).port == load_settings({}).port


@pytest.mark.parametrize(
    ("value", "ttl_ms"), [("0.5", 1_800_000), ("0.001", 3_600), ("1.25", 4_500_000)]
)
def test_session_cleanup_hours_accepts_fractions(value: str, ttl_ms: int) -> None:
    settings = load_settings({"SESSION_CLEANUP_HOURS": value})

    assert settings.session_cleanup_hours == float(value)
    assert settings.session_ttl_ms == ttl_ms


@pytest.mark.parametrize("value", ["debug", "Info", "WARNING"])
def test_log_level_is_case_insensitive(value: str) -> None:
    assert load_settings({"LOG_LEVEL": value}).log_level == value.upper()


def test_environment_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_TOKENS_DEFAULT", "77")

    assert load_settings().max_tokens_default == 77


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAX_TOKENS_DEFAULT", "abc"),
        ("MAX_TOKENS_DEFAULT", "0"),
        ("MAX_TOKENS_DEFAULT", "1.5"),
        ("SESSION_CLEANUP_HOURS", "soon"),
        ("SESSION_CLEANUP_HOURS", "0"),
        ("SESSION_CLEANUP_HOURS", "-1"),
        ("LOG_LEVEL", "LOUD"),
        ("PORT", "http"),
        ("PORT", "70000"),
        ("PORT", "0"),
        ("APP_ENV", "staging"),
        ("LOG_FORMAT", "xml"),
        ("MAX_BODY_BYTES", "big"),
        ("SESSION_SECRET", "too-short"),
    ],
)
def test_invalid_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({variable: value})

    assert variable in str(raised.value)


def test_cors_origins_is_a_comma_list() -> None:
    settings = load_settings({"CORS_ORIGINS": "https://a.example, https://b.example ,,"})

    assert settings.cors_origins == ("https://a.example", "https://b.example")


def test_cors_origins_default_to_any() -> None:
    assert load_settings({}).cors_origins == ("*",)


# ---- .env.example ----------------------------------------------------------------------------


def test_env_example_lists_every_setting() -> None:
    path = ROOT / ".env.example"
    assert path.is_file(), ".env.example is missing at the repository root"
    listed = set(
        re.findall(r"^\s*#?\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=", path.read_text(), re.MULTILINE)
    )

    missing = set(VARIABLES) - listed
    unknown = listed - set(VARIABLES)

    assert not missing, f"not in .env.example: {sorted(missing)}"
    assert not unknown, f"in .env.example but not a setting: {sorted(unknown)}"


def test_env_example_values_are_valid_settings() -> None:
    path = ROOT / ".env.example"
    assert path.is_file(), ".env.example is missing at the repository root"
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", path.read_text(), re.MULTILINE))

    # Copied as is, the file must start the app (SESSION_SECRET aside, which it leaves blank).
    settings = load_settings(values)

    assert settings.session_cleanup_hours > 0


# ---- the web process at start ----------------------------------------------------------------


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the environment the tests run in."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def exit_of(process: ProcfileProcess, timeout: float = 20) -> int:
    """Wait for a process that must stop by itself; its exit code."""
    deadline = time.monotonic() + timeout
    while process.running():
        if time.monotonic() > deadline:
            process.close()
            raise AssertionError(f"{process.name} kept running:\n{process.logs()}")
        time.sleep(0.05)
    code = process.stop()
    assert code is not None
    return code


def web_env(redis_url: str, standin: StandinServer, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "OPENROUTER_BASE_URL": standin.base_url,
        "PORT": str(free_port()),
        "LOG_FORMAT": "json",
        **extra,
    }


@pytest.fixture
def web(
    clean_environ: None, redis_url: str, standin: StandinServer
) -> Iterator[list[ProcfileProcess]]:
    """Processes of the `web` entry started by a test, closed after it."""
    started: list[ProcfileProcess] = []
    yield started
    for process in started:
        process.close()


def start_web(started: list[ProcfileProcess], env: dict[str, str]) -> ProcfileProcess:
    process = ProcfileProcess("web", env)
    started.append(process)
    process.start()
    return process


@pytest.mark.parametrize("secret", [None, "short-secret"], ids=["unset", "too-short"])
def test_production_refuses_to_start_without_session_secret(
    web: list[ProcfileProcess], redis_url: str, standin: StandinServer, secret: str | None
) -> None:
    extra = {"APP_ENV": "production"}
    if secret is not None:
        extra["SESSION_SECRET"] = secret
    process = start_web(web, web_env(redis_url, standin, **extra))

    code = exit_of(process)

    assert code != 0
    assert "SESSION_SECRET" in process.logs()


def test_development_starts_without_session_secret_and_warns(
    clean_environ: None, redis_url: str, standin: StandinServer
) -> None:
    env = web_env(redis_url, standin, APP_ENV="development")

    with WebProcess(env, int(env["PORT"])) as process:
        health = httpx.get(f"{process.url}/health", timeout=10)
        logs = process.logs()

    assert health.status_code == 200
    warnings = [line for line in logs.splitlines() if "SESSION_SECRET" in line]
    assert warnings, logs
    assert any("WARNING" in line for line in warnings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MAX_TOKENS_DEFAULT", "abc"), ("SESSION_CLEANUP_HOURS", "-2"), ("LOG_LEVEL", "LOUD")],
)
def test_invalid_setting_stops_the_process_naming_it(
    web: list[ProcfileProcess],
    redis_url: str,
    standin: StandinServer,
    variable: str,
    value: str,
) -> None:
    env = web_env(
        redis_url, standin, APP_ENV="production", SESSION_SECRET=SESSION_SECRET, **{variable: value}
    )
    process = start_web(web, env)

    code = exit_of(process)

    assert code != 0
    assert variable in process.logs()


def test_model_aliases_are_pairs_or_none() -> None:
    settings = load_settings({"MODEL_ALIASES": " a/old = a/new , b/old=b/new,"})
    assert settings.model_aliases == {"a/old": "a/new", "b/old": "b/new"}
    assert load_settings({"MODEL_ALIASES": "none"}).model_aliases == {}
    for bad in ("a/old", "a/old=", "=a/new", "a/same=a/same"):
        with pytest.raises(SettingsError, match="MODEL_ALIASES"):
            load_settings({"MODEL_ALIASES": bad})


# ---- OPENROUTER_BASE_URL ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://openrouter.ai/api/v1",
        "https://10.0.0.5:8443/api/v1",
        "http://localhost:9000/api/v1",
        "http://LOCALHOST/api/v1",
        "http://127.0.0.1:9000/api/v1",
        "http://127.8.9.10/api/v1",
        "http://[::1]:9000/api/v1",
    ],
)
def test_base_url_is_https_or_loopback_http(url: str) -> None:
    assert load_settings({"OPENROUTER_BASE_URL": url}).openrouter_base_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://openrouter.ai/api/v1",
        "http://10.0.0.5/api/v1",
        "http://0.0.0.0:9000/api/v1",
        "http://localhost.example.com/api/v1",
        "http://127.0.0.1.nip.io/api/v1",
        "ftp://openrouter.ai/api/v1",
        "openrouter.ai/api/v1",
        "https:///api/v1",
        "http://[::1/api/v1",
    ],
)
def test_base_url_refuses_plain_http_beyond_loopback(url: str) -> None:
    with pytest.raises(SettingsError, match="OPENROUTER_BASE_URL") as raised:
        load_settings({"OPENROUTER_BASE_URL": url})

    assert "https" in str(raised.value)


def test_plain_http_base_url_stops_the_web_process(
    web: list[ProcfileProcess], redis_url: str, standin: StandinServer
) -> None:
    env = web_env(redis_url, standin, APP_ENV="production", SESSION_SECRET=SESSION_SECRET)
    process = start_web(web, {**env, "OPENROUTER_BASE_URL": "http://openrouter.ai/api/v1"})

    code = exit_of(process)

    assert code != 0
    assert "OPENROUTER_BASE_URL" in process.logs()


# ---- ADMIN_PORT ------------------------------------------------------------------------------


def test_admin_port_is_unset_by_default_and_read_when_given() -> None:
    assert load_settings({}).admin_port is None
    assert load_settings({"ADMIN_PORT": "9000"}).admin_port == 9000


@pytest.mark.parametrize("value", ["0", "70000", "admin"])
def test_admin_port_must_be_a_port(value: str) -> None:
    with pytest.raises(SettingsError, match="ADMIN_PORT"):
        load_settings({"ADMIN_PORT": value})


def test_admin_port_must_not_be_port(
    web: list[ProcfileProcess], redis_url: str, standin: StandinServer
) -> None:
    with pytest.raises(SettingsError, match="ADMIN_PORT"):
        load_settings({"PORT": "8000", "ADMIN_PORT": "8000"})
    env = web_env(redis_url, standin, APP_ENV="production", SESSION_SECRET=SESSION_SECRET)
    process = start_web(web, {**env, "ADMIN_PORT": env["PORT"]})

    assert exit_of(process) != 0
    assert "ADMIN_PORT" in process.logs()


# ---- Redis Cluster ---------------------------------------------------------------------------


def test_a_cluster_needs_a_queue_redis_of_its_own() -> None:
    with pytest.raises(SettingsError, match="QUEUE_REDIS_URL"):
        load_settings({"REDIS_CLUSTER": "true", "REDIS_URL": "redis://a:7000,redis://b:7001"})
    settings = load_settings(
        {"REDIS_CLUSTER": "true", "REDIS_URL": "redis://a:7000", "QUEUE_REDIS_URL": "redis://q"}
    )
    assert settings.redis_cluster and settings.queue_url == "redis://q"
    assert load_settings({"REDIS_URL": "redis://r:6379"}).queue_url == "redis://r:6379"


def test_several_redis_urls_without_a_cluster_are_refused() -> None:
    with pytest.raises(SettingsError, match="REDIS_CLUSTER=true"):
        load_settings({"REDIS_URL": "redis://a:7000,redis://b:7001"})
