"""The chat page in headless Chromium, against the real API and the OpenRouter stand-in.

Each test uses the page as a person does (types, presses keys, clicks) and checks both what
the page shows and what reached the API and the stand-in.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.conftest import base_env, bearer
from tests.support.browser import ChatPage, PageProblems, launch
from tests.support.processes import ProcfileProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, BrowserContext

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"
DESKTOP = {"width": 1280, "height": 820}
PHONE = {"width": 390, "height": 844}

OpenPage = Callable[..., ChatPage]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope: Playwright's loop is gone before other modules' asyncio tests run.
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser: Browser, api: WebProcess) -> Iterator[OpenPage]:
    """A new browser context per call (its own session storage); no script errors allowed."""
    contexts: list[BrowserContext] = []
    problems: list[PageProblems] = []

    def open_page(url: str = api.url, **options: Any) -> ChatPage:
        context = browser.new_context(**{"viewport": DESKTOP, **options})
        contexts.append(context)
        page = context.new_page()
        problems.append(PageProblems(page))
        return ChatPage(page, url)

    yield open_page
    for context in contexts:
        context.close()
    assert [error for found in problems for error in found.errors] == []


@pytest.fixture
def chat(open_page: OpenPage) -> ChatPage:
    return open_page()


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """The first truthy result of `check`, polled until `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def streaming_shows(chat: ChatPage, index: int, present: str, absent: str) -> None:
    """Waits until answer `index` is still streaming and shows `present` but not yet `absent`."""
    chat.page.wait_for_function(
        """([index, present, absent]) => {
            const answer = document.querySelectorAll('.message.assistant')[index];
            return answer && answer.dataset.state === 'streaming'
                && answer.textContent.includes(present) && !answer.textContent.includes(absent);
        }""",
        arg=[index, present, absent],
    )


def test_two_streamed_answers_the_second_knowing_the_first(
    chat: ChatPage, api_key: str, standin: StandinServer
) -> None:
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet"
    standin.control.script(api_key, {"content": words, "chunk_delay": 0.15}, {"chunk_delay": 0.2})
    chat.open(api_key)

    chat.send("Name ten words.")
    streaming_shows(chat, 0, present="alpha", absent="juliet")
    first = chat.wait_answer(0)
    expect(first.locator(".markdown")).to_have_text(words)
    expect(first.locator(".meta")).to_have_text(
        re.compile(r"^anthropic/claude-sonnet-4\.5 · 3 in \+ 10 out = 13 tokens · \$0\.\d+$")
    )

    chat.send("And the first one again?")
    streaming_shows(chat, 1, present="Echo", absent="again?")
    second = chat.wait_answer(1)
    # The stand-in echoes how many user messages it was sent: the whole conversation.
    expect(second.locator(".markdown")).to_have_text("Echo 2: And the first one again?")
    expect(second.locator(".meta")).to_contain_text("tokens · $")
    sent = standin.control.requests(api_key)[1]["body"]["messages"]
    assert sent == [
        {"role": "user", "content": "Name ten words."},
        {"role": "assistant", "content": words},
        {"role": "user", "content": "And the first one again?"},
    ]
    expect(chat.page.locator(".session-title")).to_have_text(["Name ten words."])


def test_sessions_switch_continue_and_delete(chat: ChatPage, api_key: str, api: WebProcess) -> None:
    chat.open(api_key)
    chat.send("First topic")
    chat.wait_answer(0)
    chat.page.click("#new-chat")
    expect(chat.answers).to_have_count(0)
    chat.send("Second topic")
    chat.wait_answer(0)
    expect(chat.page.locator(".session-title")).to_have_text(["Second topic", "First topic"])

    chat.session_item("First topic").locator(".session-open").click()
    expect(chat.page.locator("#title")).to_have_text("First topic")
    expect(chat.questions).to_have_text(["First topic"])
    expect(chat.answer(0).locator(".markdown")).to_have_text("Echo 1: First topic")
    chat.send("More on it")
    expect(chat.wait_answer(1).locator(".markdown")).to_have_text("Echo 2: More on it")
    first_id, second_id = (
        chat.session_item(title).get_attribute("data-session-id")
        for title in ("First topic", "Second topic")
    )

    # Cancelled: nothing happens.
    chat.session_item("Second topic").locator(".session-delete").click()
    expect(chat.page.locator("#delete-dialog")).to_be_visible()
    chat.page.keyboard.press("Escape")
    expect(chat.page.locator("#delete-dialog")).to_be_hidden()
    expect(chat.page.locator(".session")).to_have_count(2)

    # The open conversation, deleted: the page starts a new one.
    chat.session_item("First topic").locator(".session-delete").click()
    chat.page.click("#delete-confirm")
    expect(chat.page.locator(".session-title")).to_have_text(["Second topic"])
    expect(chat.page.locator("#title")).to_have_text("New chat")
    expect(chat.answers).to_have_count(0)
    with httpx.Client(base_url=api.url, headers=bearer(api_key), timeout=10) as http:
        assert http.get(f"/sessions/{first_id}").status_code == 404
        assert http.get(f"/sessions/{second_id}").status_code == 200


def test_the_side_list_pages_through_many_sessions(
    chat: ChatPage, api_key: str, api: WebProcess
) -> None:
    with httpx.Client(base_url=api.url, headers=bearer(api_key), timeout=10) as http:
        for number in range(52):
            assert http.post("/chat", json={"message": f"topic {number}"}).status_code == 200
    chat.open(api_key)
    sessions = chat.page.locator(".session")
    more = chat.page.locator("#more-sessions")

    expect(sessions).to_have_count(50)
    expect(sessions.first).to_have_text(re.compile("^topic 51"))
    more.click()
    expect(sessions).to_have_count(52)
    expect(sessions.last).to_have_text(re.compile("^topic 0"))
    expect(more).to_be_hidden()


def test_a_rate_limit_shows_the_wait_then_retry_succeeds(
    chat: ChatPage, api_key: str, standin: StandinServer
) -> None:
    standin.control.script(
        api_key,
        {"status": 429, "message": "Rate limit exceeded: limit_rpm", "headers": {"Retry-After": 3}},
    )
    chat.open(api_key)
    chat.send("Hello?")

    card = chat.wait_answer(0, "error").locator(".error-card")
    retry = card.get_by_role("button", name="Retry")
    expect(card.locator(".error-title")).to_have_text("Rate limited")
    expect(card.locator(".wait")).to_have_text(re.compile(r"^Try again in [1-3] s\.$"))
    expect(card).to_contain_text("Rate limit exceeded: limit_rpm")
    expect(retry).to_be_disabled()

    expect(retry).to_be_enabled()
    retry.click()
    expect(chat.questions).to_have_text(["Hello?"])
    expect(chat.page.locator(".unsent")).to_have_count(0)
    expect(chat.wait_answer(0).locator(".markdown")).to_have_text("Echo 1: Hello?")


def test_out_of_credits_is_said_plainly(
    chat: ChatPage, api_key: str, standin: StandinServer
) -> None:
    standin.control.script(api_key, {"status": 402, "message": "Insufficient credits"})
    chat.open(api_key)
    chat.send("Hello?")

    card = chat.wait_answer(0, "error").locator(".error-card")
    expect(card.locator(".error-title")).to_have_text("Out of credits")
    expect(chat.questions.locator(".note")).to_have_text("Not sent")
    expect(card).to_contain_text("Add credits")
    expect(card.locator(".request-id")).to_have_text(re.compile(r"^Request id [0-9a-f]{32}$"))


def test_a_refused_key_asks_for_another_and_keeps_the_message(
    chat: ChatPage, api_key: str, standin: StandinServer
) -> None:
    chat.open("sk-or-v1-revoked-" + api_key[-16:])
    chat.send("Is this key good?")

    card = chat.wait_answer(0, "error").locator(".error-card")
    expect(card.locator(".error-title")).to_have_text("Key not accepted")
    card.get_by_role("button", name="Enter another key").click()
    expect(chat.page.locator("#token-error")).to_contain_text("OpenRouter refused this key")
    chat.enter_key(api_key)
    expect(chat.page.locator("#message")).to_have_value("Is this key good?")
    chat.page.press("#message", "Enter")
    expect(chat.wait_answer(0).locator(".markdown")).to_have_text("Echo 1: Is this key good?")
    assert len(standin.control.requests(api_key)) == 1


def test_a_broken_stream_keeps_what_arrived(
    chat: ChatPage, api_key: str, standin: StandinServer
) -> None:
    standin.control.script(api_key, {"content": "one two three four five", "error_after": 3})
    chat.open(api_key)
    chat.send("Count to five")

    answer = chat.wait_answer(0, "broken")
    expect(answer.locator(".markdown")).to_have_text("one two three")
    expect(answer.locator(".error-title")).to_have_text("The answer broke off")
    expect(answer.locator(".error-card")).to_contain_text("kept in the conversation")


def test_an_unreachable_backend_is_said_plainly(
    open_page: OpenPage, start_api: Callable[..., WebProcess], api_key: str
) -> None:
    web = start_api()
    chat = open_page(web.url)
    chat.open(api_key)
    expect(chat.page.locator("#session-note")).to_be_visible()
    web.stop()

    chat.send("Anyone there?")
    card = chat.wait_answer(0, "error").locator(".error-card")
    expect(card.locator(".error-title")).to_have_text(re.compile(r"^Can.t reach the backend$"))
    expect(card).to_contain_text(f"No answer from {web.url}")


@pytest.mark.parametrize("how", ["button", "escape"])
def test_stop_cancels_the_stream_midway(
    chat: ChatPage, api_key: str, standin: StandinServer, api: WebProcess, how: str
) -> None:
    words = " ".join(f"word{number}" for number in range(60))
    standin.control.script(api_key, {"content": words, "chunk_delay": 0.25})
    chat.open(api_key)
    chat.send("Talk for a while")

    streaming_shows(chat, 0, present="word2", absent="word59")
    if how == "button":
        chat.page.click("#stop")
    else:
        chat.page.keyboard.press("Escape")

    answer = chat.wait_answer(0, "stopped")
    expect(answer.locator(".note")).to_have_text("Stopped. The text so far is kept.")
    expect(chat.page.locator("#send")).to_be_visible()
    expect(chat.page.locator("#stop")).to_be_hidden()
    shown = answer.locator(".markdown").inner_text()
    assert shown.startswith("word0 word1 word2")
    assert "word59" not in shown
    # The hang-up reached the upstream call, and the partial answer was saved.
    eventually(lambda: standin.control.requests(api_key)[0]["cancelled"], "the upstream cancel")
    (session_id,) = chat.session_ids()
    with httpx.Client(base_url=api.url, headers=bearer(api_key), timeout=10) as http:

        def saved() -> dict[str, Any] | None:
            response = http.get(f"/sessions/{session_id}")
            return response.json()["messages"][-1] if response.status_code == 200 else None

        message = eventually(saved, "the partial answer in the session")
    assert message["interrupted"] is True
    assert words.startswith(message["content"])

    # The conversation goes on, with the stopped answer in its history.
    chat.send("Go on")
    expect(chat.wait_answer(1).locator(".markdown")).to_have_text("Echo 2: Go on")


def test_model_output_cannot_inject_html_or_scripts(
    chat: ChatPage, api_key: str, standin: StandinServer
) -> None:
    attack = "\n".join(
        [
            '<img src=x onerror="window.__injected = 1">',
            "[click me](javascript:window.__injected=2) and [also](JaVaScRiPt:alert(3))",
            "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==) <javascript:x>",
            '<svg onload="window.__injected = 6"></svg>',
            "<script>window.__injected = 4</script>",
            '<a href="https://evil.example" onclick="window.__injected = 5">raw anchor</a>',
            "![pixel](https://tracker.example/p.png)",
        ]
    )
    standin.control.script(api_key, {"content": attack})
    chat.open(api_key)
    chat.send("Say something nasty")
    body = chat.wait_answer(0).locator(".markdown")

    # Raw HTML is shown as the text it is; nothing of it became an element.
    expect(body).to_contain_text('<img src=x onerror="window.__injected = 1">')
    expect(body).to_contain_text("<script>window.__injected = 4</script>")
    for selector in ("img", "svg", "script", "[onerror]", "[onclick]", "[onload]"):
        expect(chat.page.locator(f".messages {selector}")).to_have_count(0)
    # javascript: and data: links are left as plain text; clicking them does nothing.
    unsafe = body.locator(".unsafe-link")
    expect(unsafe).to_have_text(["click me", "also", "data"])
    expect(body).to_contain_text("<javascript:x>")
    unsafe.first.click()
    assert chat.page.evaluate("window.__injected") is None
    # Only http(s) links are made: the raw anchor's URL as text, the image as a link to it,
    # so nothing is fetched from the model's answer.
    links = body.locator("a")
    expect(links).to_have_text(["https://evil.example", "Image: pixel"])
    hrefs = links.evaluate_all("links => links.map(link => link.href)")
    assert hrefs == ["https://evil.example/", "https://tracker.example/p.png"]


def test_answers_render_markdown(chat: ChatPage, api_key: str, standin: StandinServer) -> None:
    answer = "\n".join(
        [
            "## Plan",
            "Use **Redis** with *one* `EVAL` per turn; see [the docs](https://redis.io/docs/).",
            "",
            "1. read the history",
            "2. call the model",
            "   - stream the answer",
            "",
            "> Keep keys in one slot.",
            "",
            "```lua",
            "return redis.call('RPUSH', KEYS[1], ARGV[1])",
            "```",
            "",
            "| key | type |",
            "|:----|-----:|",
            "| messages | list |",
        ]
    )
    standin.control.script(api_key, {"content": answer, "chunk_delay": 0.01})
    chat.open(api_key)
    chat.send("How?")
    body = chat.wait_answer(0).locator(".markdown")

    expect(body.locator("h2")).to_have_text("Plan")
    expect(body.locator("p strong")).to_have_text("Redis")
    expect(body.locator("p em")).to_have_text("one")
    expect(body.locator("p code")).to_have_text("EVAL")
    link = body.locator("p a")
    expect(link).to_have_attribute("href", "https://redis.io/docs/")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    expect(link).to_have_attribute("target", "_blank")
    expect(body.locator("ol > li")).to_have_count(2)
    expect(body.locator("ol > li ul > li")).to_have_text("stream the answer")
    expect(body.locator("blockquote")).to_have_text("Keep keys in one slot.")
    expect(body.locator(".code-language")).to_have_text("lua")
    expect(body.locator("pre code")).to_have_text("return redis.call('RPUSH', KEYS[1], ARGV[1])")
    expect(body.locator("th")).to_have_text(["key", "type"])
    expect(body.locator("td.align-right")).to_have_text("list")


