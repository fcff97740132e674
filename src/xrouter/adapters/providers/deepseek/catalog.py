"""The DeepSeek models this gateway knows, with their limits (api-docs.deepseek.com, "Models &
Pricing", read November 2026). Listed on `/v1/models` even when discovery is off, and what
decides whether the `thinking` switch is sent: a model not listed here gets no switch,
since an unknown model may reject a field it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeepSeekModel:
    """One model: its id, context window and largest output, in tokens."""

    id: str
    context_window: int
    max_output_tokens: int
    thinking: bool
    """It accepts `thinking: {"type": "enabled" | "disabled"}`."""


_ONE_M = 1_048_576

CATALOG: tuple[DeepSeekModel, ...] = (
    DeepSeekModel("deepseek-flash", _ONE_M, 393_216, thinking=True),
    DeepSeekModel("deepseek-v4-flash", _ONE_M, 393_216, thinking=True),
    DeepSeekModel("deepseek-v4-pro", _ONE_M, 393_216, thinking=True),
    # The V3.2-era names, now aliases being retired; their documented (smaller) limits kept,
    # as the safe side when a client sizes its request by them.
    DeepSeekModel("deepseek-chat", 131_072, 8_192, thinking=True),
    DeepSeekModel("deepseek-reasoner", 131_072, 65_536, thinking=True),
)


def find_model(model_id: str) -> DeepSeekModel | None:
    """The catalog entry of `model_id` (as the upstream names it), or None."""
    for model in CATALOG:
        if model.id == model_id:
            return model
    return None
