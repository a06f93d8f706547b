"""Where the doors are listed: adding a door is adding its folder and one line here.

The ingress mounts each door's router at its prefix, makes one service per door for its app, and
takes the webhook body of every door that takes callbacks. An unhandled error is answered in the
shape of the door whose prefix the path has; the last door's shape answers elsewhere (DashScope:
the page creates tasks through it).
"""

from __future__ import annotations

from serve.doors.acedata.router import door as acedata
from serve.doors.base import DoorService
from serve.doors.dashscope.router import door as dashscope
from serve.doors.openai.router import door as openai
from serve.doors.web.router import door as web
from serve.edge.http import Door
from serve.tasks.service import TaskService
from serve.tasks.webhooks.sender import BodyRenderer

DOORS: tuple[Door, ...] = (acedata, openai, web, dashscope)


def door_of(path: str) -> Door:
    return next((door for door in DOORS if path.startswith(door.prefix)), DOORS[-1])


def services(tasks: TaskService) -> dict[str, DoorService]:
    """One service per door, by its name, over the one task layer."""
    return {door.name: door.service(tasks) for door in DOORS}


def webhook_bodies(services: dict[str, DoorService]) -> dict[str, BodyRenderer]:
    """The body each door that takes callbacks sends, by its name (records keep the name)."""
    return {name: service.webhook_body for name, service in services.items() if service.takes_callbacks}
