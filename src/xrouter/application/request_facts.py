"""What the gateway learns about the request being served, shared by the parties serving it.

One `RequestFacts` per request, reachable through the context key `CURRENT_REQUEST`. The host
(the HTTP entrypoint) puts a fresh one in the context when a request arrives; the engine uses
it (or makes its own outside a host) and the generation task inherits the context (asyncio
copies it at task creation), so:

- the engine notes the routed model and provider as soon as they are known, and the terminal
  `RequestOutcome`;
- the upstream transport counts its attempts on it;
- the host writes the access line from it, and ends the request's server span once both the
  response has gone out and generation has ended (`hold` / `release`): a client that leaves
  during generate does not end the request, generation does.

The application knows nothing of logging formats, spans or HTTP here.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from xrouter.application.outcome import RequestOutcome
from xrouter.domain.fallbacks import SkippedAttempt


@dataclass(slots=True, eq=False)
class RequestFacts:
    """One request's facts; None until known."""

    request_id: str
    route: str | None = None
    """The host's route, as `METHOD /path`."""
    api: str = "responses"
    model: str | None = None
    provider: str | None = None
    upstream_model: str | None = None
    key_id: str | None = None
    """The gateway key's public id and name (never the key), when access control is on."""
    key_name: str | None = None
    rate: Any = None
    """The key's `RateState` after admission, for the x-ratelimit-* headers."""
    """The model name the provider is asked for (after routing), for upstream call spans."""
    input_tokens: int | None = None
    output_tokens: int | None = None
    outcome: RequestOutcome | None = None
    upstream_attempts: int = 0
    skipped_attempts: list[SkippedAttempt] | None = None
    """The models given up before one served (fallbacks), first tried first; None: none."""
    span: Any = None
    """The host's server span (an adapter's object; the application never looks inside)."""
    capture_content: bool = False
    """The host's opt-in to prompt and completion content in telemetry; off by default."""
    content: Any = field(default=None, repr=False)
    client_token: str | None = field(default=None, repr=False)
    """The client's bearer token, kept only with `capture_content`, to mask it by value in
    the captured content (BYOK)."""
    """With `capture_content`: (instructions, input items, output items) of the generation."""
    on_complete: Callable[[RequestFacts], None] | None = None
    """Called once when every holder has released: the request is over on every side."""
    holds: int = 0

    def note_rate(self, admission: Any) -> None:
        """The key's limits as admission left them (the host turns them into headers)."""
        self.rate = admission.state

    def hold(self) -> None:
        """One more party (the host's response, a generation) must end before the request
        is complete."""
        self.holds += 1

    def release(self) -> None:
        """That party is done; the last one to release runs `on_complete`."""
        self.holds -= 1
        if self.holds <= 0:
            done, self.on_complete = self.on_complete, None
            if done is not None:
                done(self)


CURRENT_REQUEST: ContextVar[RequestFacts | None] = ContextVar("xrouter_request", default=None)
"""A context key, not shared state: each request's task sees its own value."""
