"""What an operator pays for: the models a turn may reach (`ALLOWED_MODELS`), and the request
fields that would reach past them.

Patterns are model ids where `*` stands for any run of characters but `:`, so `anthropic/*`
allows Anthropic's models and not their `:online` variants (which add paid web searches);
write `anthropic/*:*` for those too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.errors import ModelNotAllowed
from app.settings import model_pattern

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

# OpenRouter's `provider` preferences that only pick among the providers of the same model.
ROUTING_ONLY = frozenset(
    {
        "order",
        "only",
        "ignore",
        "allow_fallbacks",
        "require_parameters",
        "data_collection",
        "zdr",
        "enforce_distillable_text",
        "quantizations",
        "sort",
        "max_price",
        "preferred_min_throughput",
        "preferred_max_latency",
    }
)


class ModelPolicy:
    """The allowed set; empty patterns allow every model and every field."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._compiled = [model_pattern(pattern) for pattern in self.patterns]

    def allows(self, model: str) -> bool:
        return not self._compiled or any(p.fullmatch(model) for p in self._compiled)

    def check(self, model: str, fields: Mapping[str, Any], fallbacks: Iterable[str]) -> None:
        """Refuse (403 `model_not_allowed`) a turn that could be answered by a model outside
        the allowed set: its model, a fallback in `models`, a plugin, a `provider` field that
        does more than pick a provider."""
        if not self._compiled:
            return
        allowed = ", ".join(self.patterns)
        for name, field in ((model, "model"), *((m, "models") for m in fallbacks)):
            if not self.allows(name):
                raise ModelNotAllowed(
                    f"{field}: {name!r} is not allowed on this server (ALLOWED_MODELS: {allowed})",
                    field=field,
                )
        if fields.get("plugins"):
            raise ModelNotAllowed(
                "plugins: not allowed on this server: they add paid tools to the allowed models",
                field="plugins",
            )
        provider = fields.get("provider")
        if provider is not None:
            extra = sorted(set(provider) - ROUTING_ONLY) if isinstance(provider, dict) else []
            if not isinstance(provider, dict) or extra:
                raise ModelNotAllowed(
                    f"provider: only routing preferences are allowed on this server "
                    f"({', '.join(sorted(ROUTING_ONLY))}); not {', '.join(extra) or 'this'}",
                    field="provider",
                )
