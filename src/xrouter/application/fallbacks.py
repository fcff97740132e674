"""A request's fallback chain: the models tried after the first one, decided at ingest.

Two sources, OpenRouter's convention first: a request's own `models` list (both APIs), tried in
its order after `model`; otherwise the chain the configuration declares for the model (or the
alias) the client named. A separate configured chain lists larger-context models, tried only
when the input is too long for the model (`FallbackReason.CONTEXT_LENGTH`).

The client's own list is checked like `model`: an id no provider serves is a 404 and one the
gateway key may not use a 403, both naming `models[i]`, before anything is sent upstream. A
configured entry the key may not use is left out (the operator's chain is not the client's
request); one that no longer routes is left out with a warning.

Which failures move on to the next model is `domain/fallbacks.py`'s rule; when, the pump's
(`application/pump.py`: only before any output reached the client).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from xrouter.application.access import AccessControl
from xrouter.application.ports import ModelCatalog, Provider
from xrouter.domain.errors import GatewayError, InvalidRequest, ModelNotAllowed
from xrouter.domain.fallbacks import (
    MAX_REQUEST_MODELS,
    FallbackReason,
    SkippedAttempt,
    fallback_reason,
)
from xrouter.domain.keys import Principal
from xrouter.domain.models import ModelRoute
from xrouter.domain.responses import ResponseRequest

log = logging.getLogger("xrouter.fallbacks")


class Candidate(NamedTuple):
    """A model of the chain, resolved: `model` is the id as listed (what the response's
    `model` then says)."""

    model: str
    route: ModelRoute
    provider: Provider


@dataclass(slots=True)
class FallbackPlan:
    """The models left to try, and the attempts given up so far (in order)."""

    general: list[Candidate] = field(default_factory=list)
    context: list[Candidate] = field(default_factory=list)
    skipped: list[SkippedAttempt] = field(default_factory=list)

    def next_for(self, error: GatewayError) -> tuple[Candidate, FallbackReason] | None:
        """The model to try after `error`, taken off its chain; None: `error` stands."""
        reason = fallback_reason(error)
        if reason is None:
            return None
        chain = self.context if reason is FallbackReason.CONTEXT_LENGTH else self.general
        if not chain:
            return None
        return chain.pop(0), reason


class FallbackChains:
    """Builds each request's `FallbackPlan` from its `models` and the configured chains."""

    def __init__(
        self,
        catalog: ModelCatalog,
        access: AccessControl | None,
        chains: Mapping[str, Sequence[str]] | None = None,
        context_chains: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """`access`: the gateway keys' model permissions (None: access control off).
        `chains` / `context_chains`: model id or alias -> the ids to try after it, as the
        configuration lists them."""
        self._catalog = catalog
        self._access = access
        self._chains = dict(chains or {})
        self._context_chains = dict(context_chains or {})

    async def plan(
        self, request: ResponseRequest, route: ModelRoute, principal: Principal
    ) -> FallbackPlan:
        """The request's chain, resolved; raises a 400/403/404 for a bad `models` entry."""
        names = (request.model, f"{route.provider}/{route.upstream_model}")
        general: list[Candidate] = []
        if request.models:
            general = await self._requested(request, principal)
        elif self._chains:
            general = await self._configured(self._chain(self._chains, names), principal)
        context: list[Candidate] = []
        if self._context_chains:
            context = await self._configured(self._chain(self._context_chains, names), principal)
        if not general and not context:
            return FallbackPlan()
        return FallbackPlan(general=general, context=context)

    async def _requested(self, request: ResponseRequest, principal: Principal) -> list[Candidate]:
        models = request.models or []
        if len(models) > MAX_REQUEST_MODELS:
            raise InvalidRequest(
                f"`models` lists {len(models)} models; at most {MAX_REQUEST_MODELS} are tried.",
                param="models",
                code="invalid_value",
            )
        found: list[Candidate] = []
        for index, model in enumerate(models):
            if model == request.model or any(c.model == model for c in found):
                continue  # the first model is tried once, and so is each fallback
            try:
                route, provider = await self._catalog.resolve(model)
                public = f"{route.provider}/{route.upstream_model}"
                if self._access is not None:
                    self._access.check_model(principal, model, (model, public))
            except GatewayError as refused:
                refused.param = f"models[{index}]"
                raise
            found.append(Candidate(model, route, provider))
        return found

    @staticmethod
    def _chain(chains: dict[str, Sequence[str]], names: Sequence[str]) -> Sequence[str]:
        for name in names:
            chain = chains.get(name)
            if chain is not None:
                return chain
        return ()

    async def _configured(self, chain: Sequence[str], principal: Principal) -> list[Candidate]:
        found: list[Candidate] = []
        for model in chain:
            try:
                route, provider = await self._catalog.resolve(model)
                public = f"{route.provider}/{route.upstream_model}"
                if self._access is not None:
                    self._access.check_model(principal, model, (model, public))
            except GatewayError as skipped:
                # Not for this key: quietly not its chain. Not routable: the operator's to fix.
                level = logging.DEBUG if isinstance(skipped, ModelNotAllowed) else logging.WARNING
                log.log(level, "fallback %s left out of the chain: %s", model, skipped.message)
                continue
            found.append(Candidate(model, route, provider))
        return found
