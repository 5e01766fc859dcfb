"""Providers for Litestar's dependency injection: handlers declare what they use by name.

Litestar reads these functions' annotations at runtime, so their types are imported for real.
"""

from __future__ import annotations

from typing import Any, cast

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from app.auth import Caller, caller_from_authorization
from app.catalog import ModelCatalog
from app.chat import ChatService
from app.services import Services
from app.sessions import SessionStore


def _services(state: State) -> Services:
    return cast("Services", state.services)


def provide_caller(request: Request[Any, Any, Any], state: State) -> Caller:
    return caller_from_authorization(request.headers.get("authorization"), _services(state).secret)


def provide_chat(state: State) -> ChatService:
    return _services(state).chat


def provide_store(state: State) -> SessionStore:
    return _services(state).store


def provide_catalog(state: State) -> ModelCatalog:
    return _services(state).catalog


def provide_services(state: State) -> Services:
    return _services(state)


dependencies = {
    "caller": Provide(provide_caller, sync_to_thread=False),
    "chat": Provide(provide_chat, sync_to_thread=False),
    "store": Provide(provide_store, sync_to_thread=False),
    "catalog": Provide(provide_catalog, sync_to_thread=False),
    "services": Provide(provide_services, sync_to_thread=False),
}
