"""``%ciro`` magics and live widgets for IPython and Jupyter.

Load with ``%load_ext ciro`` (the core hands over to this package) or ``%load_ext ciro_jupyter``. Registration
only here; the magics live in :mod:`ciro_jupyter.magics`, the widgets in :mod:`ciro_jupyter.widgets`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    from .magics import CiroMagics

    ipython.register_magics(CiroMagics(ipython))
