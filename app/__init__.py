"""A chat backend: stateless Litestar replicas proxying OpenRouter, conversations in Redis.

The packages are the layers, and each imports only the layers below it
(`tests/test_layers.py` keeps it so):

    app.cli        the processes: `chat-backend web | worker | dev`, the image's health check
    app.http       the edge: the app factory, routes, the turn routes in plain ASGI, errors
    workers        the arq worker (an edge of its own, beside app.http)
    app.turns      the domain: callers, the turn, streaming, OpenAI's request as a turn
    app.store      Redis: the client and pool, the key layout, sessions, limits, Lua scripts
    app.upstream   OpenRouter: wire structs, the client, the transport, SSE decoding
    app.ops        logging, Prometheus metrics and their tallies

Below them all, the vocabulary every layer shares: `settings`, `tokens` (the APP_TOKENS
format), `schemas` (the API's structs, stored and answered as they are), `errors` (the error
hierarchy and its two wire shapes) and `ids`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("openrouter-chat-backend")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
