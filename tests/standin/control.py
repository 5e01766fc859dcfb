"""Synchronous client for the stand-in's `/_standin` control endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import httpx
import msgspec

if TYPE_CHECKING:
    from types import TracebackType


class StandinControlError(RuntimeError):
    """The stand-in refused a control call (e.g. a misspelt step field)."""


class StandinControl:
    def __init__(self, root_url: str, *, timeout: float = 10.0) -> None:
        # trust_env=False: a proxy from the environment must never sit between tests and 127.0.0.1.
        self._client = httpx.Client(
            base_url=f"{root_url.rstrip('/')}/_standin", timeout=timeout, trust_env=False
        )

    def script(self, key: str, *steps: dict[str, Any]) -> None:
        """Queue steps for requests bearing `key`; each request consumes one, in order."""
        self._call("POST", "/script", {"key": key, "steps": list(steps)})

    def requests(self, key: str | None = None) -> list[dict[str, Any]]:
        params = {"key": key} if key is not None else None
        records: list[dict[str, Any]] = self._call("GET", "/requests", params=params)["requests"]
        return records

    def reset(self) -> None:
        self._call("POST", "/reset", {})

    def fail_models(self, spec: dict[str, Any] | None) -> None:
        """Make `GET /models` fail as `spec` says, or serve normally again with None."""
        self._call("POST", "/models", {"fail": spec})

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = self._call("GET", "/stats")
        return stats

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        content = msgspec.json.encode(payload) if payload is not None else None
        headers = {"content-type": "application/json"} if content is not None else None
        response = self._client.request(
            method, path, content=content, headers=headers, params=params
        )
        if response.status_code != 200:
            raise StandinControlError(f"{method} {path}: {response.status_code} {response.text}")
        return msgspec.json.decode(response.content)
