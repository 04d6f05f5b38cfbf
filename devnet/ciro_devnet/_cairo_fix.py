"""Make cairo-lang 0.14.0.1 importable on Python 3.11 without touching site-packages.

`starkware/cairo/lang/instances.py` declares a dataclass field as `field(default=CpuInstanceDef())`, a mutable
default that Python 3.11's dataclasses reject at import time. A meta-path finder catches that one module and
loads it from its own source with the default replaced by `field(default_factory=CpuInstanceDef)`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

TARGET = "starkware.cairo.lang.instances"
_BROKEN = "field(default=CpuInstanceDef())"
_FIXED = "field(default_factory=CpuInstanceDef)"


class _PatchedLoader(importlib.machinery.SourceFileLoader):
    def get_data(self, path: str) -> bytes:
        data = super().get_data(path)
        if path.endswith(".py"):
            data = data.replace(_BROKEN.encode(), _FIXED.encode())
        return data

    def path_stats(self, path: str) -> dict[str, int]:
        raise OSError("no bytecode cache for the patched module")  # always compile from the patched source


class _InstancesFixFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            return spec
        loader = _PatchedLoader(fullname, spec.origin)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


def install() -> None:
    """Install the finder once, ahead of the standard path finder."""
    if not any(isinstance(finder, _InstancesFixFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _InstancesFixFinder())


install()
