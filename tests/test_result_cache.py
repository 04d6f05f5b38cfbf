"""The gateway's result cache: what a key holds, the LRU bound, persistence across a reopen (a restart), which jobs
are recorded and which may be answered (Ray-free, against the real job store, intake and finisher), ``ciro verify``
on a reused result, then the whole path through a gateway with the cache on, joined to the session's Ray cluster:
a repeat answered with the original evidence, ``fresh``, the batch routes, scopes, a deployment switching model."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import Cluster, free_port

from ciro import (
    BINARY_CONTENT_TYPE,
    CiroClient,
    Config,
    ConfigError,
    Identity,
    JobStatus,
    ModelInfo,
    ModelStore,
    VerificationLevel,
    WorkerError,
    canonical_bytes,
    commitment,
    encode_binary,
    sign_receipt,
    verify,
)
from ciro.demo import build_tiny_mlp
from ciro_ray.fit import Fit
from ciro_ray.intake import Accepted, JobIntake
from ciro_ray.jobstore import JobStore, NewJob
from ciro_ray.metrics import Metrics
from ciro_ray.outcomes import Finisher, Outcome, Waiters
from ciro_ray.resultcache import ResultCache, cache_keys
from ciro_ray.runtime import Runtime

ANY = Fit().to_dict()
ZK = {"settings_hash": "aa" * 32, "vk_hash": "bb" * 32, "srs": {"sha256": "cc" * 32}}


def _key(input_commitment: str = "22" * 32, **over: Any) -> str | None:
    args: dict[str, Any] = {"scope": None, "model_hash": "11" * 32, "level": VerificationLevel.RECEIPT,
                            "options": {}, "fit": ANY, "zk": None}
    args.update(over)
    keys = cache_keys(**args)
    return keys(input_commitment) if keys else None


# -- the key ----------------------------------------------------------------------------------------------
def test_every_field_that_changes_the_evidence_or_the_submitter_changes_the_key() -> None:
    base = _key()
    variants = {
        "another submitter": _key(scope="0x" + "ab" * 32),
        "another model": _key(model_hash="33" * 32),
        "another input": _key(input_commitment="44" * 32),
        "another level": _key(level=VerificationLevel.NONE),
        "another hardware requirement": _key(fit=Fit(cpu_only=True).to_dict()),
        "a quorum": _key(level=VerificationLevel.QUORUM),
        "a quorum with f=2": _key(level=VerificationLevel.QUORUM, options={"f": 2}),
        "a quorum with another rtol": _key(level=VerificationLevel.QUORUM, options={"rtol": 1e-3}),
        "a quorum with another atol": _key(level=VerificationLevel.QUORUM, options={"atol": 1e-3}),
        "a zk set-up": _key(level=VerificationLevel.ZKML, zk=ZK),
        "other zk settings": _key(level=VerificationLevel.ZKML, zk={**ZK, "settings_hash": "dd" * 32}),
        "another verifying key": _key(level=VerificationLevel.ZKML, zk={**ZK, "vk_hash": "ee" * 32}),
        "another SRS": _key(level=VerificationLevel.ZKML, zk={**ZK, "srs": {"sha256": "ff" * 32}}),
    }
    assert base is not None and all(v is not None for v in variants.values())
    assert len({base, *variants.values()}) == len(variants) + 1, variants


def test_what_does_not_change_the_evidence_does_not_change_the_key() -> None:
    assert _key(options={"fresh": True}) == _key()  # fresh decides whether to look, not what is looked up
    assert _key(options={"f": 3, "rtol": 0.5}) == _key()  # quorum options mean nothing to a receipt job
    assert _key(options={"gpu": "H100"}) == _key()  # a GPU preference places the job; it requires nothing
    quorum = _key(level=VerificationLevel.QUORUM)
    assert _key(level=VerificationLevel.QUORUM, options={"f": 1, "rtol": 1e-5, "atol": 1e-6}) == quorum  # defaults
    assert _key(level=VerificationLevel.ZKML, zk=None) is None  # no set-up: never reused


# -- the table ---------------------------------------------------------------------------------------------
def _done(store: JobStore, key: str | None, *, client: str | None = None, worker_key: str = "0x1") -> str:
    """A job stored, run and completed (as the finisher completes one), under ``key``."""
    job_id = f"{time.time_ns():032x}"[-32:]
    store.insert([NewJob(job_id, "11" * 32, "receipt", {}, "22" * 32, b"in", client=client, cache_key=key)])
    attempt = store.mark_running([job_id], "w0")[job_id]
    evidence = {"receipt": {"worker_key": worker_key}}
    assert store.complete([(job_id, attempt, "33" * 32, b"out", "w0", json.dumps(evidence))]) == {job_id}
    return job_id


def test_lru_keeps_the_most_recently_used_and_survives_a_reopen(tmp_path: Path) -> None:
    """A gateway restart is this: a new JobStore (and its ResultCache) on the same jobs.db (the cluster tests below
    leave the gateway running: a restart there costs the suite ~20 s and checks nothing more)."""
    store = JobStore(tmp_path / "jobs.db", result_cache_size=2)
    a, b, c = (_done(store, k) for k in ("ka", "kb", "kc"))
    assert store.results.record([a, b]) == 2 and len(store.results) == 2
    assert store.results.lookup(["ka"]) == {"ka": a}  # a hit: "ka" is now the most recently used
    store.results.record([c])
    assert store.results.lookup(["ka", "kb", "kc"]) == {"ka": a, "kc": c}  # "kb" was the least recently used
    store.close()
    again = JobStore(tmp_path / "jobs.db", result_cache_size=2)  # a gateway restart
    assert again.results.lookup(["ka", "kc"]) == {"ka": a, "kc": c}
    again.close()
    smaller = JobStore(tmp_path / "jobs.db", result_cache_size=1)  # the setting lowered: evicted at start
    assert smaller.results.lookup(["ka", "kc"]) == {"kc": c}  # "ka" was hit before "kc"'s last use
    smaller.close()
    off = JobStore(tmp_path / "jobs.db", result_cache_size=0)
    assert not off.results.enabled and off.results.lookup(["kc"]) == {} and off.results.record([c]) == 0
    off.close()


def test_only_done_computed_jobs_are_recorded_and_a_rerun_replaces_the_entry(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db", result_cache_size=10)
    store.insert([NewJob(i, "11" * 32, "zk", {}, "22" * 32, b"in", cache_key=f"k-{i}") for i in ("q", "r", "f", "c")])
    moved = store.mark_running(["r", "f", "c", "p"], "w0")
    store.fail([("f", moved["f"], {"code": "worker_error", "message": "m", "detail": {}})])
    store.cancel("c")
    store.insert([NewJob("p", "11" * 32, "zk", {}, "22" * 32, b"in", cache_key="k-p")])
    store.mark_proving("p", store.mark_running(["p"], "w0")["p"], "33" * 32, b"out", "w0", None)
    assert store.results.record(["q", "r", "f", "c", "p", "missing"]) == 0  # queued, running, failed, cancelled,
    assert len(store.results) == 0                                          # proving, unknown: none is a result
    first = _done(store, "same")
    store.results.record([first])
    second = _done(store, "same")  # the same question asked again with fresh=true
    store.results.record([second])
    assert store.results.lookup(["same"]) == {"same": second} and len(store.results) == 1
    store.close()


def test_a_reused_job_is_stored_done_with_the_original_result_sealed_under_its_own_id(tmp_path: Path) -> None:
    from ciro.sealing import Sealer

    store = JobStore(tmp_path / "jobs.db", sealer=Sealer(b"k" * 32), result_cache_size=10)
    first = _done(store, "k1")
    original = store.get(first)
    assert original is not None
    store.insert([NewJob("r" * 32, "11" * 32, "receipt", {"gpu": "H100"}, "22" * 32, b"in", cache_key="k1",
                         reuses=original)])
    row = store.get("r" * 32, with_inputs=True)
    assert row is not None and row.status is JobStatus.DONE and row.cached_from == first
    assert (row.outputs, row.output_commitment, row.evidence, row.worker) == (
        original.outputs, original.output_commitment, original.evidence, original.worker)
    assert row.attempts == 0 and row.inputs == b"in" and row.options == {"gpu": "H100"}
    assert row.submitted_at == row.started_at == row.finished_at
    assert store.results.record(["r" * 32]) == 0  # a reused job never becomes an entry itself
    assert [w for w, *_ in store.activity(0)] == ["w0"]  # nor counts as its worker's work
    store.close()
    with pytest.raises(ConfigError, match=f"ciro-job:{'r' * 32}:outputs"):  # sealed under the new job's id
        JobStore(tmp_path / "jobs.db", sealer=Sealer(b"x" * 32)).get("r" * 32)


def test_the_cache_table_needs_no_gateway(tmp_path: Path) -> None:
    """ResultCache stands on its own over a job store's database (what JobStore opens it on)."""
    JobStore(tmp_path / "jobs.db").close()
    cache = ResultCache(tmp_path / "jobs.db", 3)
    assert cache.lookup(["nothing"]) == {} and len(cache) == 0
    cache.forget(["nothing"])
    cache.close()
    with pytest.raises(ValueError):
        ResultCache(tmp_path / "jobs.db", -1)


