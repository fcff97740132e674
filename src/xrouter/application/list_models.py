"""Use case: list the models on offer (`GET /v1/models`): with access control, only those the
caller's key may use."""

from __future__ import annotations

from xrouter.application.access import AccessControl
from xrouter.application.ports import ModelCatalog
from xrouter.domain.models import ModelList


class ListModels:
    def __init__(self, catalog: ModelCatalog, access: AccessControl | None = None) -> None:
        self._catalog = catalog
        self._access = access

    async def execute(self, api_key: str | None = None) -> ModelList:
        models = await self._catalog.list_models()
        if self._access is not None:
            key = (await self._access.authenticate(api_key)).key
            if key is not None:
                models = [model for model in models if key.allows((model.id,))]
        return ModelList(data=models)
