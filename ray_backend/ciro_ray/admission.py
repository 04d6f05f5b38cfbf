"""Admission: whether this gateway takes a batch of jobs, a deployment, or a caller's action on a job or a
deployment. Every such decision is made here, from what was asked and what the gateway has (its workers'
hardware, its settlement, a model's zk set-up); each refusal says what would be taken instead.

Who the caller is (a signature checked, the operator recognised) is decided before, by ``auth.RequestAuth``;
here, what that caller may see and change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request

from ciro import (
    SERVED_LEVELS,
    Config,
    Deployment,
    ForbiddenError,
    InputError,
    InsufficientEscrowError,
    ModelInfo,
    QuorumPolicy,
    UnauthenticatedError,
    VerificationLevel,
)

from .deployments import deployment_fit
from .fit import Fit
from .pool import WorkerPool
from .runtime import Runtime

__all__ = [
    "Caller",
    "admit_fit",
    "admit_jobs",
    "check_deployment",
    "hardware_summary",
    "require_deployment_owner",
    "require_owner",
    "require_reader",
    "unfit_error",
]

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as ``auth.RequestAuth`` established it."""

    #: The public key that signed the request (0x-hex), or None.
    account: str | None
    #: The operator: the operator key, or a local request (``auth.RequestAuth``).
    operator: bool

    @classmethod
    def of(cls, request: Request) -> Caller:
        return cls(request.state.account, bool(request.state.operator))

    def may_read(self, client: str | None) -> bool:
        """Whether the caller may see a job submitted by ``client``: its submitter, or the operator."""
        return self.operator or (self.account is not None and self.account == client)


def require_owner(caller: Caller, client: str | None, what: str) -> None:
    """Raise unless the caller is the job's submitter or the operator (401 unsigned, 403 someone else)."""
    if caller.may_read(client):
        return
    if caller.account is None:
        raise UnauthenticatedError(
            f"{what} needs a request signed by the key that submitted the job (the Ciro SDK and CLI sign when the "
            "gateway is not on this machine), or the operator.", detail={"reason": "unsigned"})
    raise ForbiddenError(f"{what}: job submitted by {client or 'the operator'}; the request was signed by "
                         f"{caller.account}. Only the submitter or the operator may do this.",
                         detail={"reason": "not_owner"})


def require_reader(caller: Caller, what: str) -> None:
    """Listings of job data: the operator sees everything, a signed caller its own; an unsigned one nothing."""
    if not caller.operator and caller.account is None:
        require_owner(caller, None, what)


def require_deployment_owner(caller: Caller, d: Deployment) -> None:
    """Its owner or the operator may change it (a deployment made unsigned on the gateway's machine is the
    operator's: a remote key, however freshly made, may not)."""
    if not caller.operator and caller.account != d.owner:
        raise ForbiddenError(f"Deployment {d.name!r} belongs to "
                             + (f"account {d.owner[:18]}..." if d.owner else "the gateway's operator")
                             + "; only it may change or delete it. Sign with that key, or create a deployment of "
                             "your own.", detail={"reason": "not_owner"})


def admit_jobs(cfg: Config, live: Runtime, info: ModelInfo, items: Sequence[Tensors], verification: str,
               options: Mapping[str, Any], *, escrow: bool, zk_ready: bool) -> VerificationLevel:
    """The level the jobs run at, once this gateway can run them as asked (``options`` already checked;
    ``zk_ready``: the model has a zk set-up). Refused with the fix otherwise."""
    if escrow:
        if live.settlement is None:
            raise InputError("This gateway does not settle on chain (no deployment in its chain.json, or "
                             "settlement=off). Submit without max_payment/escrow.")
        wanted = VerificationLevel.parse(verification)
        if not wanted.settles_on_chain:
            raise InputError(f"A {wanted.value!r} job cannot be paid on chain: the JobManager settles "
                             + ", ".join(v.value for v in VerificationLevel if v.settles_on_chain)
                             + " jobs (it checks the worker's signed receipt). Submit with verification='receipt' "
                             "or higher.")
    elif live.settlement is not None and cfg.settlement == "required":
        raise InsufficientEscrowError("This gateway runs only jobs whose payment is escrowed on chain. Pass "
                                      "max_payment= (SDK) so the client escrows each job, then submits it.")
    level = VerificationLevel.parse(verification)
    if level not in SERVED_LEVELS:
        raise InputError(f"Verification level {level.value!r} is not available on this gateway yet (served: "
                         f"{', '.join(sorted(v.value for v in SERVED_LEVELS))}). Submit with one of those.")
    if not items:
        raise InputError("The batch holds no jobs. Send at least one input.")
    fit = admit_fit(live.serving(info.hash).fit, options, live.pool)  # the hardware it needs, which some worker has
    if level is VerificationLevel.ZKML:
        if not zk_ready:
            raise InputError(f"Model {info.hash[:12]} has no zk set-up. Deploy it with zk=True "
                             "(ciro deploy --zk MODEL.onnx), then submit zk jobs.")
        for inputs in items:
            for spec in info.inputs:
                dims = inputs[spec.name].shape if spec.name in inputs else ()
                if any(not isinstance(d, int) and n != 1 for d, n in zip(spec.shape, dims, strict=False)):
                    raise InputError(f"A zk job proves one row: input {spec.name!r} must have 1 in its free "
                                     "dimensions. Split larger inputs into jobs (infer_batch).")
    if level is VerificationLevel.QUORUM:
        policy = QuorumPolicy.from_options(options)
        have = live.pool.eligible_count(fit) if live.pool else 0
        if have < policy.k:
            raise InputError(
                f"Quorum with f={policy.f} needs k={policy.k} distinct workers; this gateway has {have}. "
                f"Start more workers (ciro up --workers {policy.k}), lower f, or use verification='receipt'.")
    return level