def test_model_search_picks_the_model_that_is_sent(
    chat: ChatPage, api_key: str, standin: StandinServer
) -> None:
    chat.open(api_key)
    search = chat.page.locator("#model-search")
    search.click()
    search.fill("sonnet 4.5")
    options = chat.page.locator("#model-list [role=option]")
    expect(options.first).to_contain_text("Anthropic: Claude Sonnet 4.5")
    expect(search).to_have_attribute("aria-expanded", "true")
    search.press("Enter")
    expect(search).to_have_value("Anthropic: Claude Sonnet 4.5")
    expect(chat.page.locator("#model-list")).to_be_hidden()
    expect(chat.page.locator("#message")).to_be_focused()

    chat.page.keyboard.type("Hi")
    chat.page.keyboard.press("Enter")
    expect(chat.wait_answer(0).locator(".meta")).to_contain_text("anthropic/claude-sonnet-4.5")
    assert standin.control.requests(api_key)[0]["body"]["model"] == "anthropic/claude-sonnet-4.5"

    # Escape closes the list and keeps the choice; a reload remembers it.
    search.click()
    search.fill("gpt")
    search.press("Escape")
    expect(search).to_have_value("Anthropic: Claude Sonnet 4.5")
    chat.page.reload()
    expect(search).to_have_value("Anthropic: Claude Sonnet 4.5")


