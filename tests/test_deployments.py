"""Deployments on the gateway (/v1/deployments through the SDK): a name serving a model with its settings,
atomic updates, idempotent deletes, durable across a gateway restart, and settings the workers cannot serve
refused with the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import Cluster

from ciro import CiroClient, DeploymentExistsError, DeploymentNotFoundError, InputError, ModelNotFoundError
from ciro.demo import build_tiny_mlp


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path)).run(None, {"x": x})[0]


def test_deployment_lifecycle_serves_by_name_and_survives_a_restart(client: CiroClient, cluster: Cluster,
                                                                    models_dir: Path) -> None:
    v1 = build_tiny_mlp(models_dir / "dep-v1.onnx", seed=11)
    v2 = build_tiny_mlp(models_dir / "dep-v2.onnx", seed=12)
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    client.delete_deployment("dep-a")  # idempotent, also when there is none
    d = client.create_deployment("dep-a", v1, replicas=1, max_batch_size=4, metadata={"source": "test"})
    assert (d.name, d.verification, d.replicas, d.max_batch_size, d.version) == ("dep-a", "receipt", 1, 4, 1)
    assert d.metadata == {"source": "test"} and d.model["inputs"][0]["name"] == "x"
    with pytest.raises(DeploymentExistsError, match="exists"):
        client.create_deployment("dep-a", v1)
    r = client.infer("dep-a", x)  # the name runs the deployed model
    assert r.model_hash == d.model_hash and np.allclose(r.outputs["y"], _ort(v1, x), atol=1e-5)
    assert r.receipt is not None  # the deployment's level is the SDK default here: receipt

    d2 = client.update_deployment("dep-a", model=v2, replicas=2)
    assert d2.version == 2 and d2.previous_model_hash == d.model_hash and d2.model_hash != d.model_hash
    assert d2.max_batch_size == 4 and d2.replicas == 2  # unchanged settings stay
    r2 = client.infer("dep-a", x)
    assert r2.model_hash == d2.model_hash and np.allclose(r2.outputs["y"], _ort(v2, x), atol=1e-5)
    # a burst through the replicas cap and the batch cap all completes
    results = client.infer_batch("dep-a", np.repeat(x, 10, axis=0))
    assert len(results) == 30 and all(np.allclose(a.outputs["y"], b, atol=1e-5)
                                      for a, b in zip(results, _ort(v2, np.repeat(x, 10, axis=0)), strict=True))

    cluster.ciro("down")
    cluster.ciro("up", "--ray-address", cluster.ray_address, "--workers", "2")
    [listed] = [x for x in client.deployments() if x.name == "dep-a"]
    assert listed.model_hash == d2.model_hash and listed.version == 2  # kept across the restart
    assert client.infer("dep-a", x).model_hash == d2.model_hash

    assert client.delete_deployment("dep-a") is True
    assert client.delete_deployment("dep-a") is False
    with pytest.raises(DeploymentNotFoundError, match="No deployment 'dep-a'"):
        client.deployment("dep-a")
    with pytest.raises(ModelNotFoundError):
        client.infer("dep-a", x)  # the name is gone; the model stays by hash
    assert client.infer(d2.model_hash, x).model_hash == d2.model_hash


def test_settings_the_workers_cannot_serve_are_refused_and_nothing_changes(client: CiroClient,
                                                                         mlp_path: Path) -> None:
    client.delete_deployment("dep-bad")
    cases = [
        (dict(gpu=True), r"No worker of this gateway fits this deployment: it requires a GPU, and the workers "
                         r"have: 2 CPU-only .*Deploy without the requirement .*ciro provider join --num-gpus 1"),
        (dict(gpu_model="H100", gpu_memory_gb=40), "it requires a GPU, model H100, at least 40 GB"),
        (dict(cpu_only=True, gpu=True), "cpu_only cannot be combined with gpu"),
        (dict(replicas=9), "replicas=9 but this gateway has 2"),
        (dict(verification="quorum"), "needs 4 eligible workers"),
        (dict(verification="zk"), "no zk set-up"),
        (dict(max_batch_size=10**6), "above this gateway's limit"),
        (dict(max_payment=10**15), "settles no payments"),
    ]
    info = client.deploy(mlp_path)
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message):
            client.create_deployment("dep-bad", info.hash, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ModelNotFoundError):
        client.create_deployment("dep-bad", "no-such-model")
    with pytest.raises(InputError, match=r"Invalid request at body\.name"):
        client.create_deployment("bad name!", info.hash)
    assert all(d.name != "dep-bad" for d in client.deployments())
    client.create_deployment("dep-bad", info.hash)
    with pytest.raises(InputError, match="replicas=9"):
        client.update_deployment("dep-bad", replicas=9)
    assert client.deployment("dep-bad").version == 1  # the refused update changed nothing
    with pytest.raises(DeploymentNotFoundError):
        client.update_deployment("no-such-deployment", replicas=1)
    client.delete_deployment("dep-bad")
