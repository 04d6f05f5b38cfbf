"""Gateway extensions: packages that add routes (pages, webhooks) through the ``ciro.gateway`` entry point group.

An entry point names a callable ``install(app: FastAPI, cfg: Config) -> None``. A plugin that fails to load is
logged and skipped: an optional extension must not take the gateway down.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from fastapi import FastAPI

from ciro import Config

__all__ = ["GATEWAY_PLUGINS", "install_plugins"]

GATEWAY_PLUGINS = "ciro.gateway"
log = logging.getLogger("ciro.gateway")


def install_plugins(app: FastAPI, cfg: Config) -> list[str]:
    installed = []
    for ep in entry_points(group=GATEWAY_PLUGINS):
        try:
            ep.load()(app, cfg)
        except ImportError as exc:  # an optional plugin whose extra is not installed (e.g. `make demo`'s set)
            log.warning("gateway plugin %s is not installed (%s); the gateway runs without it. Install its extra, "
                        "e.g. pip install 'ciro-network[%s]', to use it.", ep.name, exc, ep.name)
            continue
        except Exception:
            log.exception("gateway plugin %s could not be installed; the gateway runs without it", ep.name)
            continue
        installed.append(ep.name)
    return installed
