"""One zk proof for many inferences (ciro.zk_batch): the scheduler's bucket choice, a real EZKL proof over 4 rows and
what binds each job to its row, and batched zk jobs through the gateway, verified offline."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from conftest import Cluster
from onnx import TensorProto, helper, numpy_helper

from ciro import CiroClient, ConfigError, InputError, verify
from ciro.estimate import estimate
from ciro.zk_batch import batch_dim, batch_dir, stack_rows
from ciro_ray.batching import smallest_bucket, zk_bucket, zk_buckets

BUCKETS = (1, 4, 16, 64)


def test_bucket_choice() -> None:
    assert zk_buckets("64, 1,16,4,4") == BUCKETS
    for bad in ("", "0,4", "a,b", "1,4096"):
        with pytest.raises(ConfigError, match="zk_batch_buckets"):
            zk_buckets(bad)
    assert [smallest_bucket(n, BUCKETS) for n in (1, 2, 4, 5, 16, 17, 64)] == [1, 4, 4, 16, 16, 64, 64]
    assert zk_bucket(3, 0.05, 0.2, BUCKETS) == pytest.approx(0.15)  # wait for more, up to 200 ms from the oldest
    assert zk_bucket(3, 0.2, 0.2, BUCKETS) == (3, 4)  # waited enough: the smallest bucket holding them
    assert zk_bucket(1, 0.3, 0.2, BUCKETS) == (1, 1)  # a lone job: proven as today
    assert zk_bucket(17, 0.3, 0.2, BUCKETS) == (17, 64)
    assert zk_bucket(64, 0.0, 0.2, BUCKETS) == (64, 64)  # the largest bucket is full: no waiting
    assert zk_bucket(100, 0.0, 0.2, BUCKETS) == (64, 64)  # the rest waits for the next proof
    assert zk_bucket(2, 0.0, 0.0, BUCKETS) == (2, 4)  # zk_batch_wait_ms = 0
    assert zk_bucket(2, 9.0, 0.2, (1,)) == (1, 1)  # buckets "1": one job a proof


def _logreg(path: Path, rows: int | str = "n", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Sigmoid", ["z"], ["y"])], "lr",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, 1])],
        initializer=[numpy_helper.from_array(rng.standard_normal((4, 1)).astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_batch_dim_and_padding(tmp_path: Path) -> None:
    assert batch_dim(_logreg(tmp_path / "a.onnx").read_bytes()) == "n"
    assert batch_dim(_logreg(tmp_path / "b.onnx", rows=1).read_bytes()) is None  # fixed rows: one job a proof
    rows = [[np.full((1, 4), i, np.float32)] for i in range(3)]
    (x,) = stack_rows(rows, 4)
    assert x.shape == (4, 4) and x[:, 0].tolist() == [0, 1, 2, 2]  # padded with the last real row
    with pytest.raises(InputError, match="exactly one row"):
        stack_rows([[np.zeros((2, 4), np.float32)]], 4)
    with pytest.raises(InputError, match="do not fit"):
        stack_rows(rows, 2)
    assert batch_dir(tmp_path / "zk", 1) == tmp_path / "zk" and batch_dir(tmp_path / "zk", 4).name == "zk-b4"


@pytest.fixture(scope="module")
def batch4(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real set-up over 4 rows of a tiny logistic regression and one proof of 3 jobs (a padded row)."""
    from ciro.estimate import calibration_sample
    from ciro.zk import zk_setup
    from ciro.zk_batch import prove_batch

    tmp = tmp_path_factory.mktemp("zkb")
    path = _logreg(tmp / "lr.onnx")
    data = path.read_bytes()
    setup = zk_setup(data, tmp / "zk-b4", calibration=calibration_sample(data), srs_dir=None, home=tmp / "home",
                     batch=4)
    assert setup.batch == 4 and setup.srs.kind == "development"
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    xs = [np.random.default_rng(i).standard_normal((1, 4)).astype(np.float32) for i in range(6)]
    ys = [sess.run(None, {"x": x})[0] for x in xs]
    arts = prove_batch(setup, [[x] for x in xs[:3]], model_hash="m", commitments=[(f"in{i}", f"out{i}")
                                                                                    for i in range(3)])
    other = prove_batch(setup, [[x] for x in xs[3:5]], model_hash="m", commitments=[("a", "b"), ("c", "d")])
    return {"path": path, "setup": setup, "xs": xs, "ys": ys, "arts": arts, "other": other}


def _failed(art: dict[str, Any], b: dict[str, Any], job: int, **kw: Any) -> dict[str, str]:
    from ciro.zk_verify import zk_check

    checks = zk_check(art, outputs=[b["ys"][job]], inputs=kw.get("inputs", [b["xs"][job]]),
                      srs_path=b["setup"].srs.path)
    return {name: detail for name, ok, detail in checks if not ok}


