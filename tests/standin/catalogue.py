"""The model catalogue: the `/models` payload, which ids are routable, and what they cost."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import msgspec

DEFAULT_MODELS_PATH = Path(__file__).resolve().parent.parent / "fixtures" / "openrouter-models.json"

ROUTER = "openrouter/auto"

# Display names seen in real responses; other authors fall back to a title-cased slug.
PROVIDER_NAMES = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "x-ai": "xAI",
    "mistralai": "Mistral",
    "minimax": "Minimax",
    "deepseek": "DeepSeek",
    "meta-llama": "Meta",
    "openrouter": "OpenRouter",
}


class _Pricing(msgspec.Struct):
    prompt: str
    completion: str


class _Model(msgspec.Struct):
    id: str
    pricing: _Pricing


class _Listing(msgspec.Struct):
    data: list[_Model]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token."""

    prompt: Decimal
    completion: Decimal


FREE = Price(Decimal(0), Decimal(0))


def _price(pricing: _Pricing) -> Price:
    # Routers list "-1" (priced by whichever model they pick); with no routed model to bill,
    # a negative price counts as free rather than producing a negative cost.
    prompt, completion = Decimal(pricing.prompt), Decimal(pricing.completion)
    return Price(max(prompt, Decimal(0)), max(completion, Decimal(0)))


class Catalogue:
    def __init__(self, path: Path | None = None) -> None:
        raw = (path or DEFAULT_MODELS_PATH).read_bytes()
        # Re-encoded once so every `/models` response is the same compact bytes.
        self.models_body: bytes = msgspec.json.encode(msgspec.json.decode(raw))
        listing = msgspec.json.decode(raw, type=_Listing)
        self._prices = {model.id: _price(model.pricing) for model in listing.data}
        # Every id the catalogue lacks is refused, as OpenRouter refuses it.
        self._prices.setdefault(ROUTER, FREE)

    def knows(self, model: str) -> bool:
        return model in self._prices

    def price(self, model: str) -> Price:
        return self._prices.get(model, FREE)


def provider_name(model: str) -> str:
    author = model.split("/", 1)[0].lstrip("~")
    return PROVIDER_NAMES.get(author) or author.title()