# -- the intake (Ray-free): what may be answered ------------------------------------------------------------
class _Settlement:
    """Stands in for the chain: the intake only registers the model of an escrowed job."""

    async def ensure_model(self, model_hash: str, vk_hash: str | None) -> None:
        return None


class _Gateway:
    def __init__(self, home: Path, *, size: int = 100) -> None:
        self.cfg = Config.load(home=home, settlement="off")
        self.models = ModelStore(home / "models", max_bytes=1 << 24)
        self.store = JobStore(home / "jobs.db", result_cache_size=size)
        self.metrics = Metrics()
        self.intake = JobIntake(self.cfg, self.models, self.store, Runtime(settlement=_Settlement()), self.metrics)  # type: ignore[arg-type]
        self.finisher = Finisher(self.store, self.metrics, Waiters(), max_attempts=3, requeue=lambda jobs: None)
        self.worker = Identity.generate("w")

    def accept(self, model: ModelInfo, x: np.ndarray, **kw: Any) -> Accepted:
        options = kw.pop("options", {})
        return asyncio.run(self.intake.accept(model.hash, [{"x": x}], kw.pop("level", "receipt"), options, **kw))

    def run(self, acc: Accepted) -> str:
        """The worker's part: run the job, sign a receipt, complete it through the finisher."""
        [p] = acc.pending
        attempt = self.store.mark_running([p.id], "w0")[p.id]
        outputs = {"y": (p.inputs["x"] * 2).astype(np.float32)}
        oc = commitment(outputs)
        rc = sign_receipt(self.worker, job_id=p.id, model_hash=p.model_hash, input_commitment=p.input_commitment,
                          output_commitment=oc, level=p.verification)
        p.attempt = attempt
        evidence = {"receipt": rc.to_dict()}
        done = self.finisher.complete([(p, (p.id, attempt, oc, canonical_bytes(outputs), "w0", json.dumps(evidence)),
                                        Outcome(JobStatus.DONE, outputs, oc, "w0", attempt, evidence=evidence))])
        assert done == {p.id}
        return p.id