def test_a_batch_proof_binds_each_job_to_its_row(batch4: dict[str, Any]) -> None:
    b = batch4
    arts = b["arts"]
    assert len({a["proof_hash"] for a in arts}) == 1  # one proof ...
    assert [a["batch"]["row"] for a in arts] == [0, 1, 2] and all(a["batch"]["size"] == 4 for a in arts)
    assert [a["input_commitment"] for a in arts] == ["in0", "in1", "in2"]  # ... each job its own commitments
    for i, art in enumerate(arts):
        assert _failed(art, b, i) == {}
    # a job that claims another job's row: the proven inputs and outputs there are not its own
    lie = copy.deepcopy(arts[0])
    lie["batch"]["row"] = 1
    bad = _failed(lie, b, 0)
    assert {"zk inputs", "zk outputs"} <= set(bad) and "row 1" in bad["zk outputs"]
    # a row outside the batch's real rows (the padding), or a batch size the circuit does not have
    for key, value, why in (("row", 3, "outside the batch's real rows"), ("row", -1, "outside"),
                            ("size", 16, "circuit has 4"), ("row", "0", "integers")):
        lie = copy.deepcopy(arts[2])
        lie["batch"][key] = value
        assert why in _failed(lie, b, 2).get("zk batch row", ""), (key, value)
    # the proof of another batch, at the same row: valid as a proof, but not of this job
    swapped = copy.deepcopy(arts[1])
    swapped["proof"] = b["other"][1]["proof"]
    bad = _failed(swapped, b, 1)
    assert "zk proof" not in bad and {"zk inputs", "zk outputs"} <= set(bad)
    # without the inputs, the outputs alone still bind the row
    lie = json.loads(json.dumps(arts[0])) | {"batch": {**arts[0]["batch"], "row": 2}}
    assert set(_failed(lie, b, 0, inputs=None)) == {"zk outputs"}


def test_batched_zk_jobs_share_one_proof_and_verify_offline(client: CiroClient, cluster: Cluster,
                                                            models_dir: Path) -> None:
    path = _logreg(models_dir / "zkb-lr.onnx", seed=5)
    info = client.deploy(path, zk=True)
    x = np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)
    batch = client.infer(info.hash, {"x": x}, verification="zk", batch_size=1, timeout=900)  # 3 jobs, one request
    results = batch.results  # type: ignore[union-attr]
    assert len(results) == 3 and len({r.proof_hash for r in results}) == 1
    assert sorted(r.zk["batch"]["row"] for r in results) == [0, 1, 2]
    assert all(r.zk["batch"]["size"] == 4 for r in results)  # the smallest bucket that holds 3 jobs
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for i, r in enumerate(results):
        np.testing.assert_allclose(r.output, want[i:i + 1], rtol=1e-5, atol=1e-6)
        report = verify(r, inputs={"x": x[i:i + 1]}, model=path, config=cluster.config)
        assert report.valid, report.text()
        assert {"zk batch row", "zk proof", "zk settings", "zk verifying key", "zk inputs", "zk outputs"} <= {
            c.name for c in report.checks}
    # result 0 claiming result 1's row; then result 0 carrying result 1's artifact (its row and commitments)
    d = results[0].to_dict()
    d["zk"]["batch"]["row"] = results[1].zk["batch"]["row"]
    failed = {c.name for c in verify(d, inputs={"x": x[:1]}, model=path, config=cluster.config).failures}
    assert {"zk inputs", "zk outputs"} <= failed
    d = results[0].to_dict()
    d["zk"] = results[1].to_dict()["zk"]
    failed = {c.name for c in verify(d, inputs={"x": x[:1]}, model=path, config=cluster.config).failures}
    assert "zk artifact" in failed and {"zk inputs", "zk outputs"} <= failed
    # `ciro estimate --batch 4` builds the circuit the scheduler's (model, 4) set-up built
    meta = json.loads((cluster.home / "models" / info.hash / "zk-b4" / "setup.json").read_text())
    assert meta["batch"] == 4 and meta["logrows"] == results[0].zk["settings"]["run_args"]["logrows"]
    out = cluster.ciro("estimate", str(path), "--batch", "4").stdout
    assert f"logrows {meta['logrows']}" in out and "one proof for 4 jobs" in out and "per inference" in out
    e = estimate(path, batch=4, config=cluster.config)
    assert e["per_inference_s"] == pytest.approx(e["prove_s"] / 4) and e["num_rows"] == meta["num_rows"]
    fixed = cluster.ciro("estimate", str(_logreg(models_dir / "zkb-fixed.onnx", rows=1)), "--batch", "4", check=False)
    assert fixed.returncode == 4 and "no single symbolic batch dimension" in fixed.stderr
    # a lone job is a bucket of one: proven with the model's own set-up, as before batching
    lone = client.infer(info.hash, {"x": x[:1]}, verification="zk", timeout=900)
    assert "batch" not in lone.zk and verify(lone, inputs={"x": x[:1]}, model=path, config=cluster.config).valid
