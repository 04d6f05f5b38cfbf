"""Quorum re-execution against real Byzantine worker actors on the session's Ray cluster."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import Cluster, free_port, with_tests_on_path

from ciro import CiroClient, InputError, JobStatus, ModelInfo, NoQuorumError, verify

HONEST = "ciro_ray.worker:OnnxWorker"
SCENARIOS = {
    "always": f"byzantine:AlwaysWrong,{HONEST},{HONEST},{HONEST}",
    "one_in_three": f"byzantine:OneInThree,{HONEST},{HONEST},{HONEST}",
    "two_faulty": f"byzantine:AlwaysWrong,byzantine:AlwaysWrong,{HONEST},{HONEST}",
}


@pytest.fixture(params=list(SCENARIOS))
def quorum_gateway(request: pytest.FixtureRequest, cluster: Cluster, tmp_path: Path) -> Iterator[Cluster]:
    port = free_port()
    env = with_tests_on_path({**cluster.env, "CIRO_HOME": str(tmp_path / "home"), "CIRO_PORT": str(port),
                              "CIRO_WORKER_NUM_CPUS": "0.5", "CIRO_WORKER_CLASS": SCENARIOS[request.param]})
    gw = Cluster(tmp_path / "home", port, cluster.ray_address, f"http://127.0.0.1:{port}", env)
    gw.scenario = request.param  # type: ignore[attr-defined]
    gw.ciro("up", "--ray-address", cluster.ray_address, "--workers", "4")
    try:
        yield gw
    finally:
        gw.ciro("down", check=False)


def _get(url: str) -> object:
    with urllib.request.urlopen(url) as r:
        return json.loads(r.read())


def test_quorum_accepts_only_what_2f_plus_1_agree_on(quorum_gateway: Cluster, mlp_path: Path) -> None:
    gw = quorum_gateway
    x = np.random.default_rng(11).standard_normal((24, 16)).astype(np.float32)
    want = ort.InferenceSession(str(mlp_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with CiroClient(gw.url, config=gw.config) as client:
        model = client.deploy(mlp_path)
        ids = client.submit_batch(model.hash, x, verification="quorum")
        results = [client.wait(j, timeout=120) for j in ids]
        workers = {w["worker_key"]: w for w in client.workers()}
    byzantine = [w for w in workers.values() if "perturbed" in w]
    perturbed = sum(w["perturbed"] for w in byzantine)
    faults = _get(gw.url + "/v1/faults")
    assert isinstance(faults, list)
    invalid = [f for f in faults if f["kind"] == "invalid_compute"]
    done = [r for r in results if r.status is JobStatus.DONE]
    failed = [r for r in results if r.status is JobStatus.FAILED]

    for r in done:  # an accepted answer is the honest one, with >= 3 agreeing signed votes
        i = ids.index(r.job_id)
        np.testing.assert_allclose(r.output, want[i:i + 1], rtol=1e-5, atol=1e-6)
        report = verify(r, trusted_workers=list(workers))
        assert report.valid, report.text()
        assert sum(v["agrees"] for v in r.quorum["votes"]) >= 3
    if gw.scenario == "always":  # type: ignore[attr-defined]
        assert len(done) == 24 and perturbed == 24
        assert len(invalid) == 24 and {f["worker_key"] for f in invalid} == {byzantine[0]["worker_key"]}
    elif gw.scenario == "one_in_three":  # type: ignore[attr-defined]
        assert len(done) == 24 and perturbed == 8  # every third of 24 jobs
        assert len(invalid) == perturbed and {f["worker_key"] for f in invalid} == {byzantine[0]["worker_key"]}
    else:  # two faulty of four: 2 vs 2, no quorum; the job fails, nothing is guessed, nobody is blamed
        assert not done and len(failed) == 24 and not invalid
        assert all(r.error["code"] == "no_quorum" and "rather than guess" in r.error["message"] for r in failed)
        with CiroClient(gw.url, config=gw.config) as client, pytest.raises(NoQuorumError, match="No quorum"):
            client.infer(model.hash, x[:1], verification="quorum")
    for f in invalid:  # the fault record carries the dissenter's own signed receipt
        assert f["detail"]["receipt"]["worker_key"] == f["worker_key"]
        assert f["detail"]["output_commitment"] != f["detail"]["majority_output_commitment"]


def test_tampered_quorum_evidence_is_rejected(cluster: Cluster, mlp_path: Path, tmp_path: Path) -> None:
    port = free_port()
    env = with_tests_on_path({**cluster.env, "CIRO_HOME": str(tmp_path / "home"), "CIRO_PORT": str(port),
                              "CIRO_WORKER_NUM_CPUS": "0.5"})
    gw = Cluster(tmp_path / "home", port, cluster.ray_address, f"http://127.0.0.1:{port}", env)
    gw.ciro("up", "--ray-address", cluster.ray_address, "--workers", "4")
    try:
        with CiroClient(gw.url, config=gw.config) as client:
            model = client.deploy(mlp_path)
            r = client.infer(model.hash, np.ones((1, 16), np.float32), verification="quorum", f=1, rtol=1e-4)
    finally:
        gw.ciro("down", check=False)
    assert r.quorum["rtol"] == 1e-4 and len(r.quorum["votes"]) == 4
    # the session's two Ray nodes were started as two providers: the votes come from both
    assert {v["provider"] for v in r.quorum["votes"]} == {"provider-a", "provider-b"}
    assert verify(r).valid
    d = r.to_dict()

    def failing(x: dict) -> set[str]:
        return {c.name for c in verify(x).failures}

    fewer = json.loads(json.dumps(d))
    fewer["quorum"]["votes"] = fewer["quorum"]["votes"][:2]
    assert failing(fewer) == {"quorum agreement"}
    dup = json.loads(json.dumps(d))  # the same worker's vote three times does not make a quorum
    dup["quorum"]["votes"] = [dup["quorum"]["votes"][0]] * 3
    assert failing(dup) == {"quorum agreement"}
    forged = json.loads(json.dumps(d))
    forged["quorum"]["votes"][1]["outputs"]["y"]["data"][0] += 1.0
    assert "quorum votes" in failing(forged)
    loose = json.loads(json.dumps(d))
    loose["quorum"]["k"] = 3
    assert failing(loose) == {"quorum policy"}


def test_quorum_needs_enough_workers(client: CiroClient, mlp: ModelInfo) -> None:
    with pytest.raises(InputError, match="needs k=4 distinct workers; this gateway has 2"):
        client.infer(mlp.hash, np.ones((1, 16), np.float32), verification="quorum")
    with pytest.raises(InputError, match="'f' must be an integer between 1 and 100"):
        client.infer(mlp.hash, np.ones((1, 16), np.float32), verification="quorum", f=0)


def test_quorum_picks_distinct_providers_then_nodes(tmp_home: Path) -> None:
    from ciro import Config
    from ciro_ray.pool import WorkerHandle, WorkerPool

    pool = WorkerPool(Config.load(), allowed_keys={1, 2, 3, 4, 5})
    layout = [("a", "n1"), ("a", "n1"), ("a", "n2"), ("b", "n3"), ("b", "n3"), ("c", "n4")]
    for i, (provider, node) in enumerate(layout):
        w = WorkerHandle(id=f"w{i}", name=f"w{i}", slot=i, actor=None)
        pool._set_info(w, {"worker_key": hex(i), "provider": provider, "node_id": node})
        pool.workers[w.id] = w
    assert not pool.workers["w0"].admitted and pool.workers["w5"].admitted  # key 0x0 is not on the list
    picked = pool.pick_distinct(3, limit=1)
    assert picked is not None and {w.info["provider"] for w in picked} == {"a", "b", "c"}
    picked = pool.pick_distinct(4, limit=1)  # w1, w2 are the only "a" workers left: a second node is preferred
    assert picked is not None and [w.id for w in picked] == ["w1", "w3", "w5", "w2"]
    assert pool.pick_distinct(6, limit=1) is None  # w0 is not admitted: only 5 eligible
    assert pool.eligible_count() == 5 and pool.keys() == {1, 2, 3, 4, 5}
