"""The gateway's metrics: the OpenTelemetry GenAI metrics and XRouter's own.

Names and attributes follow the OpenTelemetry semantic conventions for generative AI
(`gen_ai.*`) and HTTP servers (`http.server.request.duration`); XRouter's own metrics are
`xrouter.*`. Prometheus sees them through prometheus.py's renaming
(`gen_ai.client.token.usage` -> `gen_ai_client_token_usage_bucket`...), OTLP as they are.

Everything per request is recorded twice at most: once from the request's `RequestOutcome`
(`observe_outcome`, the engine's view) and once when its HTTP response has gone out
(`observe_http`, the host's view). Gauges and the counters kept elsewhere (store failures,
dropped analytics, export failures) are read only when metrics are collected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from xrouter.adapters.telemetry.metrics import MetricsRegistry
from xrouter.application.outcome import RequestOutcome

Series = Iterable[tuple[tuple[str, ...], float]]

# Bucket boundaries from the GenAI semantic conventions (advice for each metric).
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    163.84, 327.68, 655.36,
)  # fmt: skip
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    30.0, 60.0,
)  # fmt: skip
TPOT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
HTTP_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
)  # fmt: skip

_GENAI = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")
UNROUTED = "_unrouted"
"""The provider label of a request that was never routed (bad input, unknown model)."""


class GatewayMetrics:
    """The instruments, created once per process on a `MetricsRegistry`."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self.registry = registry
        histogram = registry.histogram
        self._token_usage = histogram(
            "gen_ai.client.token.usage",
            "Tokens used per upstream operation, by token type (input, output).",
            "{token}",
            (*_GENAI, "gen_ai.response.model", "gen_ai.token.type"),
            TOKEN_BUCKETS,
        )
        self._operation = histogram(
            "gen_ai.client.operation.duration",
            "Duration of the upstream operation (generate: from the call to the last chunk).",
            "s",
            (*_GENAI, "gen_ai.response.model", "error.type"),
            DURATION_BUCKETS,
        )
        self._server_duration = histogram(
            "gen_ai.server.request.duration",
            "Time from the request's receipt to its terminal state.",
            "s",
            (*_GENAI, "gen_ai.response.model", "error.type"),
            DURATION_BUCKETS,
        )
        self._ttft = histogram(
            "gen_ai.server.time_to_first_token",
            "Time from the request's receipt to its first output chunk.",
            "s",
            (*_GENAI, "gen_ai.response.model"),
            TTFT_BUCKETS,
        )
        self._tpot = histogram(
            "gen_ai.server.time_per_output_token",
            "Time per output token after the first, for successful responses.",
            "s",
            (*_GENAI, "gen_ai.response.model"),
            TPOT_BUCKETS,
        )
        self._http = histogram(
            "http.server.request.duration",
            "Time from the request's receipt until its response has gone out.",
            "s",
            ("http.request.method", "http.route", "http.response.status_code"),
            HTTP_BUCKETS,
        )
        self._requests = registry.counter(
            "xrouter.requests",
            "HTTP requests by route, model, provider and status code.",
            "{request}",
            ("route", "model", "provider", "status"),
        )
        self._outcomes = registry.counter(
            "xrouter.outcomes",
            "Requests that reached a terminal state, by status, failed stage and error type.",
            "{request}",
            ("api", "model", "provider", "status", "failed_stage", "error.type"),
        )
        self._attempts = registry.counter(
            "xrouter.upstream.attempts",
            "Upstream calls made (each retry is one more).",
            "{attempt}",
            ("provider",),
        )
        self._retries = registry.counter(
            "xrouter.upstream.retries",
            "Upstream calls made again after a retryable failure.",
            "{attempt}",
            ("provider",),
        )
        self._upstream_errors = registry.counter(
            "xrouter.upstream.errors",
            "Generations that failed, by provider and error type.",
            "{error}",
            ("provider", "error.type"),
        )

    def observe_outcome(self, outcome: RequestOutcome) -> None:
        """Everything a terminal request tells: GenAI histograms, outcomes, upstream calls."""
        provider = outcome.provider or UNROUTED
        model = outcome.model or outcome.model_requested
        error = outcome.error_type or ""
        self._outcomes.add(
            1, (outcome.api, model, provider, outcome.status, outcome.failed_stage or "", error)
        )
        if outcome.generate_s is None:  # never reached generate: no upstream operation
            return
        base = ("chat", provider, outcome.model_requested)
        served = outcome.upstream_model or model
        self._operation.record(outcome.generate_s, (*base, served, error))
        self._server_duration.record(outcome.duration_s, (*base, served, error))
        if outcome.attempts:
            self._attempts.add(outcome.attempts, (provider,))
            if outcome.attempts > 1:
                self._retries.add(outcome.attempts - 1, (provider,))
        if outcome.status == "failed":
            self._upstream_errors.add(1, (provider, error))
        if outcome.input_tokens is not None:
            self._token_usage.record(outcome.input_tokens, (*base, served, "input"))
        if outcome.output_tokens is not None:
            self._token_usage.record(outcome.output_tokens, (*base, served, "output"))
        ttft = outcome.ttft_s
        if ttft is not None:
            self._ttft.record(ttft, (*base, served))
            output = outcome.output_tokens
            if outcome.status != "failed" and output is not None and output > 1:
                self._tpot.record((outcome.duration_s - ttft) / (output - 1), (*base, served))

    def observe_http(
        self,
        method: str,
        route: str,
        status: int,
        duration_s: float,
        model: str | None,
        provider: str | None,
    ) -> None:
        """One HTTP request whose response has gone out. `route` is the route template
        (`/v1/responses/{response_id}`), never the raw path: ids must not become labels."""
        code = str(status)
        self._requests.add(1, (f"{method} {route}", model or "", provider or "", code))
        self._http.record(duration_s, (method, route, code))

    def gauge(
        self, name: str, description: str, labels: tuple[str, ...], read: Callable[[], Series]
    ) -> None:
        """A value read when metrics are collected (in-flight requests, queues)."""
        self.registry.observe(name, description, "{request}", "gauge", labels, read)

    def counted(
        self,
        name: str,
        description: str,
        unit: str,
        labels: tuple[str, ...],
        read: Callable[[], Series],
    ) -> None:
        """A counter kept elsewhere (a store's failures), read when metrics are collected."""
        self.registry.observe(name, description, unit, "counter", labels, read)
