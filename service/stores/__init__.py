"""User-sequence stores: the ``UserStore`` protocol, its backends and the URL factory."""

from service.stores.base import EVENT_TYPES, Event, Interaction, UserStore
from service.stores.factory import create_store
from service.stores.memory import InMemoryStore
from service.stores.redis import RedisStore

__all__ = [
    "EVENT_TYPES",
    "Event",
    "InMemoryStore",
    "Interaction",
    "RedisStore",
    "UserStore",
    "create_store",
]
