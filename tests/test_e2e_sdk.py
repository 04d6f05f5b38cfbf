"""End to end through the SDK against the session's real gateway and Ray cluster."""

from __future__ import annotations

import json
import urllib.request

import httpx
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from ciro import (
    CiroClient,
    GatewayUnavailableError,
    InputError,
    JobNotFoundError,
    JobStatus,
    ModelInfo,
    ModelNotFoundError,
    VerificationLevel,
    commitment,
    encode_json,
)
from ciro.demo import digits_inputs


def _ort(path, feeds):  # type: ignore[no-untyped-def]
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_infer_matches_onnxruntime_with_commitments(client: CiroClient, mlp: ModelInfo, mlp_path) -> None:
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    result = client.infer(mlp.hash, x)
    assert result.status is JobStatus.DONE
    np.testing.assert_allclose(result.output, _ort(mlp_path, {"x": x})[0], rtol=1e-5, atol=1e-6)
    assert result.input_commitment == commitment({"x": x})
    assert result.output_commitment == commitment(result.outputs)
    assert result.model_hash == mlp.hash and result.worker and result.attempts == 1
    assert result.latency_s is not None and result.latency_s >= 0
    assert result.proof_hash is None and result.on_chain_verified is False  # no evidence in this build


def test_inputs_as_list_dataframe_and_dict(client: CiroClient, digits: ModelInfo, digits_path) -> None:
    x = digits_inputs()[:2]
    want_labels = _ort(digits_path, {"X": x})[0]
    by_list = client.infer("digits", x.tolist())  # by name, a plain list cast to float32
    by_df = client.infer(digits.hash[:10], pd.DataFrame(x))
    by_dict = client.infer(digits.hash, {"X": x})
    for r in (by_list, by_df, by_dict):
        np.testing.assert_array_equal(r.outputs["label"], want_labels)
    assert by_dict.confidence is not None and by_dict.confidence.shape == (2,)


def test_submit_wait_status_jobs(client: CiroClient, mlp: ModelInfo) -> None:
    x = np.ones((1, 16), np.float32)
    job_id = client.submit(mlp.hash, x, gpu="H100")
    assert client.status(job_id).job_id == job_id
    assert client.status(job_id).options == {"gpu": "H100"}  # a preference, recorded with the job
    result = client.wait(job_id, timeout=30)
    assert result.status is JobStatus.DONE and result.outputs is not None
    assert job_id in {j.job_id for j in client.jobs(limit=50)}
    assert all(j.status is JobStatus.DONE for j in client.jobs(status="done", limit=10))


def test_batch_submit_json_and_binary(client: CiroClient, mlp: ModelInfo, mlp_path) -> None:
    x = np.random.default_rng(1).standard_normal((40, 16)).astype(np.float32)
    want = _ort(mlp_path, {"x": x})[0]
    items = client.infer_batch(mlp.hash, [x[i:i + 1] for i in range(10)])  # JSON, one dict per job
    np.testing.assert_allclose(np.concatenate([r.output for r in items]), want[:10], rtol=1e-5, atol=1e-6)
    stacked = client.infer_batch(mlp.hash, x, rows_per_job=4)  # binary, split into 10 jobs of 4 rows
    assert len(stacked) == 10 and len({r.job_id for r in stacked}) == 10
    np.testing.assert_allclose(np.concatenate([r.output for r in stacked]), want, rtol=1e-5, atol=1e-6)
    ids = client.submit_batch(mlp.hash, x, rows_per_job=8)
    assert len(ids) == 5
    assert all(client.wait(i, timeout=30).status is JobStatus.DONE for i in ids)


def test_cancel_and_unknown_job(client: CiroClient, mlp: ModelInfo) -> None:
    job = client.submit(mlp.hash, np.ones((1, 16), np.float32))
    after = client.cancel(job)
    assert after.status in (JobStatus.CANCELLED, JobStatus.DONE)  # it may have finished first
    with pytest.raises(JobNotFoundError, match="No job"):
        client.status("0" * 32)
    with pytest.raises(JobNotFoundError):
        client.cancel("nope")


