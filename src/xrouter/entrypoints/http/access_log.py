"""The access line: one INFO line per request on logger `xrouter.access` (DEBUG for the probes
and `/metrics` when they succeed).

Written by the request-id middleware (request_id.py) once the response has gone out, from what
it saw (method, path, status, latency, when a stream's first body bytes left) and what the
engine noted in the request's `RequestFacts` (model, provider, tokens). Off with
XR_ACCESS_LOG=false. In text the line reads
`POST /v1/responses 200 12.3ms model=local/echo provider=local ttft_ms=4.1 input_tokens=3
output_tokens=5 request_id=req_...`; the JSON formatter (logging_setup.py) also gets the same
values as fields (`extra={"fields": ...}`); the message holds every string field, so the
secret filter masks the fields whenever it masks the message.
"""

from __future__ import annotations

import logging
from typing import Any

from xrouter.application.request_facts import RequestFacts

LOGGER = "xrouter.access"
FIELDS_ATTR = "fields"
"""The LogRecord attribute carrying the access line's values, for the JSON formatter."""


QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})
"""Probes and scrapes: a load balancer or Prometheus calls them every few seconds, so their
access lines are DEBUG (visible with XR_LOG_LEVEL=DEBUG), not INFO noise."""


def write_access_line(
    log: logging.Logger,
    method: str,
    path: str,
    status: int,
    latency_ms: float,
    ttft_ms: float | None,
    facts: RequestFacts,
) -> None:
    level = logging.DEBUG if path in QUIET_PATHS and status < 400 else logging.INFO
    if not log.isEnabledFor(level):
        return
    fields: dict[str, Any] = {
        "method": method,
        "path": path,
        "status": status,
        "latency_ms": round(latency_ms, 3),
    }
    text = f"{method} {path} {status} {latency_ms:.1f}ms"
    if facts.model is not None:
        fields["model"] = facts.model
        fields["provider"] = facts.provider
        text += f" model={facts.model} provider={facts.provider}"
    if ttft_ms is not None:
        fields["ttft_ms"] = round(ttft_ms, 3)
        text += f" ttft_ms={ttft_ms:.1f}"
    if facts.input_tokens is not None:
        fields["input_tokens"] = facts.input_tokens
        fields["output_tokens"] = facts.output_tokens
        text += f" input_tokens={facts.input_tokens} output_tokens={facts.output_tokens}"
    if facts.key_id is not None:  # the key's public id and name, never the key
        fields["key_id"] = facts.key_id
        fields["key_name"] = facts.key_name
        text += f" key_id={facts.key_id} key_name={facts.key_name}"
    text += f" request_id={facts.request_id}"
    # The record is made here rather than by `log.log`: a request's line needs no caller
    # lookup (a stack walk that was a fifth of the line's cost) and no `extra` merging. No
    # arguments: the text is the message as is (a `%` in a path stays literal).
    record = logging.LogRecord(log.name, level, __file__, 0, text, None, None)
    setattr(record, FIELDS_ATTR, fields)
    log.handle(record)
