"""The one entry-point loader: plugins register in entry-point groups and are loaded here, one way.

Groups: ``ciro.cli`` (commands), ``ciro.gateway`` (routes), ``ciro.model_sources`` (model kinds the CLI and magics
resolve), ``ciro.processors`` (input/output processors of model bundles), ``ciro.converters`` (model formats
``deploy_model`` converts). A plugin that fails to load never breaks the core: when loading a whole group it is
reported (``warn``) and skipped, naming the missing extra when an import failed; a single plugin asked for by name
that fails to load raises a :class:`ConfigError` saying why and what to install.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import ConfigError

__all__ = ["load_entry_point", "load_entry_points"]

log = logging.getLogger("ciro.plugins")


def _problem(ep: EntryPoint, exc: BaseException) -> str:
    where = f"the {ep.name!r} plugin (entry point group {ep.group}, {ep.value})"
    if isinstance(exc, ImportError):
        return (f"{where} is not installed ({exc}); install the extra that provides it, e.g. "
                f"pip install 'ciro-network[{ep.name}]'")
    return f"{where} could not be loaded: {type(exc).__name__}: {exc}"


def load_entry_points(group: str, *, warn: Callable[[str], None] | None = None,
                      skip: Callable[[str], bool] | None = None) -> list[tuple[str, Any]]:
    """Every plugin of ``group`` that loads, as (name, object); the others are reported with ``warn`` (default:
    a log warning) and skipped. ``skip``: names not to load at all."""
    loaded = []
    for ep in entry_points(group=group):
        if skip is not None and skip(ep.name):
            continue
        try:
            loaded.append((ep.name, ep.load()))
        except Exception as exc:  # a broken optional plugin is reported; it does not break the core
            log.debug("loading %s", ep.value, exc_info=True)
            (warn or log.warning)(_problem(ep, exc))
    return loaded


def load_entry_point(group: str, name: str) -> Any | None:
    """The plugin ``name`` of ``group``; None when none is registered; a ConfigError when it fails to load."""
    for ep in entry_points(group=group):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as exc:
                raise ConfigError(_problem(ep, exc) + ".") from exc
    return None
