"""The models a server serves, and which one a request's ``model`` names."""

from __future__ import annotations

from .errors import RequestError
from .service import ModelService
from .settings import Settings


class Services:
    def __init__(self, settings: list[Settings]) -> None:
        self.all = [ModelService(entry) for entry in settings]
        self.default = self.all[0]
        self._by_name = {}
        for service in self.all:
            self._by_name[service.settings.model_id] = self._by_name[service.name] = service

    def pick(self, name: str | None) -> ModelService:
        """The model a request names. A one-model server answers to any name (clients, UIs and
        LangChain send names of their own); with several, an unknown name is a 404."""
        if name is None or len(self.all) == 1:
            return self.default
        try:
            return self._by_name[name]
        except KeyError:
            names = ", ".join(f"'{s.name}'" for s in self.all)
            raise RequestError(404, f"the model '{name}' does not exist; this server has {names}", "model",
                               "model_not_found") from None

    def close(self) -> None:
        for service in self.all:
            service.close()