@pytest.fixture
def gw(tmp_path: Path) -> _Gateway:
    g = _Gateway(tmp_path / "home")
    yield g  # type: ignore[misc]
    g.store.close()


@pytest.fixture
def model(gw: _Gateway, tmp_path: Path) -> ModelInfo:
    return gw.models.add_path(build_tiny_mlp(tmp_path / "m.onnx"))


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 16)).astype(np.float32)


def test_a_repeat_is_answered_and_escrow_fresh_scope_and_level_are_not(gw: _Gateway, model: ModelInfo) -> None:
    first = gw.run(gw.accept(model, _x(1)))
    again = gw.accept(model, _x(1))
    assert again.pending == [] and [r.cached_from for r in again.reused.values()] == [first]
    assert gw.store.get(again.ids[0]).status is JobStatus.DONE  # type: ignore[union-attr]
    escrowed = gw.accept(model, _x(1), escrow=True)  # a paid job pays the worker for work it does
    assert escrowed.reused == {} and len(escrowed.pending) == 1
    assert gw.store.get(escrowed.ids[0]).status is JobStatus.AWAITING_ESCROW  # type: ignore[union-attr]
    assert gw.accept(model, _x(1), options={"fresh": True}).reused == {}
    assert gw.accept(model, _x(1), client="0x" + "ab" * 32).reused == {}  # another submitter's scope
    assert gw.accept(model, _x(1), level="none").reused == {}
    assert gw.accept(model, _x(2)).reused == {}
    hits = gw.metrics.render().decode()
    assert "ciro_result_cache_hits_total 1.0" in hits


