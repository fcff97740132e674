"""Upstream token counts -> the canonical `Usage`: one rule for every provider's parser.

The rule: a total the upstream did not send is input + output, and a detail it did not send
is 0. What each upstream calls its counts stays in its parser (Chat Completions'
`prompt_tokens`, Responses' `input_tokens`, GigaChat's `precached_prompt_tokens`), and so do
counts that mean something else there (GigaChat's `total_tokens` is its billable count, so its
parser does not hand it over).
"""

from __future__ import annotations

from msgspec import Struct

from xrouter.domain.responses import InputTokensDetails, OutputTokensDetails, Usage


class InputTokenDetails(Struct):
    """`prompt_tokens_details` (Chat Completions) and `input_tokens_details` (Responses): the
    same fields in both, each optional on the wire."""

    cached_tokens: int | None = None
    cache_write_tokens: int | None = None  # OpenRouter: input written to the prompt cache


class OutputTokenDetails(Struct):
    """`completion_tokens_details` (Chat Completions) and `output_tokens_details` (Responses)."""

    reasoning_tokens: int | None = None


def canonical_usage(
    input_tokens: int,
    output_tokens: int,
    *,
    total_tokens: int | None = None,
    input_details: InputTokenDetails | None = None,
    output_details: OutputTokenDetails | None = None,
) -> Usage:
    """The canonical usage for an upstream's counts."""
    inp = input_details or InputTokenDetails()
    out = output_details or OutputTokenDetails()
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total_tokens if total_tokens is not None else input_tokens + output_tokens,
        input_tokens_details=InputTokensDetails(
            cached_tokens=inp.cached_tokens or 0, cache_write_tokens=inp.cache_write_tokens or 0
        ),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=out.reasoning_tokens or 0),
    )
