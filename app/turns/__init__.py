"""The domain: callers and their keys, the turn (history -> upstream -> commit), streaming,
OpenAI's chat request as a turn, the model catalogue.

Knows nothing of HTTP frameworks: it imports app.store, app.upstream, app.ops and the shared
modules, never app.http.
"""
