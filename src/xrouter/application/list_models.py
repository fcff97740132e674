"""Use case: the models on offer (`GET /v1/models`, `GET /v1/models/{id}`): with access
control, only those the caller's key may use."""

from __future__ import annotations

import msgspec

from xrouter.application.access import AccessControl
from xrouter.application.ports import ModelCatalog
from xrouter.domain.errors import ModelNotFound
from xrouter.domain.keys import GatewayKey
from xrouter.domain.models import ModelInfo, ModelList


class ListModels:
    def __init__(self, catalog: ModelCatalog, access: AccessControl | None = None) -> None:
        self._catalog = catalog
        self._access = access

    async def execute(self, api_key: str | None = None) -> ModelList:
        models = await self._catalog.list_models()
        key = await self._key(api_key)
        if key is not None:
            models = [model for model in models if key.allows((model.id,))]
        return ModelList(data=models)

    async def retrieve(self, model_id: str, api_key: str | None = None) -> ModelInfo:
        """The model as the list shows it (an alias too); a bare name (`echo` for
        `local/echo`) as the list shows the model it routes to, under the id asked for; a
        model the gateway routes without listing it (a provider that serves any name,
        discovery off) as its provider's. A model not served, and one the key may not use,
        are both ModelNotFound (404): the same answer, so a key learns nothing of the models
        it cannot use."""
        key = await self._key(api_key)
        models = await self._catalog.list_models()
        for model in models:
            if model.id == model_id:
                if key is not None and not key.allows((model_id,)):
                    break
                return model
        else:
            route, _ = await self._catalog.resolve(model_id)  # ModelNotFound when not served
            routed = f"{route.provider}/{route.upstream_model}"
            if key is None or key.allows((model_id, routed)):
                listed = next((model for model in models if model.id == routed), None)
                if listed is not None:
                    return msgspec.structs.replace(listed, id=model_id)
                return ModelInfo(id=model_id, owned_by=route.provider)
        raise ModelNotFound(model_id)

    async def _key(self, api_key: str | None) -> GatewayKey | None:
        """The caller's key (401 for a wrong one); None when access control is off."""
        if self._access is None:
            return None
        return (await self._access.authenticate(api_key)).key
