"""The image's HEALTHCHECK: `chat-backend healthcheck` exits 0 when this container is healthy.

For the API that is `GET /health` answering 200 on $PORT. The worker serves no HTTP; a live
worker container is a healthy one (its heartbeat is reported by the API's /health).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path


def container_role() -> str:
    """`worker` when the container's main process runs the worker, else `web`."""
    if os.environ.get("PROCESS_ROLE") == "worker":
        return "worker"
    try:
        arguments = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "web"
    return "worker" if b"worker" in arguments else "web"


def main() -> int:
    if container_role() == "worker":
        return 0
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health"
    try:
        # A fixed loopback URL of this container's own API.
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1
