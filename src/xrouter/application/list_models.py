"""Use case: list the models on offer (`GET /v1/models`)."""

from __future__ import annotations

from xrouter.application.ports import ModelCatalog
from xrouter.domain.models import ModelList


class ListModels:
    def __init__(self, catalog: ModelCatalog) -> None:
        self._catalog = catalog

    async def execute(self) -> ModelList:
        return ModelList(data=await self._catalog.list_models())
