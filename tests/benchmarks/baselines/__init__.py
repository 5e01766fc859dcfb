"""Comparison apps for the turn benchmark: the same turn built two other ways.

`floor`: the least a turn can cost in Python (raw ASGI, aiohttp, hiredis, msgspec, the same
two Redis round trips, no validation). `seed`: the original design (FastAPI, pydantic, one
shared httpx client, sessions in a dict). Both serve `POST /chat` under uvicorn with the API's
flags, and take the upstream and Redis from OPENROUTER_BASE_URL and REDIS_URL.
"""