def test_failed_cancelled_and_proving_jobs_answer_nothing(gw: _Gateway, model: ModelInfo) -> None:
    failing = gw.accept(model, _x(3))
    [p] = failing.pending
    p.attempt = gw.store.mark_running([p.id], "w0")[p.id]
    gw.finisher.fail([p], WorkerError("boom"))
    assert gw.accept(model, _x(3)).reused == {}
    cancelled = gw.accept(model, _x(4))
    gw.store.cancel(cancelled.ids[0])
    gw.finisher.store.results.record(cancelled.ids)  # even if something tried, a cancelled job is not a result
    assert gw.accept(model, _x(4)).reused == {}


def test_a_result_signed_by_a_key_with_invalid_compute_on_record_is_not_reused(gw: _Gateway,
                                                                                model: ModelInfo) -> None:
    first = gw.run(gw.accept(model, _x(5)))
    assert len(gw.accept(model, _x(5)).reused) == 1
    gw.store.record_faults([("other-job", gw.worker.public_hex, "w0", "invalid_compute", {"reason": "test"})])
    assert gw.accept(model, _x(5)).reused == {}  # the entry is dropped, the job runs
    assert len(gw.store.results) == 0 and gw.store.get(first) is not None  # the job itself stays


# -- ciro verify on a reused result (offline) ----------------------------------------------------------------
def _reused(level: str = "receipt") -> tuple[dict[str, Any], str]:
    """A result reused as job "bb"*16 from job "aa"*16, whose evidence names "aa"*16 (as the gateway makes it)."""
    source, x = "aa" * 16, {"x": np.ones((1, 4), np.float32)}
    outputs = {"y": np.array([[0.5]], np.float32)}
    ic, oc, mh = commitment(x), commitment(outputs), "11" * 32
    signers = [Identity.generate(f"w{i}") for i in range(3)]
    receipts = [sign_receipt(s, job_id=source, model_hash=mh, input_commitment=ic, output_commitment=oc, level=level)
                for s in signers]
    from ciro import JobResult, QuorumPolicy, encode_json

    result = JobResult(job_id="bb" * 16, model_hash=mh, status=JobStatus.DONE, input_commitment=ic,
                       output_commitment=oc, outputs=outputs, verification=VerificationLevel(level),
                       receipt=receipts[0], cached=True, cached_from=source)
    if level == "quorum":
        result.quorum = {**QuorumPolicy().to_dict(), "votes": [
            {"receipt": rc.to_dict(), "outputs": encode_json(outputs), "agrees": True} for rc in receipts]}
    return result.to_dict(), source


