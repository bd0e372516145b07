"""The control routes of the event bus: GET /sim/events (settings, connection, counters),
PUT /sim/events (change settings) and DELETE /sim/events/counters (zero the counters)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aiohttp import web

from cloudstack_simulator.events import EventsError

if TYPE_CHECKING:
    from cloudstack_simulator.app import Simulator


def add_routes(app: web.Application, sim: Simulator) -> None:
    async def show(request: web.Request) -> web.Response:
        return web.json_response(sim.events.describe())

    async def change(request: web.Request) -> web.Response:
        try:
            data = await request.json() if request.can_read_body else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        try:
            sim.events.configure(data)
        except (EventsError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(sim.events.describe())

    async def reset(request: web.Request) -> web.Response:
        sim.events.reset_counters()
        return web.json_response(sim.events.describe())

    app.router.add_route("GET", "/sim/events", show)
    app.router.add_route("PUT", "/sim/events", change)
    app.router.add_route("DELETE", "/sim/events/counters", reset)
