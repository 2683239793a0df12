"""The web console: server-rendered pages (Jinja2) over the services.

``install(app)`` mounts the pages under ``/console``, their static files, and
the ``/`` redirect. Routes are thin adapters: parse the form, call a service,
render or redirect.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from keyrack.console import (
    account,
    api_keys,
    auth,
    exports,
    imports,
    integrations,
    jobs,
    notifications,
    production,
    staff,
    team,
    webhooks,
)
from keyrack.console.web import HERE, PREFIX

ROUTERS = (
    auth.root,
    auth.router,
    api_keys.router,
    production.router,
    webhooks.router,
    exports.router,
    imports.router,
    integrations.router,
    team.router,
    notifications.router,
    account.router,
    staff.router,
    jobs.router,
)


def install(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
