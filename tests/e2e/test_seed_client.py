"""The seed README's Python client runs unchanged, but for its URL and key, and keeps context."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

# Verbatim from the seed README ("Exemplo de Cliente Python"); only the base URL and the key
# are replaced before it runs.
SEED_CLIENT = """\
import httpx
import asyncio

class OpenRouterClient:
    def __init__(self, api_key: str, base_url: str = "http://localhost:8000"):
        self.api_key = api_key
        self.base_url = base_url
        self.session_id = None
    
    async def chat(self, message: str, model: str = "anthropic/claude-3.5-sonnet"):
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{self.base_url}/chat",
                headers={"Authorization": f"Bearer {self.api_key}"},
                json={
                    "message": message,
                    "model": model,
                    "session_id": self.session_id
                }
            )
            
            if response.status_code == 200:
                data = response.json()
                self.session_id = data["session_id"]
                return data["response"]
            else:
                return f"Erro: {response.status_code} - {response.text}"

# Uso
async def main():
    client = OpenRouterClient("sua_chave_openrouter")
    
    response = await client.chat("Olá, explique o que é machine learning")
    print(response)
    
    # Continuar conversa (mantém contexto)
    response = await client.chat("Pode dar um exemplo prático?")
    print(response)

# Executar
asyncio.run(main())
"""
FIRST = "Olá, explique o que é machine learning"
SECOND = "Pode dar um exemplo prático?"


def test_seed_python_client_keeps_context(
    api: WebProcess, client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    source = SEED_CLIENT.replace('"http://localhost:8000"', repr(api.url)).replace(
        '"sua_chave_openrouter"', repr(api_key)
    )
    # httpx honours proxy variables; the API is local.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONIOENCODING"] = "utf-8"

    run = subprocess.run(
        [sys.executable, "-c", source], env=env, capture_output=True, timeout=60, check=False
    )

    assert run.returncode == 0, run.stderr.decode()
    printed = run.stdout.decode("utf-8").splitlines()
    first, second = (record["body"] for record in standin.control.requests(api_key))
    # The stand-in echoes the last user message, numbered by the user messages it was sent.
    assert printed == [f"Echo 1: {FIRST}", f"Echo 2: {SECOND}"]
    assert first["messages"] == [{"role": "user", "content": FIRST}]
    assert second["messages"] == [
        {"role": "user", "content": FIRST},
        {"role": "assistant", "content": printed[0]},
        {"role": "user", "content": SECOND},
    ]
    # The seed names a retired id: sent as its successor (MODEL_ALIASES), which OpenRouter has.
    assert first["model"] == second["model"] == "anthropic/claude-sonnet-4.5"
