"""Debian's Chromium, driven by Playwright, and the chat page as a person uses it.

Playwright never downloads a browser here: it drives the system's `chromium`. Without one the
browser tests are skipped, unless REQUIRE_BROWSER=1 (set by CI), which makes that a failure.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import expect

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, Playwright

# No sandbox as root; and nothing that would reach for a network this machine does not have.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Generous: the machine is shared, and every wait polls for its condition.
TIMEOUT_MS = 30_000


def chromium_path() -> str:
    """The system Chromium, or a skip (a failure under REQUIRE_BROWSER=1) naming what to do."""
    path = shutil.which("chromium")
    if path is not None:
        return path
    reason = "no `chromium` on PATH: `apt-get install chromium` to run the chat page's tests"
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def launch(playwright: Playwright) -> Browser:
    expect.set_options(timeout=TIMEOUT_MS)
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


class PageProblems:
    """Script errors and console errors of a page (a CSP violation is one), to assert none."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        # The browser logs every 4xx/5xx and refused connection; the tests provoke those.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {message.text}")


class ChatPage:
    """The chat page at `url`, with the steps a person takes."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url
        page.set_default_timeout(TIMEOUT_MS)

    def open(self, key: str | None = None) -> None:
        self.page.goto(f"{self.url}/")
        if key is not None:
            self.enter_key(key)

    def enter_key(self, key: str) -> None:
        dialog = self.page.locator("#token-dialog")
        expect(dialog).to_be_visible()
        self.page.fill("#token", key)
        self.page.click("#token-form button[type=submit]")
        expect(dialog).to_be_hidden()

    def send(self, text: str) -> None:
        self.page.fill("#message", text)
        self.page.press("#message", "Enter")

    @property
    def answers(self) -> Locator:
        return self.page.locator(".message.assistant")

    @property
    def questions(self) -> Locator:
        return self.page.locator(".message.user")

    def answer(self, index: int) -> Locator:
        return self.answers.nth(index)

    def wait_answer(self, index: int, state: str = "done") -> Locator:
        answer = self.answer(index)
        expect(answer).to_have_attribute("data-state", state)
        return answer

    def session_item(self, title: str) -> Locator:
        return self.page.locator(".session", has_text=title)

    def session_ids(self) -> list[str]:
        ids: list[str] = self.page.eval_on_selector_all(
            ".session", "items => items.map(item => item.dataset.sessionId)"
        )
        return ids
