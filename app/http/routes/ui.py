"""The chat page: `/` serves app/http/static/index.html, `/ui/*` its scripts and styles.

Every response of the page carries a Content-Security-Policy that lets it run only its own
files and talk only to this origin, so text a model writes can neither run nor load anything,
and the key typed into the page can go nowhere but this backend. The API's routes are left as
they were; the documentation pages have policies of their own (app/http/docs_pages.py).
"""

from __future__ import annotations

from pathlib import Path

from litestar import MediaType, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

from app.http.page_headers import content_security_policy, page_headers

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

CONTENT_SECURITY_POLICY = content_security_policy(
    {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "connect-src": ["'self'"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
    }
)

SECURITY_HEADERS = page_headers(CONTENT_SECURITY_POLICY)

# Revalidated on every load, so a deploy is picked up at once; the files are small.
REVALIDATE = CacheControlHeader(no_cache=True)


async def with_security_headers(response: Response[object]) -> Response[object]:
    """The page's headers on one of its responses (an after-request hook)."""
    response.headers.update(SECURITY_HEADERS)
    return response


@get(
    "/",
    include_in_schema=False,
    sync_to_thread=False,
    cache_control=REVALIDATE,
    after_request=with_security_headers,
)
def chat_page() -> Response[bytes]:
    """The chat page (read per request: a few kilobytes, and edits show without a restart)."""
    return Response((STATIC_DIR / "index.html").read_bytes(), media_type=MediaType.HTML)


def ui_router() -> Router:
    """The page and its assets, each with the page's security headers."""
    assets = create_static_files_router(
        path="/ui",
        directories=[STATIC_DIR],
        name="ui",
        cache_control=REVALIDATE,
        after_request=with_security_headers,
    )
    return Router(path="/", route_handlers=[chat_page, assets])
