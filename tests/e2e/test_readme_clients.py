"""The README's client examples run as printed: httpx streaming, and browser JavaScript (fetch
and a stream reader) under Node.js, whose fetch is the browser's API. The seed's JavaScript
class runs unchanged too."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import httpx

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")

# The seed README's browser client, verbatim but for its comments in Portuguese.
SEED_JS_CLIENT = """\
class OpenRouterAPI {
    constructor(apiKey, baseUrl = 'http://localhost:8000') {
        this.apiKey = apiKey;
        this.baseUrl = baseUrl;
        this.sessionId = null;
    }

    async chat(message, model = 'anthropic/claude-3.5-sonnet') {
        try {
            const response = await fetch(`${this.baseUrl}/chat`, {
                method: 'POST',
                headers: {
                    'Authorization': `Bearer ${this.apiKey}`,
                    'Content-Type': 'application/json',
                },
                body: JSON.stringify({
                    message: message,
                    model: model,
                    session_id: this.sessionId
                })
            });

            if (!response.ok) {
                throw new Error(`HTTP error! status: ${response.status}`);
            }

            const data = await response.json();
            this.sessionId = data.session_id;
            return data.response;

        } catch (error) {
            console.error('Erro no chat:', error);
            throw error;
        }
    }

    async getModels() {
        const response = await fetch(`${this.baseUrl}/models`);
        return await response.json();
    }
}
"""


def readme_block(after: str, language: str) -> str:
    """The first `language` code block of the README that follows the line `after`."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index(after)
    match = re.compile(rf"```{language}\n(.+?)\n```", re.DOTALL).search(readme, start)
    assert match is not None, f"no {language} block after {after!r}"
    return match.group(1)


def run(args: list[str], source: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(
        [*args, source], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_readme_python_streaming_example(
    api: WebProcess, client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    example = readme_block("Streaming, with httpx:", "python")
    program = (
        example.replace("http://localhost:8000", api.url)
        + "\nimport asyncio\n"
        + f"done = asyncio.run(chat_stream({api_key!r}, 'tell me more'))\n"
        + "print()\nprint(json.dumps(done))\n"
    )

    result = run([sys.executable, "-c"], program)

    assert result.returncode == 0, result.stderr
    printed, done_line = result.stdout.rstrip("\n").rsplit("\n", 1)
    done = json.loads(done_line)
    assert printed == done["response"] == "Echo 1: tell me more"
    stored = client.get(
        f"/sessions/{done['session_id']}", headers={"Authorization": f"Bearer {api_key}"}
    ).json()
    assert [m["content"] for m in stored["messages"]] == ["tell me more", done["response"]]


@needs_node
def test_readme_javascript_streaming_example(
    api: WebProcess, client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    example = readme_block("### Browser JavaScript (fetch)", "javascript")
    program = (
        example.replace("http://localhost:8000", api.url)
        + f"""
(async () => {{
  const pieces = [];
  const first = await chatStream({json.dumps(api_key)}, 'hello there', null, t => pieces.push(t));
  const second = await chatStream({json.dumps(api_key)}, 'and again', first.session_id, () => {{}});
  console.log(JSON.stringify({{pieces, first, second}}));
}})().catch(e => {{ console.error(e); process.exit(1); }});
"""
    )
    # A stream interrupted by the stand-in's mid-stream error rejects with its message.
    standin.control.script(api_key, {}, {}, {"error_after": 1, "error_code": 429})
    failing = program.replace(
        "console.log(JSON.stringify({pieces, first, second}));",
        """
  console.log(JSON.stringify({pieces, first, second}));
  try { await chatStream(KEY, 'fail now', second.session_id, () => {}); }
  catch (e) { console.log('rejected: ' + e.message); }""",
    ).replace("KEY", json.dumps(api_key))

    result = run([NODE or "node", "-e"], failing)

    assert result.returncode == 0, result.stderr
    summary_line, rejected = result.stdout.strip().splitlines()
    summary = json.loads(summary_line)
    assert "".join(summary["pieces"]) == summary["first"]["response"] == "Echo 1: hello there"
    assert len(summary["pieces"]) > 1  # it really streamed
    assert summary["second"]["session_id"] == summary["first"]["session_id"]
    assert summary["second"]["response"] == "Echo 2: and again"
    assert rejected.startswith("rejected: ")
    assert rejected != "rejected: the stream ended early"


@needs_node
def test_seed_javascript_client_keeps_context(
    api: WebProcess, client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    program = (
        SEED_JS_CLIENT
        + f"""
(async () => {{
  const api = new OpenRouterAPI({json.dumps(api_key)}, {json.dumps(api.url)});
  const one = await api.chat('Olá, como você está?');
  const two = await api.chat('E agora?');
  const models = await api.getModels();
  console.log(JSON.stringify({{one, two, models: models.data.length}}));
}})().catch(e => {{ console.error(e); process.exit(1); }});
"""
    )

    result = run([NODE or "node", "-e"], program)

    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out == {"one": "Echo 1: Olá, como você está?", "two": "Echo 2: E agora?", "models": 356}
    second = standin.control.requests(api_key)[1]["body"]
    assert [m["content"] for m in second["messages"]] == [
        "Olá, como você está?",
        "Echo 1: Olá, como você está?",
        "E agora?",
    ]
