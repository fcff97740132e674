"""The x-ratelimit-* headers OpenAI clients read, for a key with limits (XR_AUTH=keys).

Sent on every response of a limited key, refusals included: limit, remaining (after this
request) and reset (time until the window's count starts again, in OpenAI's duration
format: `20ms`, `1.5s`, `1m0s`) for requests and for tokens, each trio only when the key
has that limit.
"""

from __future__ import annotations

from xrouter.application.ports import RateState


def rate_limit_headers(state: RateState) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    for kind, limit, remaining, reset in (
        ("requests", state.limit_requests, state.remaining_requests, state.reset_requests_s),
        ("tokens", state.limit_tokens, state.remaining_tokens, state.reset_tokens_s),
    ):
        if limit is None:
            continue
        headers.append((f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()))
        headers.append(
            (f"x-ratelimit-remaining-{kind}".encode(), str(max(0, remaining or 0)).encode())
        )
        if reset is not None:
            headers.append((f"x-ratelimit-reset-{kind}".encode(), duration(reset).encode()))
    return headers


def duration(seconds: float) -> str:
    """OpenAI's (Go's) duration spelling: `250ms`, `1.5s`, `1m0s`."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"