@pytest.mark.parametrize("level", ["receipt", "quorum"])
def test_verify_checks_a_reused_result_against_the_job_that_computed_it(level: str) -> None:
    d, source = _reused(level)
    report = verify(d)
    assert report.valid, report.text()
    assert report.computed_for == source and f"(the result of job {source}, reused)" in report.text()
    assert f"computed for job {source} and reused as job {'bb' * 16}" in report.text()

    def failures(**over: Any) -> set[str]:
        return {c.name for c in verify({**d, **over}).failures}

    evidence = "receipt fields" if level == "receipt" else "quorum votes"
    assert evidence in failures(cached_from="cc" * 16)  # claims another job's run: its evidence does not name it
    assert "reused result" in failures(cached=False)  # cached_from without cached
    assert "reused result" in failures(cached_from=None)  # cached without saying from which job
    assert "reused result" in failures(cached_from=d["id"])  # "reused" from itself
    assert evidence in failures(cached=False, cached_from=None)  # passed off as computed for this job
    assert failures(cached=False, cached_from=None, id=source) == set()  # it IS job aa's result, as first answered


def test_a_reused_none_level_result_says_nothing_binds_it_to_the_source() -> None:
    d, _ = _reused()
    d.update(verification="none", receipt=None)
    report = verify(d)
    assert report.valid and any("gateway's word" in n for n in report.notes)


