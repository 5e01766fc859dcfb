"""OpenRouter: its wire format, the client that speaks it, the transport under httpx, and the
decoder of its event streams.

Imports app.ops and the shared modules only; app.store is its sibling, not its dependency.
The only module that sets httpx's or aiohttp's private state is `transport`
(`tests/upstream/test_library_contracts.py` names each).
"""
