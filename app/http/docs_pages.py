"""The documentation viewers' pages: Swagger UI at /docs and ReDoc at /redoc.

Users paste their key into Swagger UI's "Authorize", so what may run on these pages is pinned:
each third-party file is named by its exact, versioned CDN URL with a Subresource Integrity
hash (a file that changed is refused by the browser), the Content-Security-Policy lets only
those URLs and the page's own inline script run, and the page may talk to this origin alone.
The viewers fetch the document from /openapi.json. Styles may be inline: both viewers style
elements from script, and a style can neither run code nor, with these policies, load anything.

The hashes are SHA-384 digests of the files in the packages' published tarballs, which the CDN
serves byte for byte. To upgrade one: `npm pack NAME@VERSION`, then
`openssl dgst -sha384 -binary FILE | base64` for each file named here.
"""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass, field

from app.http.page_headers import content_security_policy, page_headers

CDN = "https://cdn.jsdelivr.net/npm"
SWAGGER_UI_VERSION = "5.35.0"
REDOC_VERSION = "2.5.4"
# The document both viewers load, by its path on this origin.
DOCUMENT_PATH = "/openapi.json"


@dataclass(frozen=True, slots=True)
class Asset:
    """A third-party file, by its exact URL and the digest its bytes must have."""

    url: str
    integrity: str

    def script(self) -> str:
        return (
            f'<script src="{self.url}" integrity="{self.integrity}" '
            'crossorigin="anonymous"></script>'
        )

    def stylesheet(self) -> str:
        return (
            f'<link rel="stylesheet" href="{self.url}" integrity="{self.integrity}" '
            'crossorigin="anonymous">'
        )


SWAGGER_UI_JS = Asset(
    f"{CDN}/swagger-ui-dist@{SWAGGER_UI_VERSION}/swagger-ui-bundle.js",
    "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9",
)
SWAGGER_UI_CSS = Asset(
    f"{CDN}/swagger-ui-dist@{SWAGGER_UI_VERSION}/swagger-ui.css",
    "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I",
)
REDOC_JS = Asset(
    f"{CDN}/redoc@{REDOC_VERSION}/bundles/redoc.standalone.js",
    "sha384-w447zOpYfw/1Tv/5AK9NfHTlQIqE3RVR6KY62jCyy9zNDgO64cMwGGP1Fj0zJVf5",
)


def script_hash(source: str) -> str:
    """The CSP source that allows exactly this inline script."""
    digest = hashlib.sha256(source.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


@dataclass(frozen=True, slots=True)
class DocsPage:
    """One viewer: its files, the inline script that starts it, and the policy of the page."""

    scripts: tuple[Asset, ...]
    start: str
    styles: tuple[Asset, ...] = ()
    # ReDoc runs its search index in a worker it makes from a blob of its own code.
    blob_workers: bool = False
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        directives = {
            "default-src": ["'none'"],
            "script-src": [script_hash(self.start), *(asset.url for asset in self.scripts)],
            "style-src": [*(asset.url for asset in self.styles), "'unsafe-inline'"],
            "img-src": ["'self'", "data:"],
            "connect-src": ["'self'"],
            "base-uri": ["'none'"],
            "form-action": ["'none'"],
            "frame-ancestors": ["'none'"],
        }
        if self.blob_workers:
            directives["worker-src"] = ["blob:"]
        object.__setattr__(self, "headers", page_headers(content_security_policy(directives)))

    def html(self, title: str) -> bytes:
        head = "".join(
            (
                '<meta charset="utf-8">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                f"<title>{html.escape(title)}</title>",
                # No favicon request: it would only be a 404 in the log.
                '<link rel="icon" href="data:,">',
                "<style>body{margin:0;padding:0}</style>",
                *(asset.stylesheet() for asset in self.styles),
                *(asset.script() for asset in self.scripts),
            )
        )
        body = f'<div id="docs"></div><script>{self.start}</script>'
        page = f'<!DOCTYPE html><html lang="en"><head>{head}</head><body>{body}</body></html>'
        return page.encode()


SWAGGER_UI = DocsPage(
    scripts=(SWAGGER_UI_JS,),
    styles=(SWAGGER_UI_CSS,),
    start=(
        f'window.ui = SwaggerUIBundle({{url: "{DOCUMENT_PATH}", dom_id: "#docs", '
        "deepLinking: true, showExtensions: true, showCommonExtensions: true});"
    ),
)

REDOC = DocsPage(
    scripts=(REDOC_JS,),
    start=f'Redoc.init("{DOCUMENT_PATH}", {{}}, document.getElementById("docs"));',
    blob_workers=True,
)
