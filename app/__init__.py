"""A chat backend: stateless Litestar replicas proxying OpenRouter, conversations in Redis."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("openrouter-chat-backend")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