def test_wrong_inputs_are_rejected_with_clear_errors(client: CiroClient, mlp: ModelInfo) -> None:
    before = len(client.jobs(limit=10_000))
    with pytest.raises(InputError, match="expects float32"):
        client.infer(mlp.hash, np.ones((1, 16), np.float64))
    with pytest.raises(InputError, match=r"expects \[batch, 16\]"):
        client.infer(mlp.hash, np.ones((1, 15), np.float32))
    with pytest.raises(InputError, match="missing \\['x'\\]"):
        client.infer(mlp.hash, {"wrong": np.ones((1, 16), np.float32)})
    with pytest.raises(InputError, match="no zk set-up"):
        client.infer(mlp.hash, np.ones((1, 16), np.float32), verification=VerificationLevel.ZKML)
    with pytest.raises(InputError, match="Unknown verification level"):
        client.infer(mlp.hash, np.ones((1, 16), np.float32), verification="blockchain-magic")
    with pytest.raises(ModelNotFoundError, match="Deploy it first"):
        client.infer("f" * 64, np.ones((1, 16), np.float32))
    assert len(client.jobs(limit=10_000)) == before  # nothing half-written


def test_payload_over_the_limit_is_413_and_stores_nothing(client: CiroClient, mlp: ModelInfo) -> None:
    from ciro import PayloadTooLargeError

    before = len(client.jobs(limit=10_000))
    big = np.zeros((20_000, 16), np.float32)  # 1.28 MB > the session's 1 MB limit
    with pytest.raises(PayloadTooLargeError, match="over this endpoint's limit"):
        client.infer_batch(mlp.hash, big)
    assert len(client.jobs(limit=10_000)) == before


def test_bad_models_are_rejected(client: CiroClient, tmp_path) -> None:
    from ciro import InvalidModelError, ModelTooLargeError
    from ciro.demo import build_tiny_mlp

    before = {m.hash for m in client.models()}
    with pytest.raises(InvalidModelError, match="not an ONNX model"):
        client.deploy(b"\x08\x01 this is not onnx" * 3)
    big = build_tiny_mlp(tmp_path / "big.onnx", in_dim=512, hidden=1024)  # > 2 MB limit of the session
    with pytest.raises(ModelTooLargeError):
        client.deploy(big.read_bytes())
    assert {m.hash for m in client.models()} == before


def test_workers_health_metrics_openapi(client: CiroClient, cluster) -> None:  # type: ignore[no-untyped-def]
    workers = client.workers()
    assert len(workers) == 2 and all(w["alive"] for w in workers)
    assert len({w["node_id"] for w in workers}) == 2  # spread over both Ray nodes of the cluster
    assert all("CPUExecutionProvider" in w["execution_providers"] for w in workers)
    assert client.health()["status"] == "ok"
    with urllib.request.urlopen(cluster.url + "/metrics") as r:
        text = r.read().decode()
    assert "ciro_jobs_submitted_total" in text and "ciro_batch_size_bucket" in text
    with urllib.request.urlopen(cluster.url + "/openapi.json") as r:
        spec = json.loads(r.read())
    for path in ("/v1/models", "/v1/models/{ref}", "/v1/jobs", "/v1/jobs/batch", "/v1/jobs/{job_id}",
                 "/v1/jobs/{job_id}/result", "/v1/jobs/{job_id}/cancel", "/v1/workers", "/healthz", "/metrics"):
        assert path in spec["paths"], path


def test_http_errors_are_json_4xx(cluster) -> None:  # type: ignore[no-untyped-def]
    def post(path: str, body: bytes, ctype: str = "application/json") -> tuple[int, dict]:
        req = urllib.request.Request(cluster.url + path, data=body, headers={"content-type": ctype})
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    cases = [
        ("/v1/jobs", b"{not json", 422),
        ("/v1/jobs", b'{"model": "x"}', 422),
        ("/v1/jobs", json.dumps({"model": "nope", "inputs": {"x": {"dtype": "float32", "shape": [1],
                                                                 "data": [1]}}}).encode(), 404),
        ("/v1/models", b"garbage", 422),
        ("/v1/jobs/batch", json.dumps({"model": "nope"}).encode(), 422),
    ]
    for path, body, status in cases:
        code, payload = post(path, body)
        assert code == status, (path, code, payload)
        assert payload["error"]["code"] and payload["error"]["message"]


