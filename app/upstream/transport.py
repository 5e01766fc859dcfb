"""httpx's transport interface over aiohttp's connection pool and C parser.

httpx's own transport (httpcore) costs about 1 ms of CPU per call at a hundred concurrent
calls, growing with concurrency; aiohttp's stays near 0.2 ms. This transport is the smallest
bridge between the two, for the one client we have (`app.upstream.client`):

- The answer to a request that accepts an event stream (`Accept: text/event-stream`), or
  that is one, comes back open, its body streamed as aiohttp reads it, whatever it turns out
  to be. Any other answer is read whole before it is handed over, as httpx's `content`.
- aiohttp's errors become httpx's: connecting, timeouts, a broken body.
- Redirects are never followed (our requests carry the caller's key), nothing is decompressed
  or compressed on the way, and no proxy is taken from the environment.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
import httpx

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

EVENT_STREAM = "text/event-stream"
STREAM_CHUNK_BYTES = 16 * 1024

# From the most specific: the first that matches names the httpx error. Only a connection
# never made is a connect error (retried by the client); a connection lost once the request
# was on its way is a protocol error: the server may have received it, and billed it.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.TimeoutException),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientConnectionError, httpx.RemoteProtocolError),
    (aiohttp.ClientError, httpx.TransportError),
)
# Bodies are relayed as they come, never decompressed: aiohttp would otherwise offer gzip, and
# a compressing CDN in front of OpenRouter would take it.
_IDENTITY = ("accept-encoding", "identity")


def as_httpx_error(error: BaseException) -> httpx.TransportError | None:
    """The httpx error for an aiohttp one; None for anything else."""
    for aiohttp_error, httpx_error in _ERRORS:
        if isinstance(error, aiohttp_error):
            return httpx_error(str(error) or type(error).__name__)
    return None


class _BodyStream(httpx.AsyncByteStream):
    """An event stream's body, as aiohttp reads it; closing it frees its connection slot."""

    def __init__(self, response: aiohttp.ClientResponse, release: Callable[[], None]) -> None:
        self._response = response
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(STREAM_CHUNK_BYTES):
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise (as_httpx_error(exc) or exc) from exc

    async def aclose(self) -> None:
        # A body not read to its end is hung up on: for most providers that stops the
        # generation. One read to its end gives the connection back to the pool.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()
        release, self._release = self._release, None
        if release is not None:
            release()


def _body(request: httpx.Request) -> bytes:
    """The body of a request made with its bytes (as ours are), without `read`'s checks."""
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        return b"".join(stream)
    return request.read()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session, opened on first use (inside the event loop) and closed by `aclose`.

    At most `max_connections` requests are in flight; one more waits for a slot as long as
    httpx's `pool` timeout says, then fails with httpx's `PoolTimeout`. aiohttp's own limit
    would fail it as a connect timeout, which is retried, and is not what happened.
    """

    def __init__(self, *, max_connections: int, keepalive_seconds: float) -> None:
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}
        self._slots = asyncio.Semaphore(max_connections)

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, keepalive_timeout=self._keepalive_seconds
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            auto_decompress=False,
            # No cookies are kept between calls of different callers.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        """httpx's connect and read timeouts of a request in aiohttp's terms, made once per
        distinct pair (its pool timeout is the wait for a slot, `_take_slot`'s)."""
        given = request.extensions.get("timeout", {})
        key = (given.get("connect"), given.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                sock_connect=key[0], sock_read=key[1]
            )
        return timeout

    async def _take_slot(self, request: httpx.Request) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns at once
            return
        pool = request.extensions.get("timeout", {}).get("pool")
        try:
            async with asyncio.timeout(pool):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout(
                f"all {self._max_connections} upstream connections are in use"
            ) from None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        headers = request.headers.multi_items()  # names in lower case
        if _IDENTITY not in headers:
            headers.append(_IDENTITY)
        await self._take_slot(request)
        try:
            response = await session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=_body(request) or None,
                allow_redirects=False,
                compress=False,
                timeout=self._timeout(request),
            )
        except BaseException as exc:
            self._slots.release()
            if isinstance(exc, TimeoutError | aiohttp.ClientError):
                raise (as_httpx_error(exc) or exc) from exc
            raise
        raw_headers = response.raw_headers
        if response.content_type == EVENT_STREAM or ("accept", EVENT_STREAM) in headers:
            body_stream = _BodyStream(response, self._slots.release)
            return httpx.Response(
                response.status, headers=raw_headers, stream=body_stream, request=request
            )
        try:
            body = await response.read()
        except BaseException as exc:
            response.close()  # cancelled, or broken: this connection is not reused
            error = as_httpx_error(exc) if isinstance(exc, aiohttp.ClientError) else None
            if error is None and isinstance(exc, asyncio.TimeoutError):
                error = httpx.ReadTimeout(str(exc) or "read timeout")
            if error is None:
                raise
            raise error from exc
        finally:
            response.release()
            self._slots.release()
        # httpx reads a body given as `content` at once: `response.content` is there.
        return httpx.Response(response.status, headers=raw_headers, content=body, request=request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
