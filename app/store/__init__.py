"""Redis: the client and its pool, the key layout (a documented interface), the session
store, rate limits, usage events, the admin stats, and the Lua scripts (`lua/`).

Imports app.ops and the shared modules only; app.upstream is its sibling, not its dependency.
The only module that leans on redis-py's private names is `client`
(`tests/store/test_library_contracts.py` names each).
"""
