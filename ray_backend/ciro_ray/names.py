"""Names a provider node and the gateway's pool share (kept free of Ray, so `ciro provider ...` starts fast)."""

from __future__ import annotations

__all__ = ["PROVIDER_RESOURCE", "provider_key_name"]

#: The custom Ray resource a provider node offers, one unit a worker slot.
PROVIDER_RESOURCE = "ciro_worker"


def provider_key_name(slot: int) -> str:
    """Name, in the provider node's key store, of the key of its worker in ``slot``."""
    return f"provider-worker-{slot}"
