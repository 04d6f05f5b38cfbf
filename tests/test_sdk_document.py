"""The SDK calls the Ciro tech-stack page shows, run exactly as written (against the session's gateway, which
network="local" attaches to), and what each argument does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Cluster

from ciro import BatchResult, CiroClient, InputError, JobResult, VerificationLevel, verify


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc2(torch.relu(self.fc1(x))), dim=-1)


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pt") / "my_model.pt"
    torch.save(_Net().eval(), path)
    return path


def test_the_tech_stack_page_calls_as_written(cluster: Cluster, model_pt: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    monkeypatch.setenv("CIRO_HOME", str(cluster.home))
    monkeypatch.setenv("CIRO_PORT", str(cluster.port))
    client = CiroClient(network="local", verification=VerificationLevel.ZKML, gpu_preference="H100")
    model = client.deploy_model(framework="pytorch", model_path=str(model_pt), optimization="none",
                                verification="zk", input_shape=(1, 4))
    x = np.random.default_rng(1).standard_normal((1, 4)).astype(np.float32)
    result = client.infer(model_id=model.id, input_data=x, batch_size=32, generate_proof=True)
    assert isinstance(result, JobResult) and result.verification is VerificationLevel.ZKML
    want = torch.load(model_pt, weights_only=False)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(result.output, want, rtol=1e-4, atol=1e-5)
    assert result.confidence is not None and result.confidence[0] == pytest.approx(want.max(), abs=1e-5)
    assert result.proof_hash and result.on_chain_verified is False  # this gateway settles nothing on chain
    assert result.options == {"gpu": "H100"}  # the preference, recorded
    with pytest.raises(InputError, match="does not settle"):
        result.wait_settled(timeout=1)
    client.close()


def test_batch_size_splits_the_input_into_jobs(client: CiroClient, model_pt: Path) -> None:
    model = client.deploy_model(framework="pytorch", model_path=model_pt, input_shape=(1, 4))
    x = np.random.default_rng(2).standard_normal((70, 4)).astype(np.float32)
    out = client.infer(model_id=model.id, input_data=x, batch_size=32)
    assert isinstance(out, BatchResult) and [len(r.output) for r in out.results] == [32, 32, 6]  # type: ignore[arg-type]
    assert len({r.job_id for r in out.results}) == 3 and all(verify(r).valid for r in out.results)
    want = torch.load(model_pt, weights_only=False)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out.output, want, rtol=1e-4, atol=1e-5)
    assert out.confidence is not None and out.confidence.shape == (70,)
    one = client.infer(model_id=model.id, input_data=x[:5], batch_size=32)
    assert isinstance(one, JobResult)  # a single job when it fits


def test_optimizations_are_real_and_measured(client: CiroClient, model_pt: Path) -> None:
    base = client.deploy_model(framework="pytorch", model_path=model_pt, input_shape=(1, 4))
    x = np.random.default_rng(3).standard_normal((16, 4)).astype(np.float32)
    for level in ("basic", "all", "int8"):
        info = client.deploy_model(framework="pytorch", model_path=model_pt, input_shape=(1, 4),
                                   optimization=level)
        assert info.hash != base.hash, level  # a different model was deployed
        assert info.conversion is not None and "moved by at most" in info.conversion
        got = client.infer(info.hash, x).output
        tol = 0.05 if level == "int8" else 1e-5
        np.testing.assert_allclose(got, client.infer(base.hash, x).output, atol=tol)
    with pytest.raises(InputError, match="TensorRT"):
        client.deploy_model(framework="pytorch", model_path=model_pt, input_shape=(1, 4), optimization="tensorrt")
    with pytest.raises(InputError, match="Unknown optimization"):
        client.deploy_model(framework="onnx", model_path=model_pt, optimization="turbo")


def test_deploy_model_refusals_say_why(client: CiroClient, model_pt: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="input_shape"):
        client.deploy_model(framework="pytorch", model_path=model_pt)  # a module does not say what it takes
    state = tmp_path / "state.pt"
    torch.save(_Net().state_dict(), state)
    with pytest.raises(Exception, match="state_dict"):
        client.deploy_model(framework="pytorch", model_path=state, input_shape=(1, 4))
    with pytest.raises(InputError, match="onnxmltools"):
        client.deploy_model(framework="xgboost", model_path=state)
    with pytest.raises(InputError, match="Unknown framework"):
        client.deploy_model(framework="keras3", model_path=state)
