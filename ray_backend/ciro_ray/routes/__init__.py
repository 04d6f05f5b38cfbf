"""The gateway's HTTP routes, one module per resource; each builds an ``APIRouter`` from the few collaborators
its routes use (stores, ``runtime.Runtime``, ``intake.JobIntake``), never from the gateway itself.

``service`` (health, metrics, chain), ``models``, ``jobs``, ``workers`` (workers, providers, downtime, faults),
``deployments``, ``dashboard``; pages that packages add (the Hugging Face ones) come through ``plugins``.
"""

__all__: list[str] = []
