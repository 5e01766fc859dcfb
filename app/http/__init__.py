"""The HTTP edge: the app factory, the turn routes in plain ASGI, routes (one module per
resource), dependency providers, error rendering, the request context, the docs and the chat
page.

Imports app.turns, app.store, app.upstream, app.ops and the shared modules; never app.cli or
workers. Nothing below it knows of Litestar.
"""
