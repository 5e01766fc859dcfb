"""Tests of app.upstream against the stand-in over real HTTP, and the contracts it keeps with
httpx and aiohttp."""
