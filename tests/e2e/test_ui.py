"""The chat page over HTTP: what it is served with, what it may load, and how it is turned off."""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from typing import TYPE_CHECKING

import httpx
import pytest

from app.http.routes.ui import STATIC_DIR
from tests.support.processes import ROOT

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.support.processes import WebProcess


def policy(response: httpx.Response) -> dict[str, str]:
    """The Content-Security-Policy as directive -> sources."""
    directives = (part.strip() for part in response.headers["content-security-policy"].split(";"))
    return dict((name, sources) for name, _, sources in (d.partition(" ") for d in directives if d))


class InlineCode(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block in the page's markup."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script":
            self.scripts.append(dict(attrs))
        if tag == "style" or "style" in names:
            self.inline.append(f"<{tag}> style")
        self.inline.extend(f"<{tag} {name}>" for name in names if name.startswith("on"))

    def handle_data(self, data: str) -> None:
        if self.lasttag == "script" and data.strip():
            self.inline.append("inline <script> body")


def test_the_page_is_served_at_the_root_with_a_strict_policy(client: httpx.Client) -> None:
    response = client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = policy(response)
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


def test_the_page_has_no_inline_script_or_style(client: httpx.Client) -> None:
    parser = InlineCode()
    parser.feed(client.get("/").text)

    assert parser.scripts == [{"type": "module", "src": "/ui/main.js"}]
    assert parser.inline == []


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/ui/main.js", "text/javascript"),
        ("/ui/markdown.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ],
)
def test_assets_are_served_with_the_page_headers(
    client: httpx.Client, path: str, media_type: str
) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert policy(response)["script-src"] == "'self'"


def test_an_unknown_asset_is_a_json_404(client: httpx.Client) -> None:
    response = client.get("/ui/nothing-here.js")

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


def test_the_api_and_the_docs_keep_their_own_headers(client: httpx.Client) -> None:
    docs = client.get("/docs")
    models = client.get("/models", headers={"Origin": "http://localhost:3000"})

    # Swagger UI loads its pinned files from a CDN: its policy is its own, not the page's.
    assert docs.status_code == 200
    assert policy(docs)["script-src"] != "'self'"
    assert "content-security-policy" not in models.headers
    assert models.headers["access-control-allow-origin"] == "*"


def test_serve_ui_false_leaves_only_the_api(start_api: Callable[..., WebProcess]) -> None:
    web = start_api(SERVE_UI="false")
    with httpx.Client(base_url=web.url, timeout=10) as http:
        page = http.get("/")
        asset = http.get("/ui/main.js")
        health = http.get("/health")

    assert page.status_code == 404
    assert page.json()["error"]["type"] == "not_found"
    assert asset.status_code == 404
    assert health.status_code == 200


def test_a_regular_install_ships_every_page_file(tmp_path: Path) -> None:
    """What `pip install .` (the Dockerfile) copies: the package data setuptools is told of."""
    setup = "import setuptools; setuptools.setup()"
    result = subprocess.run(
        [sys.executable, "-c", setup, "-q", "build_py", "--build-lib", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    shipped = {path.name for path in (tmp_path / "app" / "http" / "static").iterdir()}
    assert shipped == {path.name for path in STATIC_DIR.iterdir()}
    # The Lua scripts are package data too, the worker's among them.
    scripts = {path.name for path in (ROOT / "app/store/lua").glob("*.lua")}
    assert "prelude.lua" in scripts
    assert {path.name for path in (tmp_path / "app/store/lua").glob("*.lua")} == scripts
