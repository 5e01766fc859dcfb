"""Operations: logging, Prometheus metrics and the tallies that batch them.

The lowest layer but the shared modules: it imports nothing else of the app.
"""
