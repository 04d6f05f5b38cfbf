"""Deploy a Hugging Face model on Ciro: resolve it offline (cache or folder), export it to ONNX with its processor
bundle, upload both, and serve it under a deployment named after the repo.

The repo id and commit sha are recorded in the deployment's metadata against the Ciro model hash. Deploying a
revision that is already deployed reuses it (nothing is exported again); a new revision replaces the old one only
once it is uploaded, so the deployment switches over when the new model is ready.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ciro import CiroClient, Config, Deployment, DeploymentNotFoundError, InputError, ModelInfo, VerificationLevel

from .export import export
from .resolve import Resolved, resolve

__all__ = ["HFDeployment", "deploy", "deployment_name", "exported", "find_deployment", "model_source"]


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


def deployment_name(repo_id: str) -> str:
    """``org/name`` -> ``hf-org--name`` (a valid deployment name, one per repo)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", repo_id.replace("/", "--")).strip("-.") or "model"
    return f"hf-{slug}"[:128]


def find_deployment(client: CiroClient, repo_id: str) -> Deployment | None:
    """The deployment of this repo on the gateway (by its recorded repo id), if any."""
    for d in client.deployments():
        if (d.metadata.get("hf") or {}).get("repo_id") == repo_id:
            return d
    return None


def _cache_dir(cfg: Config, resolved: Resolved, task: str | None) -> Path:
    """This machine's export of one revision of one repo (or folder) for one task."""
    return cfg.home / "hf" / deployment_name(resolved.repo_id) / f"{resolved.sha}-{task or 'auto'}"


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
           name: str | None = None, folders: bool = True) -> HFDeployment:
    """Deploy a Hub model (from the local cache) or a local model folder; returns what was deployed.

    ``task`` is inferred from the model's config when not given. Raises ``ModelNotFoundError`` when the model or
    revision is not available offline, ``InputError`` for an unsupported task or architecture. ``folders=False``
    deploys repo ids only (the web page of a gateway that others can reach)."""
    own = client is None
    client = client or CiroClient(config=Config.load())
    try:
        level = VerificationLevel.parse(verify).value
        resolved = resolve(repo_id_or_path, revision, folders=folders)
        name = name or deployment_name(resolved.repo_id)
        try:
            current: Deployment | None = client.deployment(name)
        except DeploymentNotFoundError:
            current = None
        hf = (current.metadata.get("hf") or {}) if current else {}
        if current is not None and hf.get("sha") == resolved.sha and (task is None or hf.get("task") == task):
            if current.verification != level:
                current = client.update_deployment(name, verification=level)
            return HFDeployment(name, resolved.repo_id, resolved.sha, str(hf.get("task")), current.model_hash, True,
                                current)
        onnx, bundle, chosen = exported(client.config, resolved, task)
        info = client.deploy(onnx, zk=level == "zk")
        client.attach_processor(info.hash, bundle)
        meta = {"hf": {"repo_id": resolved.repo_id, "revision": revision, "sha": resolved.sha, "task": chosen,
                       "source": resolved.source}}
        if current is None:
            d = client.create_deployment(name, info.hash, verification=level, metadata=meta)
        else:  # the new revision is stored and has its processor: now the name moves to it
            d = client.update_deployment(name, model=info.hash, verification=level,
                                         metadata={**current.metadata, **meta})
        return HFDeployment(name, resolved.repo_id, resolved.sha, chosen, info.hash, False, d)
    finally:
        if own:
            client.close()


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
