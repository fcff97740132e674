"""Fallback chains from the TOML file (docs/providers.md "Fallbacks").

```toml
[fallbacks]            # tried after the model on 429, 5xx, timeouts, unreachable upstreams
"openai/gpt-4o" = ["openrouter/openai/gpt-4o", "ollama/llama3.1"]
smart = ["openrouter/anthropic/claude-sonnet-4"]   # keyed by an alias works too

[context_fallbacks]    # tried when the input is too long for the model's context
"openai/gpt-4o-mini" = ["openai/gpt-4.1"]
```

A chain is keyed by the id the client names (model or alias), or by the routed
`provider/model` id; a request's own `models` list replaces `[fallbacks]` for that request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xrouter.entrypoints.env_fields import ConfigError

TABLES = ("fallbacks", "context_fallbacks")


def fallback_chains(path: str, data: Mapping[str, Any], table: str) -> dict[str, tuple[str, ...]]:
    """`[table]` of the TOML file at `path`: model id -> the ids tried after it, in order;
    a ConfigError names the table and the entry that is wrong."""
    raw = data.get(table, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [{table}] must be a table of model = [fallback ids].")
    chains: dict[str, tuple[str, ...]] = {}
    for model, chain in raw.items():
        if not isinstance(chain, list) or not all(isinstance(m, str) and m for m in chain):
            raise ConfigError(
                f"{path}: [{table}] {model!r} must be a list of model ids "
                f'(like ["openrouter/openai/gpt-4o"]), not {chain!r}.'
            )
        if model in chain:
            raise ConfigError(f"{path}: [{table}] {model!r} lists itself as its own fallback.")
        chains[model] = tuple(chain)
    return chains
