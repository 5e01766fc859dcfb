"""The catalogue's prices, as the budget holds them: micro-USD a token, per model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from app.store.spend import FREE, MICROS, Prices

if TYPE_CHECKING:
    from collections.abc import Iterable


class _Pricing(msgspec.Struct, frozen=True):
    prompt: str = "0"
    completion: str = "0"
    request: str = "0"


class _Model(msgspec.Struct, frozen=True):
    id: str
    pricing: _Pricing = _Pricing()


class _Models(msgspec.Struct, frozen=True):
    data: list[_Model]


_decoder = msgspec.json.Decoder(_Models)


def _micros(text: str) -> float | None:
    """A price string as micro-USD; None for one that is no price (`-1`: a router's, which
    depends on the model it picks)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value * MICROS if value >= 0 else None


class PriceBook:
    """Each model's prices from one copy of the catalogue.

    A model the catalogue has no price for (a router such as `openrouter/auto`, an id it does
    not list) is held at the catalogue's highest prices: the budget errs on the side of
    holding too much, and the turn's settle gives the rest back.
    """

    def __init__(self, body: bytes) -> None:
        self._prices: dict[str, Prices] = {}
        for model in _decoder.decode(body).data:
            prompt = _micros(model.pricing.prompt)
            completion = _micros(model.pricing.completion)
            request = _micros(model.pricing.request)
            if prompt is not None and completion is not None:
                self._prices[model.id] = Prices(prompt, completion, request or 0.0)
        prices = self._prices.values()
        self.top = Prices(
            max((p.prompt for p in prices), default=0.0),
            max((p.completion for p in prices), default=0.0),
            max((p.request for p in prices), default=0.0),
        )

    def __contains__(self, model: str) -> bool:
        return model in self._prices

    def of(self, models: Iterable[str]) -> Prices:
        """The prices a turn is held at: the highest of the models it may be sent to."""
        found = [self._prices.get(model, self.top) for model in models]
        if not found:
            return FREE
        return Prices(
            max(p.prompt for p in found),
            max(p.completion for p in found),
            max(p.request for p in found),
        )


def fallback_models(fields: dict[str, Any]) -> list[str]:
    """The `models` a request names as fallbacks (OpenRouter's routing), if any."""
    models = fields.get("models")
    if not isinstance(models, list):
        return []
    return [model for model in models if isinstance(model, str)]
