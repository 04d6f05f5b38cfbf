"""Ciro's provider side on Ray: the gateway service, job store, scheduler and worker actors.

Run a gateway with ``python -m ciro_ray serve`` (``ciro up`` does it for you); build the
ASGI app in-process with :func:`ciro_ray.gateway.create_app`.
"""

__all__: list[str] = []