def test_a_new_session_takes_a_system_prompt(
    chat: ChatPage, api_key: str, standin: StandinServer
) -> None:
    chat.open(api_key)
    chat.page.click("#system-box summary")
    chat.page.fill("#system-prompt", "You answer in haiku.")
    chat.send("Hi")
    chat.wait_answer(0)
    expect(chat.page.locator("#system-box")).to_be_hidden()
    messages = standin.control.requests(api_key)[0]["body"]["messages"]
    assert messages[0] == {"role": "system", "content": "You answer in haiku."}

    # The key is still in this tab's session storage after a reload: no prompt for it.
    chat.page.reload()
    expect(chat.page.locator(".session")).to_have_count(1)
    expect(chat.page.locator("#token-dialog")).to_be_hidden()
    chat.session_item("Hi").locator(".session-open").click()
    expect(chat.page.locator("#system-note")).to_contain_text("You answer in haiku.")


REDIS_ANSWER = "\n".join(
    [
        "Keep each conversation in a **list** and its metadata in a **hash**, under one hash "
        "tag so that a cluster keeps them in one slot:",
        "",
        "- `chat:{id}:messages`: one JSON entry per message, oldest first",
        "- `chat:{id}:meta`: owner, title, model and counters",
        "",
        "Commit each turn in one script, so a failure never leaves half a turn:",
        "",
        "```lua",
        "redis.call('RPUSH', KEYS[1], ARGV[1], ARGV[2])",
        "redis.call('LTRIM', KEYS[1], -50, -1)",
        "```",
    ]
)
EXPIRY_ANSWER = (
    "Give every key of a session the same TTL and refresh it on each turn, with `PEXPIRE` in "
    "the same script. Idle conversations then disappear on their own, and a sorted set scored "
    "by last activity lets a worker prune the index."
)


