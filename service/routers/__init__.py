"""Every router of the service, in one list that ``service.app`` includes."""

from __future__ import annotations

# Imported by full module path: ``from service.routers import x`` would read as this package
# importing itself (tests/test_layers.py's import graph).
from service.routers.admin import router as admin
from service.routers.health import router as health
from service.routers.models import router as models
from service.routers.recommend import router as recommend
from service.routers.stages import router as stages
from service.routers.users import router as users

ROUTERS = (recommend, stages, users, admin, models, health)
