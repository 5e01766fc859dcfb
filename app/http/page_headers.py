"""The headers every HTML page of ours carries: its Content-Security-Policy, and the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


def content_security_policy(directives: Mapping[str, Iterable[str]]) -> str:
    """`name source source; name source ...`, in the order given."""
    return "; ".join(" ".join((name, *sources)) for name, sources in directives.items())


def page_headers(policy: str) -> dict[str, str]:
    """A page's policy, and headers that keep it out of frames, sniffing and referrers."""
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }
