"""Zero-knowledge jobs end to end: EZKL set-up at deploy, proving in a Ray task, offline verification."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import Cluster

from ciro import CiroClient, InputError, InvalidModelError, JobStatus, verify
from ciro.demo import build_tiny_mlp


@pytest.fixture(scope="module")
def zk_model(client: CiroClient, models_dir: Path):  # type: ignore[no-untyped-def]
    path = build_tiny_mlp(models_dir / "zk-mlp.onnx", in_dim=8, hidden=8, out_dim=3, seed=3)
    return path, client.deploy(path, zk=True)


def test_zk_job_is_proven_and_verifies_offline(client: CiroClient, cluster: Cluster, zk_model) -> None:  # type: ignore[no-untyped-def]
    path, info = zk_model
    assert info.zk["status"] == "ready" and info.zk["srs"]["kind"] == "development"
    assert client.deploy(path, zk=True).zk["vk_hash"] == info.zk["vk_hash"]  # set-up is cached, not redone
    x = np.random.default_rng(4).standard_normal((1, 8)).astype(np.float32)
    job = client.submit(info.hash, x, verification="zk")
    seen = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not seen or not seen[-1].terminal):
        seen.append(client.status(job).status)
        time.sleep(0.05)
    assert JobStatus.PROVING in seen  # the proof takes seconds: status says so meanwhile
    result = client.wait(job, timeout=300)
    assert result.status is JobStatus.DONE and result.zk is not None and result.proof_hash
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(result.output, want, rtol=1e-5, atol=1e-6)
    assert "DEVELOPMENT SRS" in result.zk["warning"]
    report = verify(result, inputs={"x": x}, model=path, config=cluster.config)
    assert report.valid, report.text()
    names = {c.name for c in report.checks}
    assert {"zk proof", "zk settings", "zk verifying key", "zk outputs", "zk inputs", "receipt signature"} <= names
    assert any("DEVELOPMENT SRS" in n for n in report.notes)

    def failing(d: dict, **kw: object) -> set[str]:
        kw.setdefault("model", path)  # the verifying key is rebuilt from the model (then cached)
        return {c.name for c in verify(d, config=cluster.config, **kw).failures}  # type: ignore[arg-type]

    base = result.to_dict()
    d = json.loads(json.dumps(base))
    d["zk"]["proof"]["proof"][40] ^= 1  # one proof byte
    assert "zk proof" in failing(d)
    d = json.loads(json.dumps(base))  # one output value (and the commitment, to get past that check)
    d["outputs"]["y"]["data"][0] += 1.0
    assert "output commitment" in failing(d)
    assert "zk inputs" in failing(base, inputs={"x": x + 0.5})  # one input value
    other = build_tiny_mlp(path.parent / "zk-other.onnx", in_dim=8, hidden=8, out_dim=3, seed=9)
    assert {"model hash", "zk verifying key", "zk proof"} <= failing(base, model=other)  # another model
    other_info = client.deploy(other, zk=True)
    other_result = client.infer(other_info.hash, x, verification="zk")
    d = json.loads(json.dumps(base))  # swap in the other model's vk
    d["zk"]["vk_b64"], d["zk"]["vk_hash"] = other_result.zk["vk_b64"], other_result.zk["vk_hash"]
    assert failing(d) == {"zk verifying key"}  # checked against the rebuilt vk, which is not the shipped one
    assert {"zk verifying key", "zk proof"} <= failing(d, model=None)  # only the shipped vk: never valid


def test_cli_zk_flow(cluster: Cluster, zk_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, _ = zk_model
    out = cluster.ciro("deploy", "--zk", str(path), "--name", "zk-cli").stdout
    assert "zk     ready" in out and "WARNING: development SRS" in out
    np.savez(tmp_path / "x.npz", x=np.full((1, 8), 0.25, np.float32))
    cluster.ciro("infer", "zk-cli", "--verify", "zk", "-i", str(tmp_path / "x.npz"), "--out", str(tmp_path / "r.json"),
                 timeout=600)
    ok = cluster.ciro("verify", str(tmp_path / "r.json"), "--model", str(path), "-i", str(tmp_path / "x.npz"))
    assert "[ok] zk proof" in ok.stdout and "[ok] zk verifying key" in ok.stdout and "NOTE:" in ok.stdout


def test_a_model_ezkl_cannot_handle_is_refused_for_zk_only(client: CiroClient, digits_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="serves receipt and quorum jobs, but not zk") as err:
        client.deploy(digits_path, zk=True)  # skl2onnx's LinearClassifier (ai.onnx.ml) has no circuit
    model_hash = err.value.detail["model_hash"]
    x = np.zeros((1, 64), np.float32)
    assert client.infer(model_hash, x).status is JobStatus.DONE  # still serves receipt jobs
    with pytest.raises(InputError, match="no zk set-up"):
        client.infer(model_hash, x, verification="zk")


def test_zk_jobs_prove_one_row(client: CiroClient, zk_model) -> None:  # type: ignore[no-untyped-def]
    _, info = zk_model
    with pytest.raises(InputError, match="proves one row"):
        client.infer(info.hash, np.zeros((2, 8), np.float32), verification="zk")


def test_estimate_before_any_heavy_work(cluster: Cluster, zk_model, digits_path: Path,  # type: ignore[no-untyped-def]
                                        tmp_path: Path) -> None:
    from ciro import Config
    from ciro.estimate import estimate, scaling

    path, info = zk_model
    e = estimate(path, config=cluster.config)
    assert e["logrows"] == info.zk["logrows"]  # the same circuit size the real set-up found
    # the cluster's set-up made the development SRS of this size: a second deployment would not pay for it again
    assert e["srs_cached"] and e["setup_s"] == e["setup_cached_s"] < e["setup_first_s"]
    assert 0 < e["calibrate_s"] < e["setup_s"] < 600 and 0 < e["prove_s"] < 600 and 0 < e["job_s"] < 600
    assert e["pk_bytes"] > 1e6 and e["fits"]
    meta = scaling()
    assert e["basis"].startswith(f"{len(meta['runs'])} measured runs") and meta["machine"] in e["basis"]
    assert f"within {100 * meta['leave_one_out_error']['setup']:.0f}% (set-up)" in e["basis"]
    small = estimate(path, memory_bytes=10 * 2**20, config=Config.load(home=tmp_path / "fresh"))
    assert not small["fits"] and small["message"].startswith("will not fit in 0.0 GiB")
    assert not small["srs_cached"] and small["setup_s"] == small["setup_first_s"]  # a machine without that SRS
    out = cluster.ciro("estimate", str(path)).stdout
    assert f"logrows {info.zk['logrows']}" in out and "prove (per job)" in out and "fits:" in out
    bad = cluster.ciro("estimate", str(digits_path), check=False)
    assert bad.returncode == 4 and "LinearClassifier" in bad.stderr and "receipt and quorum" in bad.stderr


def test_hashed_visibility_binds_inputs_and_outputs_through_poseidon(client: CiroClient, cluster: Cluster,
                                                                     models_dir: Path) -> None:
    path = build_tiny_mlp(models_dir / "zk-hashed.onnx", in_dim=4, hidden=4, out_dim=2, seed=5)
    info = client.deploy(path, zk=True, zk_inputs="hashed", zk_outputs="hashed")
    assert (info.zk["input_visibility"], info.zk["output_visibility"]) == ("hashed", "hashed")
    x = np.random.default_rng(6).standard_normal((1, 4)).astype(np.float32)
    result = client.infer(info.hash, x, verification="zk", timeout=300)
    assert len(result.zk["proof"]["instances"][0]) == 2  # one Poseidon hash for the input, one for the output
    report = verify(result, inputs={"x": x}, model=path, config=cluster.config)
    assert report.valid, report.text()
    assert {"zk inputs", "zk output hashes", "zk outputs"} <= {c.name for c in report.checks}
    assert any("not compared" in n for n in verify(result, model=path, config=cluster.config).notes)  # no inputs

    def failing(d: dict, **kw: object) -> set[str]:
        return {c.name for c in verify(d, model=path, config=cluster.config, **kw).failures}  # type: ignore[arg-type]

    base = result.to_dict()
    # other inputs: the proof's, the commitment and the verifier's own onnxruntime run all disagree
    assert failing(base, inputs={"x": x + 0.01}) == {"zk inputs", "input commitment", "recomputed outputs"}
    d = json.loads(json.dumps(base))
    d["zk"]["output_felts"][0][0] = d["zk"]["output_felts"][0][1]  # a shipped output value that was not proven
    assert "zk output hashes" in failing(d)
    public = client.deploy(path, zk=True)  # other settings: a new set-up replaces the old one
    assert public.zk["input_visibility"] == "public" and public.zk["vk_hash"] != info.zk["vk_hash"]
    # the earlier proof carries its own settings: the vk rebuilt from the model + those settings verifies it
    assert verify(base, inputs={"x": x}, model=path, config=cluster.config).valid


def test_warm_prover_reuses_its_process_and_recovers_from_timeouts_and_errors(
        cluster: Cluster, zk_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ciro import ModelStore
    from ciro_ray.proving import Prover

    path, info = zk_model
    zk_dir = str(ModelStore(cluster.home / "models", max_bytes=1 << 30).zk_dir(info.hash))
    x = [np.random.default_rng(8).standard_normal((1, 8)).astype(np.float32)]
    y = ort.InferenceSession(str(path)).run(None, {"x": x[0]})
    prover = Prover()
    try:
        args = (zk_dir, None, str(cluster.home), x, info.hash, "00" * 32, "11" * 32)
        first = prover.prove(*args, y)
        pid = prover._idle[0].proc.pid
        wrong = [y[0].copy()]
        wrong[0][0, 1] += 0.5
        second = prover.prove(*args, wrong)
        assert prover._idle[0].proc.pid == pid  # the same warm process made both proofs
        a, b = first["artifact"], second["artifact"]
        assert a["model_hash"] == b["model_hash"] == info.hash and a["proof_hash"]
        # the proof's outputs are the model's: the true outputs are within tolerance, a changed one is not
        assert first["output_gap"] <= first["tolerance"] < 0.5 and second["output_gap"] > second["tolerance"]
        assert abs(second["output_gap"] - 0.5) <= second["tolerance"]
        with pytest.raises(RuntimeError, match="did not finish within 0s"):
            prover.prove(*args, timeout_s=0.05)
        assert not prover._idle  # the stuck process was killed, not kept
        with pytest.raises(RuntimeError, match="No such file"):
            prover.prove(str(tmp_path / "missing"), *args[1:])
        assert prover.prove(*args)["artifact"]["proof_hash"]  # and a fresh one takes over
    finally:
        prover.stop()