# -- through a gateway with the cache on, on the session's Ray cluster ---------------------------------------
@pytest.fixture(scope="module")
def gw_cached(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A second gateway joined to the session's cluster with the result cache on (the default is off), so that
    restarting it and filling its cache leave the session's gateway alone."""
    home, port = tmp_path_factory.mktemp("cache-home"), free_port()
    env = {**cluster.env, "CIRO_HOME": str(home), "CIRO_PORT": str(port), "CIRO_RESULT_CACHE_SIZE": "1000",
           "CIRO_WORKER_NUM_CPUS": "0.5"}
    gw = Cluster(home, port, cluster.ray_address, f"http://127.0.0.1:{port}", env)
    gw.ciro("up", "--ray-address", cluster.ray_address, "--workers", "2")
    try:
        yield gw
    finally:
        gw.ciro("down", check=False)


@pytest.fixture(scope="module")
def cclient(gw_cached: Cluster) -> Iterator[CiroClient]:
    with CiroClient(gw_cached.url, config=gw_cached.config) as c:
        yield c


@pytest.fixture(scope="module")
def cmlp(cclient: CiroClient, mlp_path: Path) -> ModelInfo:
    return cclient.deploy(mlp_path)


def test_by_default_every_job_runs(client: CiroClient, mlp: ModelInfo) -> None:
    x = _x(1500)
    assert Config.load(home=Path("/nonexistent")).result_cache_size == 0
    assert [client.infer(mlp.hash, x).cached for _ in range(2)] == [False, False]


def test_a_repeat_gets_the_original_result_and_evidence_on_every_route(gw_cached: Cluster, cclient: CiroClient,
                                                                      cmlp: ModelInfo, mlp_path: Path) -> None:
    client, x, x2 = cclient, _x(1501), _x(1502)
    first = client.infer(cmlp.hash, x)
    assert not first.cached and first.cached_from is None and first.attempts == 1
    again = client.infer(cmlp.hash, x)
    assert again.cached and again.cached_from == first.job_id and again.job_id != first.job_id
    assert again.status is JobStatus.DONE and again.attempts == 0 and again.worker == first.worker
    np.testing.assert_array_equal(again.outputs["y"], first.outputs["y"])  # type: ignore[index]
    assert again.output_commitment == first.output_commitment and again.receipt == first.receipt
    assert again.receipt is not None and again.receipt.job_id == first.job_id  # the evidence names its job
    assert client.status(again.job_id).cached_from == first.job_id
    listed = {j.job_id: j for j in client.jobs(limit=20)}
    assert listed[again.job_id].cached and not listed[first.job_id].cached  # a job like any other
    report = verify(again, inputs={"x": x}, model=mlp_path)
    assert report.valid and report.computed_for == first.job_id, report.text()
    forged = {**again.to_dict(), "cached_from": "0f" * 16}
    assert not verify(forged, inputs={"x": x}, model=mlp_path).valid

    fresh = client.infer(cmlp.hash, x, fresh=True)  # runs, and becomes the entry
    assert not fresh.cached and fresh.attempts == 1 and fresh.options == {"fresh": True}
    assert client.infer(cmlp.hash, x).cached_from == fresh.job_id
    items = client.infer_batch(cmlp.hash, [x, x2])  # JSON batch route, in input order
    assert [r.cached_from for r in items] == [fresh.job_id, None]
    stacked = client.infer_batch(cmlp.hash, np.concatenate([x, x2]))  # binary batch route
    assert [r.cached_from for r in stacked] == [fresh.job_id, items[1].job_id]
    queued = client.submit(cmlp.hash, x2)  # no wait: stored done at once
    assert client.status(queued).status is JobStatus.DONE and client.wait(queued).cached_from == items[1].job_id
    with httpx.Client(base_url=gw_cached.url, timeout=60) as http:  # the binary single-job route, options too

        def binary(**params: str) -> dict[str, Any]:
            r = http.post("/v1/jobs/binary", params={"model": cmlp.hash, "wait": "30", **params},
                          content=encode_binary({"x": x2}), headers={"content-type": BINARY_CONTENT_TYPE})
            assert r.status_code == 200, r.text
            return dict(r.json())

        assert binary()["cached_from"] == items[1].job_id
        assert binary(options='{"fresh": true}')["cached"] is False
    assert not client.infer(cmlp.hash, x, verification="none").cached  # another level
    assert not client.infer(cmlp.hash, x, cpu_only=True).cached  # another hardware requirement


def test_a_result_is_reused_only_for_its_submitter(gw_cached: Cluster, cclient: CiroClient,
                                                   cmlp: ModelInfo) -> None:
    x = _x(1503)
    alice_key, bob_key = Identity.generate("alice"), Identity.generate("bob")
    with CiroClient(gw_cached.url, config=gw_cached.config, identity=alice_key) as alice, \
            CiroClient(gw_cached.url, config=gw_cached.config, identity=bob_key) as bob:
        a1, a2 = alice.infer(cmlp.hash, x), alice.infer(cmlp.hash, x)
        b1 = bob.infer(cmlp.hash, x)
    operator = cclient.infer(cmlp.hash, x)  # unsigned, local: the operator's own scope
    assert a1.client == alice_key.public_hex and not a1.cached and a2.cached_from == a1.job_id
    assert b1.client == bob_key.public_hex and not b1.cached  # bob learns nothing of alice's input
    assert not operator.cached


def test_a_deployment_switching_model_never_answers_with_the_old_models_result(cclient: CiroClient,
                                                                                 models_dir: Path) -> None:
    client = cclient
    v1 = build_tiny_mlp(models_dir / "cache-v1.onnx", seed=21)
    v2 = build_tiny_mlp(models_dir / "cache-v2.onnx", seed=22)
    x = _x(1504)
    d1 = client.create_deployment("cache-dep", v1)
    r1 = client.infer("cache-dep", x)
    assert r1.model_hash == d1.model_hash and client.infer("cache-dep", x).cached_from == r1.job_id
    d2 = client.update_deployment("cache-dep", model=v2)
    r2 = client.infer("cache-dep", x)
    assert not r2.cached and r2.model_hash == d2.model_hash != d1.model_hash
    assert not np.allclose(r2.outputs["y"], r1.outputs["y"])  # type: ignore[index]
    assert client.infer("cache-dep", x).cached_from == r2.job_id
