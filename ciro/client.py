"""The Python SDK: :class:`AsyncCiroClient` (the async core) and :class:`CiroClient` (its sync facade).

The async core (``ciro._async_client``) talks to a gateway through ``ciro._transport``; the sync facade
(``ciro._sync_client``) runs it on a private event-loop thread and derives each of its calls from the async
one, so it works the same in a script and inside a running Jupyter event loop.
"""

from __future__ import annotations

from ._async_client import AsyncCiroClient
from ._sync_client import CiroClient

__all__ = ["AsyncCiroClient", "CiroClient"]
