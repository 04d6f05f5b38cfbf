from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ciro import JobStatus, canonical_bytes, commitment, decode_canonical
from ciro.demo import build_digits_model, build_tiny_mlp
from ciro_ray.jobstore import JobStore, NewJob
from ciro_ray.worker import OnnxWorker


def _job(i: int) -> NewJob:
    x = {"x": np.full((1, 2), i, dtype=np.float32)}
    return NewJob(f"job{i}", "m" * 64, "none", {}, commitment(x), canonical_bytes(x))


def test_jobstore_delivers_a_result_at_most_once(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    store.insert([_job(i) for i in range(3)])
    moved = store.mark_running(["job0", "job1"], "w1")
    assert moved == {"job0": 1, "job1": 1}
    assert store.mark_running(["job0"], "w2") == {}  # already running: not dispatched twice
    assert store.complete([("job0", 1, "c0", b"out", "w1", None)]) == {"job0"}
    assert store.complete([("job0", 1, "c0", b"out", "w1", None)]) == set()  # second delivery refused
    # job1's worker dies: requeue, run again (attempt 2); the late answer of attempt 1 is dropped
    assert store.requeue([("job1", 1)]) == {"job1"}
    assert store.mark_running(["job1"], "w2") == {"job1": 2}
    assert store.complete([("job1", 1, "stale", b"x", "w1", None)]) == set()
    assert store.complete([("job1", 2, "c1", b"y", "w2", None)]) == {"job1"}
    row = store.get("job1")
    assert row is not None and row.status is JobStatus.DONE and row.output_commitment == "c1" and row.attempts == 2
    store.close()


def test_jobstore_keeps_inputs_out_of_the_job_row_and_reads_older_inline_inputs(tmp_path: Path) -> None:
    import sqlite3

    store = JobStore(tmp_path / "jobs.db")
    store.insert([_job(1)])
    store.close()
    db = sqlite3.connect(tmp_path / "jobs.db")
    assert db.execute("SELECT length(inputs) FROM jobs WHERE id='job1'").fetchone() == (0,)  # status updates stay small
    old = _job(2)  # a job written by an older store, its inputs inline in the row
    db.execute("INSERT INTO jobs (id, model_hash, status, verification, options, input_commitment, inputs, "
               "submitted_at) VALUES (?, ?, 'queued', 'none', '{}', ?, ?, 0)",
               (old.id, old.model_hash, old.input_commitment, old.inputs))
    db.commit()
    db.close()
    store = JobStore(tmp_path / "jobs.db")
    for job in (_job(1), old):
        row = store.get(job.id, with_inputs=True)
        assert row is not None and row.inputs == job.inputs
        np.testing.assert_array_equal(decode_canonical(row.inputs)["x"], decode_canonical(job.inputs)["x"])
    assert {r.id: r.inputs for r in store.queued()} == {"job1": _job(1).inputs, "job2": old.inputs}  # resumed whole
    store.close()


def test_jobstore_survives_reopen_and_recovers_running_jobs(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    store.insert([_job(i) for i in range(3)])
    store.mark_running(["job0"], "w1")
    store.close()  # the gateway dies here
    again = JobStore(tmp_path / "jobs.db")
    assert again.recover() == 1
    queued = again.queued()
    assert [r.id for r in queued] == ["job0", "job1", "job2"]
    assert queued[0].inputs is not None and decode_canonical(queued[0].inputs)["x"][0, 0] == 0
    assert again.cancel("job2") is JobStatus.CANCELLED
    assert again.mark_running(["job2"], "w1") == {}  # cancelled jobs are never dispatched
    assert again.cancel("nope") is None
    assert again.counts() == {"queued": 2, "cancelled": 1}


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    path = build_tiny_mlp(tmp_path_factory.mktemp("m") / "mlp.onnx")
    data = path.read_bytes()
    import hashlib

    return hashlib.sha256(data).hexdigest(), data


def test_worker_batches_matches_onnxruntime_and_signs_receipts(mlp: tuple[str, bytes], tmp_path: Path) -> None:
    from ciro import KeyStore, Receipt
    from ciro_ray.worker import JobMeta

    digest, data = mlp
    worker = OnnxWorker("w1", home=str(tmp_path), key_name="worker-0")
    assert KeyStore(tmp_path / "keys").get("worker-0").public_hex == worker.info()["worker_key"]
    rng = np.random.default_rng(1)
    batch = [{"x": rng.standard_normal((n, 16)).astype(np.float32)} for n in (1, 3, 2)]
    metas = [JobMeta("0a" * 16, "receipt", "claimed", 7, "0x5a"), JobMeta("0b" * 16, "none", ""),
             JobMeta("0c" * 16, "receipt", "")]
    results = worker.run(digest, [data], batch, metas)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for job, meta, (out, commit, receipt) in zip(batch, metas, results, strict=True):
        want = sess.run(None, job)[0]
        assert out["y"].shape == want.shape
        np.testing.assert_allclose(out["y"], want, rtol=1e-5, atol=1e-6)
        assert commit == commitment(out)
        if meta.level == "none":
            assert receipt is None
            continue
        rc = Receipt.from_dict(receipt)
        assert rc.signature_valid() and rc.job_id == meta.job_id and rc.output_commitment == commit
        assert rc.input_commitment == commitment(job)  # what the worker saw, not what it was told
        assert (rc.price, rc.client) == (meta.price, meta.client)
    # The two receipt jobs are one signed batch (the unsigned job is not in it).
    signed = [Receipt.from_dict(r) for _, _, r in results if r is not None]
    assert [(r.leaf_index, r.batch_size, r.batch_total) for r in signed] == [(0, 2, 7), (1, 2, 7)]
    assert len({(r.root, r.signature) for r in signed}) == 1
    assert worker.info()["models_loaded"] == [digest]


def test_worker_refuses_bytes_that_do_not_match_the_hash(mlp: tuple[str, bytes], tmp_path: Path) -> None:
    from ciro import WorkerError

    with pytest.raises(WorkerError, match="do not hash"):
        OnnxWorker("w1", home=str(tmp_path)).run("0" * 64, [mlp[1]], [{"x": np.zeros((1, 16), np.float32)}])


def test_worker_matches_onnxruntime_on_the_digits_classifier(tmp_path: Path) -> None:
    path = build_digits_model(tmp_path / "digits.onnx")
    data = path.read_bytes()
    import hashlib

    worker = OnnxWorker("w1", home=str(tmp_path))
    x = np.random.default_rng(0).random((4, 64)).astype(np.float32)
    out = worker.run(hashlib.sha256(data).hexdigest(), [data], [{"X": x[i:i + 1]} for i in range(4)])
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    labels, probs = sess.run(None, {"X": x})
    assert [o["label"][0] for o, _, _ in out] == list(labels)
    np.testing.assert_allclose(np.concatenate([o["probabilities"] for o, _, _ in out]), probs, rtol=1e-5, atol=1e-6)
