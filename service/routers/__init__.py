"""Every router of the service, in one list that ``service.app`` includes."""

from __future__ import annotations

from service.routers import admin, health, recommend, stages, users

ROUTERS = (recommend.router, stages.router, users.router, admin.router, health.router)
