"""Gateway extensions: packages that add routes (pages, webhooks) through the ``ciro.gateway`` entry point group.

An entry point names a callable ``install(app: FastAPI, cfg: Config) -> None``. A plugin that fails to load is
logged and skipped: an optional extension must not take the gateway down.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from ciro import Config
from ciro.plugins import load_entry_points

__all__ = ["GATEWAY_PLUGINS", "install_plugins"]

GATEWAY_PLUGINS = "ciro.gateway"
log = logging.getLogger("ciro.gateway")


def install_plugins(app: FastAPI, cfg: Config) -> list[str]:
    """Load every gateway plugin (``ciro.plugins``: one that does not load is logged and skipped, naming the extra
    to install) and let each add its routes; one whose install fails is logged and skipped too."""
    def warn(message: str) -> None:
        log.warning("%s; the gateway runs without it", message)

    installed = []
    for name, install in load_entry_points(GATEWAY_PLUGINS, warn=warn):
        try:
            install(app, cfg)
        except Exception:
            log.exception("gateway plugin %s could not be installed; the gateway runs without it", name)
            continue
        installed.append(name)
    return installed
