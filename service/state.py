"""The app's shared state: settings, the store, and the runtime once artifacts are loaded."""

from __future__ import annotations

from dataclasses import dataclass

from service.config import Settings
from service.errors import NotReadyError
from service.pipeline.factory import Components
from service.runtime import Runtime
from service.stores.base import UserStore


@dataclass
class AppState:
    settings: Settings
    store: UserStore
    runtime: Runtime | None = None
    components: Components | None = None
    load_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.runtime is not None and self.components is not None

    def require(self) -> tuple[Runtime, Components]:
        if self.runtime is None or self.components is None:
            raise NotReadyError()
        return self.runtime, self.components