def background(chat: ChatPage) -> tuple[int, ...]:
    colour: str = chat.page.evaluate("getComputedStyle(document.body).backgroundColor")
    return tuple(int(part) for part in re.findall(r"\d+", colour)[:3])


def test_a_conversation_in_light_dark_and_phone_width(
    open_page: OpenPage, api: WebProcess, api_key: str, standin: StandinServer, redis_url: str
) -> None:
    """Saves the README's screenshots, and checks each layout can be read and used."""
    SCREENSHOTS.mkdir(exist_ok=True)
    # The page shows a key's last four characters: the same in every run's pictures.
    api_key = api_key[:-4] + "7f3a"
    with httpx.Client(base_url=api.url, headers=bearer(api_key), timeout=10) as http:
        for title in ("Plan a three-day trip to Lisbon", "Explain SSE keep-alives"):
            assert http.post("/chat", json={"message": title}).status_code == 200
    standin.control.script(
        api_key,
        {"content": REDIS_ANSWER, "chunk_delay": 0.01},
        {"content": EXPIRY_ANSWER, "chunk_delay": 0.01},
    )

    light = open_page()
    light.open(api_key)
    search = light.page.locator("#model-search")
    search.click()
    search.fill("claude sonnet 4.5")
    search.press("Enter")
    light.send("What's a good way to keep chat history in Redis?")
    light.wait_answer(0)
    light.send("And how do I expire old ones?")
    light.wait_answer(1)
    expect(light.page.locator(".session")).to_have_count(3)
    assert background(light) == (255, 255, 255)
    light.page.screenshot(path=SCREENSHOTS / "conversation.png", animations="disabled")

    # With the worker's usage counted, the side list shows each session's totals.
    with (
        ProcfileProcess("worker", base_env(redis_url, standin)),
        httpx.Client(base_url=api.url, headers=bearer(api_key), timeout=10) as http,
    ):
        eventually(
            lambda: all(
                session["usage"]["turns"] == session["message_count"] // 2
                for session in http.get("/sessions").json()["sessions"]
            ),
            "the worker's usage counts",
        )
    dark = open_page(color_scheme="dark")
    dark.open(api_key)
    expect(dark.session_item("Redis").locator(".session-detail")).to_have_text(
        re.compile(r"^just now · 2 turns · \$0\.0019$")
    )
    expect(dark.session_item("Redis").locator(".session-open")).to_have_attribute(
        "title", "2 turns · 199 tokens · $0.0019"
    )
    dark.session_item("Redis").locator(".session-open").click()
    dark.wait_answer(1)
    assert max(background(dark)) < 40
    dark.page.mouse.move(0, 0)
    dark.page.screenshot(path=SCREENSHOTS / "conversation-dark.png", animations="disabled")

    phone = open_page(viewport=PHONE, is_mobile=True, has_touch=True)
    phone.open(api_key)
    sidebar = phone.page.locator("#sidebar")
    expect(sidebar).to_be_hidden()
    phone.page.click("#menu-button")
    expect(sidebar).to_be_visible()
    phone.session_item("Redis").locator(".session-open").click()
    expect(sidebar).to_be_hidden()
    phone.wait_answer(1)
    # Nothing wider than the phone: no sideways scrolling, the composer in view.
    assert phone.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    expect(phone.page.locator("#message")).to_be_in_viewport()
    expect(phone.page.locator("#send")).to_be_in_viewport()
    phone.page.screenshot(path=SCREENSHOTS / "conversation-phone.png", animations="disabled")
