"""What the engine learned about the request being served, for the host's access log.

The host (the HTTP entrypoint) puts a fresh `RequestFacts` in `CURRENT_REQUEST` when a request
starts; the generation task inherits the context (asyncio copies it at task creation), so the
`Recorder` fills the same object at the terminal state, and the host writes one access line
from it once the response has gone out. Outside a request (tests, embeddings that never set it)
nothing is noted. The application knows nothing of logging formats or HTTP here.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class RequestFacts:
    """One request's facts; None until known."""

    request_id: str
    model: str | None = None
    provider: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


CURRENT_REQUEST: ContextVar[RequestFacts | None] = ContextVar("xrouter_request", default=None)
"""A context key, not shared state: each request's task sees its own value."""
