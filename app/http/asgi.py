"""The app factory: routes, dependencies, lifespan, CORS, OpenAPI, logging and error handlers."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag

from app import __version__
from app.http.context import RequestContextMiddleware
from app.http.dependencies import dependencies
from app.http.errors import exception_handlers
from app.http.listeners import listener_guard
from app.http.routes.admin import AdminController
from app.http.routes.chat import chat_route
from app.http.routes.docs import openapi_json, viewer_handlers
from app.http.routes.health import health
from app.http.routes.metrics import metrics
from app.http.routes.models import list_models
from app.http.routes.responses import QUOTA_HEADERS
from app.http.routes.sessions import SessionController
from app.http.routes.ui import ui_router
from app.http.routes.v1 import v1_handlers
from app.http.services import services_lifespan
from app.ops.logs import configure_logging
from app.settings import SettingsError, load_settings, require_session_secret

if TYPE_CHECKING:
    from litestar.types import ASGIApp, ControllerRouterHandler

    from app.settings import Settings

logger = logging.getLogger("app")

DESCRIPTION = """\
Chat with any OpenRouter model and keep the conversation: send your OpenRouter key as
`Authorization: Bearer <key>`; it is forwarded to OpenRouter and nowhere else. Sessions belong
to the key that created it and expire after `SESSION_CLEANUP_HOURS` without activity.
Every error has the body `{"error": {"status", "type", "message", "request_id", ...}}`.
"""


SERVER_KEY_DESCRIPTION = """\
Chat with any OpenRouter model and keep the conversation: send your app token as
`Authorization: Bearer <token>`; the server calls OpenRouter with its own key. Sessions belong
to the app token that created them and expire after `SESSION_CLEANUP_HOURS` without activity.
Every error has the body `{"error": {"status", "type", "message", "request_id", ...}}`.
"""


def openapi_config(settings: Settings) -> OpenAPIConfig:
    server_key = settings.server_key_mode
    return OpenAPIConfig(
        title="OpenRouter Chat Backend",
        version=__version__,
        description=SERVER_KEY_DESCRIPTION if server_key else DESCRIPTION,
        # Litestar mounts its own schema router here; ours serves /docs, /redoc, /openapi.json.
        path="/schema",
        render_plugins=[JsonRenderPlugin()],
        use_handler_docstrings=True,
        components=Components(
            security_schemes={
                "OpenRouterKey": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description=(
                        "An app token the operator gave you (server-key mode)."
                        if server_key
                        else "Your OpenRouter API key (`sk-or-v1-...`)."
                    ),
                ),
                "AdminToken": SecurityScheme(
                    type="http", scheme="bearer", description="The server's `ADMIN_TOKEN`."
                ),
            }
        ),
        tags=[
            Tag(name="chat", description="Conversations with a model."),
            Tag(name="sessions", description="The stored conversations of your key."),
            Tag(name="models", description="What OpenRouter offers."),
            Tag(name="health", description="For load balancers and platforms."),
            Tag(
                name="openai",
                description="OpenAI's API, for OpenAI SDKs; errors in OpenAI's shape.",
            ),
            Tag(
                name="admin",
                description=(
                    "Operators only; present when ADMIN_TOKEN is set, and served on "
                    "ADMIN_PORT alone when that is set."
                ),
            ),
        ],
    )


def create_litestar(settings: Settings) -> Litestar:
    handlers: list[ControllerRouterHandler] = [
        chat_route,
        SessionController,
        list_models,
        health,
        metrics,
        openapi_json,
        *v1_handlers,
    ]
    if settings.docs_enabled:
        handlers.extend(viewer_handlers)
    if settings.admin_token:
        handlers.append(AdminController)
    if settings.serve_ui:
        handlers.append(ui_router())
    return Litestar(
        route_handlers=handlers,
        dependencies=dependencies,
        lifespan=[services_lifespan(settings)],
        guards=[listener_guard(settings.admin_port)] if settings.admin_port else None,
        exception_handlers=exception_handlers,
        cors_config=CORSConfig(
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-Request-ID",
                "If-None-Match",
                "X-Session-Id",
            ],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "ETag",
                "X-Cache",
                "X-Session-Id",
                *QUOTA_HEADERS,
            ],
            max_age=600,
        ),
        openapi_config=openapi_config(settings),
        request_max_body_size=settings.max_body_bytes,
        # Logging is configured once, by configure_logging, for every library alike.
        logging_config=None,
    )


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The ASGI app: uvicorn calls this with `--factory`; tests pass their own settings."""
    try:
        settings = settings or load_settings()
        configure_logging(settings.log_level, settings.effective_log_format)
        ephemeral = not settings.session_secret
        settings = require_session_secret(settings)
    except SettingsError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    if ephemeral:
        logger.warning(
            "SESSION_SECRET is not set: using an ephemeral secret, so sessions are lost on "
            "restart and cannot be shared between replicas (fine for development only)"
        )
    return RequestContextMiddleware(
        create_litestar(settings), body_timeout=settings.body_read_timeout_seconds
    )
