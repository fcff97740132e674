"""`YandexProvider`: Yandex AI Studio over its OpenAI Responses-compatible API.

What differs from a plain OpenAI-compatible upstream, and lives only here:

- model ids sent as `gpt://<folder>/<model>` (`model_uri`), and the folder named in the
  `OpenAI-Project` header (taken from a `gpt://` id when the provider has no folder);
- the key sent as `Authorization: Api-Key <key>` (a service account's API key) or as
  `Bearer` (an IAM token), as configured;
- answers repaired (`answer`): cumulative text snapshots streamed as deltas, and tool calls
  that older models print as text turned into function calls;
- discovery's `gpt://<folder>/` ids listed as clients name them.

`instructions` and `reasoning` go as the shared Responses payload has them (the original
XRouter dropped them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

from xrouter.adapters.providers.inflight import InflightLimiter
from xrouter.adapters.providers.openai_compatible import OpenAICompatibleProvider
from xrouter.adapters.providers.transport import HttpTransport
from xrouter.adapters.providers.yandex.answer import AnswerRepair
from xrouter.adapters.providers.yandex.model_uri import folder_of, model_uri, public_id
from xrouter.adapters.providers.yandex.spec import YandexSpec
from xrouter.application.ports import CallContext, GenerationRequest
from xrouter.domain.models import ModelInfo
from xrouter.domain.provider_events import ProviderEvent

PROJECT_HEADER = "OpenAI-Project"


class YandexProvider(OpenAICompatibleProvider):
    """The Provider port for one Yandex AI Studio folder (or several, by `gpt://` ids)."""

    def __init__(
        self,
        spec: YandexSpec,
        *,
        transport: HttpTransport | None = None,
        extra_headers: Mapping[str, str] | None = None,
        limiter: InflightLimiter | None = None,
    ) -> None:
        headers = dict(extra_headers or {})
        if spec.folder_id:
            headers[PROJECT_HEADER] = spec.folder_id
        if spec.auth == "api_key" and spec.api_key:
            # Sent as a header of every call (discovery too), so the shared code, which would
            # send it as `Bearer`, is not given the key.
            headers["Authorization"] = f"Api-Key {spec.api_key}"
            spec = replace(spec, api_key=None)
        super().__init__(spec, transport=transport, limiter=limiter, extra_headers=headers)
        self._folder_id = spec.folder_id
        self._auth = spec.auth
        self._setting_names = spec.setting_names

    @property
    def compacts_natively(self) -> bool:
        """Yandex documents no `/responses/compact`: the gateway compacts with the model."""
        return False

    def adjust_payload(self, payload: dict[str, Any], call: GenerationRequest) -> dict[str, Any]:
        payload["model"] = model_uri(
            call.route.upstream_model,
            self._folder_id,
            provider=self.name,
            setting_names=self._setting_names,
        )
        return payload

    async def stream(self, call: GenerationRequest) -> AsyncIterator[list[ProviderEvent]]:
        tools = frozenset(
            tool.name for tool in call.request.tools if tool.type == "function" and tool.name
        )
        repair = AnswerRepair(tools)
        async for batch in super().stream(call):
            out: list[ProviderEvent] = []
            for event in batch:
                out += repair.feed(event)
            if out:
                yield out

    async def list_models(self) -> list[ModelInfo]:
        prefix = self.name + "/"
        return [
            ModelInfo(
                id=prefix + public_id(model.id.removeprefix(prefix), self._folder_id),
                owned_by=model.owned_by,
                created=model.created,
            )
            for model in await super().list_models()
        ]

    def _headers(self, call: GenerationRequest) -> dict[str, str]:
        headers = self._headers_for(call.context)
        if PROJECT_HEADER not in headers:
            folder = folder_of(call.route.upstream_model)
            if folder:
                headers[PROJECT_HEADER] = folder
        return headers

    def _headers_for(self, context: CallContext) -> dict[str, str]:
        headers = super()._headers_for(context)
        bearer = headers.get("Authorization", "")
        if self._auth == "api_key" and bearer.startswith("Bearer "):
            # BYOK: the client's own key, sent as Yandex expects an API key.
            headers["Authorization"] = "Api-Key " + bearer.removeprefix("Bearer ")
        return headers