def test_sdk_says_how_to_start_a_gateway_when_none_runs() -> None:
    with CiroClient("http://127.0.0.1:9", retries=0) as c, pytest.raises(GatewayUnavailableError, match="ciro up"):
        c.health()


def test_sync_client_works_inside_a_running_event_loop(cluster, mlp: ModelInfo) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    async def notebook_cell() -> np.ndarray:  # like a Jupyter cell: a loop is already running
        with CiroClient(cluster.url) as c:
            return c.infer(mlp.hash, np.ones((1, 16), np.float32)).output

    assert asyncio.run(notebook_cell()).shape == (1, 4)


def test_a_job_that_breaks_the_model_fails_alone(client: CiroClient, tmp_path) -> None:
    """A runtime error of one job (index out of range) fails that job only, not its batch-mates."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ciro import JobFailedError

    table = numpy_helper.from_array(np.arange(10, dtype=np.float32) * 1.5, "table")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "idx"], ["out"])], "lookup",
                              [helper.make_tensor_value_info("idx", TensorProto.INT64, ["n"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n"])], initializer=[table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "lookup.onnx"
    onnx.save(model, str(path))
    info = client.deploy(path)
    items = [np.array([i], np.int64) for i in (1, 2, 99, 3)]  # 99 is out of range
    ids = client.submit_batch(info.hash, items)
    results = [client.wait(j, timeout=60) for j in ids]
    assert [r.status for r in results] == [JobStatus.DONE, JobStatus.DONE, JobStatus.FAILED, JobStatus.DONE]
    assert [float(r.output[0]) for r in results if r.status is JobStatus.DONE] == [1.5, 3.0, 4.5]
    assert "Check the input values" in results[2].error["message"]
    with pytest.raises(JobFailedError, match="failed"):
        client.infer(info.hash, np.array([50], np.int64))


def test_results_carry_a_worker_signed_receipt_that_verifies(client: CiroClient, mlp: ModelInfo, mlp_path) -> None:
    from ciro import verify

    x = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
    result = client.infer(mlp.hash, x)  # receipt is the default level
    assert result.verification is VerificationLevel.RECEIPT and result.receipt is not None
    workers = {w["worker_key"] for w in client.workers()}
    assert result.receipt.worker_key in workers
    report = verify(result, inputs={"x": x}, model=mlp_path, trusted_workers=workers)
    assert report.valid, report.text()
    batch = client.infer_batch(mlp.hash, x, rows_per_job=1)
    assert all(verify(r).valid for r in batch)
    plain = client.infer(mlp.hash, x, verification="none")
    assert plain.receipt is None and verify(plain).valid  # commitments only
    again = client.wait(result.job_id)  # read back from the job store after the fact
    assert again.receipt == result.receipt


def test_an_unknown_option_is_refused_not_stored(client: CiroClient, mlp: ModelInfo, cluster) -> None:
    """A typo must not downgrade verification: verify="zk" used to run at the default receipt level."""
    x = np.ones((1, 16), np.float32)
    before = len(client.jobs(limit=10_000))
    with pytest.raises(InputError, match=r"'verify'.*verification='zk'") as err:
        client.infer(mlp.hash, x, verify="zk")
    assert "gpu_model" in str(err.value) and "max_payment" in str(err.value)  # the known ones are listed
    with pytest.raises(InputError, match="max_latency_ms"):
        client.submit_batch(mlp.hash, x, max_latency_ms=50)
    with pytest.raises(InputError, match="priority"):
        CiroClient(cluster.url, config=cluster.config, priority=1)
    # Straight to the gateway: a huge integer used to be stored, then broke every job listing (HTTP 500).
    r = httpx.post(f"{cluster.url}/v1/jobs", json={"model": mlp.hash, "inputs": encode_json({"x": x}),
                                                   "options": {"priority": 2**70}})
    assert r.status_code == 422 and r.json()["error"]["detail"]["unknown"] == ["priority"]
    r = httpx.post(f"{cluster.url}/v1/jobs", json={"model": mlp.hash, "inputs": encode_json({"x": x}),
                                                   "options": {"f": 2**70}})
    assert r.status_code == 422 and "between 1 and 100" in r.json()["error"]["message"]
    assert len(client.jobs(limit=10_000)) == before  # nothing was stored
