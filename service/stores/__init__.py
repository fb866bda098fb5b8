"""User-sequence stores: the ``UserStore`` protocol, its backends, the URL factory and the
shared Redis link (pool + circuit breaker)."""

from service.stores.base import (
    EVENT_TYPES,
    Event,
    Interaction,
    StoreUnavailable,
    UserStore,
    store_health,
)
from service.stores.breaker import CircuitBreaker
from service.stores.factory import create_link, create_store
from service.stores.link import RedisLink
from service.stores.memory import InMemoryStore
from service.stores.redis import RedisStore

__all__ = [
    "EVENT_TYPES",
    "CircuitBreaker",
    "Event",
    "InMemoryStore",
    "Interaction",
    "RedisLink",
    "RedisStore",
    "StoreUnavailable",
    "UserStore",
    "create_link",
    "create_store",
    "store_health",
]
