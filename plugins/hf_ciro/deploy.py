"""Deploy a Hugging Face model on Ciro: resolve it (a Hub repo, downloaded into the Hugging Face cache unless
HF_HUB_OFFLINE=1, or a local folder), export it to ONNX with its processor bundle, upload both, and serve it under
a deployment named after the model.

A deployment belongs to one model: a Hub repo id, or a local folder by its absolute path (``Resolved.key``). The
name is ``hf-ORG--NAME`` for a repo, ``hf-FOLDER-XXXXXXXX`` for a folder (its name and a hash of its path, so two
folders both called ``model`` get two deployments). The model key, repo id and commit sha are recorded in the
deployment's metadata against the Ciro model hash. Deploying a revision that is already deployed reuses it (nothing
is exported again); a new revision of the same model replaces the old one only once it is uploaded, so the
deployment switches over when the new model is ready. A name that serves another model is never taken over unless
``replace=True`` (``ciro hf deploy --replace``) says so.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ciro import (
    CiroClient,
    Config,
    Deployment,
    DeploymentExistsError,
    DeploymentNotFoundError,
    InputError,
    ModelInfo,
    VerificationLevel,
)

from .export import export
from .resolve import Resolved, resolve

__all__ = ["HFDeployment", "deploy", "deployment_name", "exported", "find_deployment", "model_key", "model_source"]


@dataclass(frozen=True)
class HFDeployment:
    name: str
    repo_id: str
    sha: str
    task: str
    model_hash: str
    #: True when this revision was deployed already and nothing was exported or uploaded again.
    reused: bool
    deployment: Deployment


def deployment_name(resolved: Resolved) -> str:
    """The default deployment name, one per model: ``org/name`` -> ``hf-org--name``; a folder ``.../model`` ->
    ``hf-model-`` and 8 hex digits of a hash of its absolute path."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", resolved.repo_id.replace("/", "--")).strip("-.") or "model"
    if resolved.source == "cache":
        return f"hf-{slug}"[:128]
    return f"hf-{slug[:110]}-{hashlib.sha256(resolved.key.encode()).hexdigest()[:8]}"


def model_key(d: Deployment) -> str | None:
    """Which model a deployment serves (``Resolved.key``), from its metadata; None if not a Hugging Face one."""
    hf = d.metadata.get("hf") or {}
    if hf.get("key"):
        return str(hf["key"])
    # Deployed before keys were recorded: a repo's id still identifies it; an old folder deployment cannot be told.
    return str(hf["repo_id"]) if hf.get("source") == "cache" and hf.get("repo_id") else None


def find_deployment(client: CiroClient, repo_id: str) -> Deployment | None:
    """The deployment of this Hub repo on the gateway (by its recorded model key), if any."""
    for d in client.deployments():
        if model_key(d) == repo_id:
            return d
    return None


def _cache_dir(cfg: Config, resolved: Resolved, task: str | None) -> Path:
    """This machine's export of one revision of one repo (or folder) for one task."""
    return cfg.paths.hf / deployment_name(resolved) / f"{resolved.sha}-{task or 'auto'}"


def exported(cfg: Config, resolved: Resolved, task: str | None) -> tuple[bytes, dict[str, bytes], str]:
    """ONNX bytes, bundle files and task, from this machine's export cache or a fresh export."""
    cache = _cache_dir(cfg, resolved, task)
    if (cache / "model.onnx").is_file() and (cache / "bundle" / "processor.json").is_file():
        bundle = {p.name: p.read_bytes() for p in (cache / "bundle").iterdir() if p.is_file()}
        return (cache / "model.onnx").read_bytes(), bundle, json.loads(bundle["processor.json"])["task"]
    out = export(resolved.path, task)
    (cache / "bundle").mkdir(parents=True, exist_ok=True)
    for name, data in out.bundle.items():
        (cache / "bundle" / name).write_bytes(data)
    (cache / "model.onnx").write_bytes(out.onnx)
    return out.onnx, dict(out.bundle), out.task