def check_deployment(cfg: Config, live: Runtime, d: Deployment, *, zk_ready: bool) -> None:
    """Refuse settings this gateway cannot serve, saying what would make them servable (``zk_ready``: the model's
    zk set-up is ready)."""
    if d.verification not in SERVED_LEVELS:
        raise InputError(f"Unknown verification {d.verification!r}. Use one of: {', '.join(sorted(SERVED_LEVELS))}.")
    if d.verification == VerificationLevel.ZKML and not zk_ready:
        raise InputError(f"Model {d.model_hash[:12]} has no zk set-up, so it cannot be deployed with verification "
                         "zk. Upload it with zk=true (ciro deploy --zk), or choose receipt or quorum.")
    pool = live.pool
    fit = deployment_fit(d)
    workers = pool.eligible_count(fit) if pool is not None else 0
    if not fit.any and workers == 0:
        raise unfit_error(fit, pool, subject="this deployment", instead="Deploy without the requirement ("
                          + ("cpu_only=false" if fit.cpu_only else "gpu=false, no gpu_model or gpu_memory_gb") + ")")
    hardware = f" of {fit.describe()}" if not fit.any else ""
    if d.verification == VerificationLevel.QUORUM and workers < QuorumPolicy().k:
        raise InputError(f"A quorum deployment needs {QuorumPolicy().k} eligible workers{hardware} (k = 3f+1, "
                         f"f = 1); this gateway has {workers} ({hardware_summary(pool)}). Add workers, or choose "
                         "receipt or zk.")
    if d.replicas is not None and d.replicas > max(workers, 1):
        raise InputError(f"replicas={d.replicas} but this gateway has {workers} eligible worker(s){hardware}. Lower "
                         "replicas or add workers (ciro up --workers N, or ciro provider join).")
    if d.max_batch_size is not None and d.max_batch_size > cfg.max_batch_size:
        raise InputError(f"max_batch_size={d.max_batch_size} is above this gateway's limit "
                         f"{cfg.max_batch_size}. Lower it, or raise CIRO_MAX_BATCH_SIZE on the gateway.")
    if d.max_payment is not None:
        if live.settlement is None:
            raise InputError("max_payment is set, but this gateway settles no payments on chain. Drop max_payment, "
                             "or start the gateway with settlement (a chain.json in CIRO_HOME; `ciro up`).")
        if d.max_payment < cfg.price_per_job:
            raise InputError(f"max_payment={d.max_payment} is below this gateway's price per job "
                             f"{cfg.price_per_job}. Raise it.")


# -- hardware -----------------------------------------------------------------------------------------
def hardware_summary(pool: WorkerPool | None) -> str:
    """What the workers that may get jobs run on, e.g. "2 CPU-only, 1 with a 0.5 share of a GPU H100 (80 GB)"."""
    kinds: Counter[str] = Counter()
    for w in (pool.workers.values() if pool is not None else ()):
        if not (w.alive and w.admitted and not w.draining and w.info):
            continue
        share = float(w.info.get("num_gpus") or 0.0)
        if share <= 0:
            kinds["CPU-only"] += 1
            continue
        memory = float(w.info.get("gpu_memory_gb") or 0.0)
        size = "a whole GPU" if share == 1 else f"{share:g} GPUs" if share > 1 else f"a {share:g} share of a GPU"
        kinds[f"with {size} {w.info.get('gpu_model') or 'of unknown model'}"
              + (f" ({memory:g} GB)" if memory else "")] += 1
    return ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()) or "none"


def unfit_error(fit: Fit, pool: WorkerPool | None, *, subject: str, instead: str) -> InputError:
    """No eligible worker has the hardware ``fit`` requires: say what is required, what the workers have, the fix
    (``instead``: how to ask for less, e.g. "Submit without gpu")."""
    add = ("a worker without a GPU share (`ciro provider join --num-gpus 0` on a CPU machine)" if fit.cpu_only else
           "a provider node with such a GPU (`ciro provider join --num-gpus 1` on it; --gpu-model and "
           "--gpu-memory-gb declare a GPU nvidia-smi cannot see)")
    return InputError(f"No worker of this gateway fits {subject}: it requires {fit.describe()}, and the workers "
                      f"have: {hardware_summary(pool)} (GET /v1/workers). {instead}, or add {add}.",
                      detail={"required": fit.to_dict()})


def admit_fit(deployed: Fit, options: Mapping[str, Any], pool: WorkerPool | None) -> Fit:
    """The hardware a new job needs: its options' (a string ``gpu`` such as "H100" is a preference, recorded only)
    on top of its deployment's ``deployed``. Refused, with the fix, when its options are invalid, contradict the
    deployment, or no eligible worker has that hardware."""
    job = Fit.of(options)
    if (deployed.cpu_only and job.needs_gpu) or (job.cpu_only and deployed.needs_gpu):
        raise InputError(f"The job asks for {job.describe()} but its deployment requires {deployed.describe()}. "
                         f"Submit without {_fit_keys(job)}, or update the deployment.")
    fit = deployed.merge(job)
    if fit.any or (pool is not None and pool.eligible_count(fit) > 0):
        return fit
    if job.any:
        instead = "Update its deployment to require less"
    else:
        instead = f"Submit without {_fit_keys(job)}" + (
            "" if deployed.any else f" (its deployment also requires {deployed.describe()}: update it)")
    raise unfit_error(fit, pool, subject="this job", instead=instead)


def _fit_keys(fit: Fit) -> str:
    return "cpu_only" if fit.cpu_only else "gpu, gpu_model and gpu_memory_gb"