def deploy(repo_id_or_path: str, task: str | None = None, revision: str | None = None,
           verify: VerificationLevel | str = "receipt", *, client: CiroClient | None = None,
           name: str | None = None, folders: bool = True, replace: bool = False,
           token: str | None = None) -> HFDeployment:
    """Deploy a Hub model or a local model folder; returns what was deployed.

    A Hub repo is downloaded into the Hugging Face cache (only the files the export reads) when the Hub is reachable
    and HF_HUB_OFFLINE is not set, else taken from that cache. ``token`` reads a gated or private repo (default:
    HF_TOKEN or the ``huggingface-cli login`` token).

    ``task`` is inferred from the model's config when not given. A deployment ``name`` that serves another model
    is refused with ``DeploymentExistsError`` unless ``replace=True``; one that serves this model moves to the new
    revision. Raises ``ModelNotFoundError`` when the repo or revision does not exist (or, offline, is not cached),
    ``AuthError`` when the Hub refuses a gated or private repo, ``InputError`` for an unsupported task or
    architecture. ``folders=False`` deploys repo ids only (the web page of a gateway that
    others can reach)."""
    own = client is None
    client = client or CiroClient(config=Config.load())
    try:
        level = VerificationLevel.parse(verify).value
        resolved = resolve(repo_id_or_path, revision, folders=folders, token=token)
        name = name or deployment_name(resolved)
        try:
            current: Deployment | None = client.deployment(name)
        except DeploymentNotFoundError:
            current = None
        same = current is not None and model_key(current) == resolved.key
        if current is not None and not same and not replace:  # never take over another model's name silently
            raise _taken(current, resolved, repo_id_or_path)
        hf = (current.metadata.get("hf") or {}) if current else {}
        if current is not None and same and hf.get("sha") == resolved.sha and (task is None or hf.get("task") == task):
            if current.verification != level:
                current = client.update_deployment(name, verification=level)
            return HFDeployment(name, resolved.repo_id, resolved.sha, str(hf.get("task")), current.model_hash, True,
                                current)
        onnx, bundle, chosen = exported(client.config, resolved, task)
        info = client.deploy(onnx, zk=level == "zk")
        client.attach_processor(info.hash, bundle)
        meta = {"hf": {"repo_id": resolved.repo_id, "revision": revision, "sha": resolved.sha, "task": chosen,
                       "source": resolved.source, "key": resolved.key}}
        if current is None:
            d = client.create_deployment(name, info.hash, verification=level, metadata=meta)
        else:  # the new revision is stored and has its processor: now the name moves to it
            d = client.update_deployment(name, model=info.hash, verification=level,
                                         metadata={**current.metadata, **meta})
        return HFDeployment(name, resolved.repo_id, resolved.sha, chosen, info.hash, False, d)
    finally:
        if own:
            client.close()


def _taken(current: Deployment, resolved: Resolved, spec: str) -> DeploymentExistsError:
    hf = current.metadata.get("hf") or {}
    serving = (f"{hf.get('repo_id')} ({model_key(current) or 'a model deployed before model keys were recorded'})"
               if hf else f"model {current.model_hash[:12]}")
    what = resolved.repo_id if resolved.source == "cache" else f"the folder {resolved.path}"
    return DeploymentExistsError(
        f"Deployment {current.name!r} serves {serving}, not {what}; deploying here would silently replace it. Pick "
        f"another name (`ciro hf deploy {spec} --name NEW-NAME`, name= in Python; without one it is "
        f"{deployment_name(resolved)!r}), or replace it on purpose (`--replace`, replace=True).",
        detail={"deployment": current.name, "serving": model_key(current), "requested": resolved.key,
                "suggested_name": deployment_name(resolved)},
    )


def model_source(client: CiroClient, spec: str) -> ModelInfo | None:
    """``ciro.model_sources`` entry: a Hugging Face repo id (``org/name``) names its deployment, deployed first if
    needed (so ``%ciro infer org/name "some text"`` works)."""
    if "/" not in spec or spec.startswith((".", "/", "~")) or Path(spec).exists():
        return None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", spec):
        raise InputError(f"{spec!r} is not a Hugging Face repo id (org/name).")
    d = find_deployment(client, spec) or deploy(spec, client=client).deployment
    return client.model(d.model_hash)


def summary(d: HFDeployment) -> dict[str, Any]:
    return {"name": d.name, "repo_id": d.repo_id, "sha": d.sha, "task": d.task, "model_hash": d.model_hash,
            "reused": d.reused, "verification": d.deployment.verification}
