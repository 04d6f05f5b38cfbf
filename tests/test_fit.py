"""Hardware fit without Ray: what a job or deployment requires (Fit), which workers it accepts, how the scheduler
groups a queue into batches of one requirement, admission's refusals, and deployment records from before the
hardware settings existed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest

from ciro import Config, Deployment, InputError
from ciro_ray.admission import admit_fit, hardware_summary
from ciro_ray.batching import PREPAID_MAX_LEAVES, Choice, choose_batch
from ciro_ray.deployments import DeploymentStore, deployment_fit
from ciro_ray.fit import Fit
from ciro_ray.pool import WorkerHandle, WorkerPool
from ciro_ray.scheduler import (
    DEFAULT_SERVING,
    Pending,
    Scheduler,
    Serving,
    job_fit,
)

CPU: dict[str, Any] = {"num_gpus": 0.0, "gpu_model": None, "gpu_memory_gb": 0.0}
H100_HALF: dict[str, Any] = {"num_gpus": 0.5, "gpu_model": "NVIDIA H100 80GB HBM3", "gpu_memory_gb": 80.0}
A10: dict[str, Any] = {"num_gpus": 1.0, "gpu_model": "NVIDIA A10G", "gpu_memory_gb": 24.0}


# -- Fit ------------------------------------------------------------------------------------------
def test_options_parse_into_a_fit() -> None:
    assert Fit.of(None) == Fit.of({}) == Fit() and Fit().any and not Fit().needs_gpu
    assert Fit.of({"gpu": True}) == Fit(gpu=True) == Fit.of({"gpu": "true"})
    assert Fit.of({"gpu_memory_gb": "40", "gpu_model": "H100"}) == Fit(gpu_memory_gb=40.0, gpu_model="H100")
    assert Fit.of({"cpu_only": "yes"}) == Fit(cpu_only=True) and not Fit(cpu_only=True).any
    assert Fit.of({"f": 1, "rtol": 1e-3, "max_latency_ms": 50}) == Fit()  # other options are not hardware


def test_a_gpu_string_is_a_recorded_preference_not_a_requirement() -> None:
    fit = Fit.of({"gpu": "H100"})
    assert fit == Fit() and fit.any and fit.accepts(CPU)


@pytest.mark.parametrize(("options", "message"), [
    ({"gpu_memory_gb": "lots"}, "must be a number of GB"),
    ({"gpu_memory_gb": -1}, "must be >= 0"),
    ({"gpu_model": 100}, "must be a GPU model name"),
    ({"cpu_only": "maybe"}, "must be true or false"),
    ({"cpu_only": True, "gpu": True}, "cpu_only cannot be combined"),
    ({"cpu_only": True, "gpu_model": "H100"}, "cpu_only cannot be combined"),
    ({"cpu_only": True, "gpu_memory_gb": 8}, "cpu_only cannot be combined"),
])
def test_bad_or_contradictory_options_raise_input_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        Fit.of(options)


def test_a_fractional_share_holds_its_part_of_the_gpu_memory() -> None:
    assert Fit(gpu_memory_gb=40).accepts(H100_HALF)  # half of 80 GB
    assert not Fit(gpu_memory_gb=41).accepts(H100_HALF)
    assert Fit(gpu_memory_gb=24).accepts(A10) and not Fit(gpu_memory_gb=24.5).accepts(A10)
    assert not Fit(gpu_memory_gb=1).accepts(CPU)


def test_gpu_model_matches_a_substring_case_insensitively() -> None:
    assert Fit(gpu_model="h100").accepts(H100_HALF) and Fit(gpu_model="H100 80GB").accepts(H100_HALF)
    assert not Fit(gpu_model="A100").accepts(H100_HALF)
    assert not Fit(gpu_model="H100").accepts({"num_gpus": 1.0})  # a GPU of unknown model does not match
    assert not Fit(gpu_model="H100").accepts({**CPU, "gpu_model": "H100"})  # no share of it


def test_gpu_needs_a_share_and_cpu_only_excludes_every_share() -> None:
    assert Fit(gpu=True).accepts(H100_HALF) and Fit(gpu=True).accepts(A10) and not Fit(gpu=True).accepts(CPU)
    assert Fit(cpu_only=True).accepts(CPU) and Fit(cpu_only=True).accepts({})
    assert not Fit(cpu_only=True).accepts(H100_HALF) and not Fit(cpu_only=True).accepts(A10)
    assert all(Fit().accepts(hw) for hw in (CPU, H100_HALF, A10, {}))


def test_merge_takes_both_requirements() -> None:
    deployed = Fit(gpu_model="H100", gpu_memory_gb=20)
    assert deployed.merge(Fit(gpu_memory_gb=40)) == Fit(gpu_memory_gb=40, gpu_model="H100")
    assert deployed.merge(Fit(gpu_model="h100")) == deployed  # the same model, spelled otherwise
    assert Fit().merge(Fit(gpu=True)) == Fit(gpu=True) and Fit(cpu_only=True).merge(Fit()) == Fit(cpu_only=True)
    with pytest.raises(InputError, match="asks for GPU model 'A100' but its deployment requires 'H100'"):
        deployed.merge(Fit(gpu_model="A100"))
    with pytest.raises(InputError, match="cpu_only cannot be combined"):
        Fit(cpu_only=True).merge(Fit(gpu=True))


def test_describe_and_to_dict() -> None:
    assert Fit().describe() == "any worker" and Fit(cpu_only=True).describe() == "a CPU-only worker"
    assert Fit(gpu=True).describe() == "a GPU"
    assert Fit(gpu_model="H100", gpu_memory_gb=40).describe() == (
        "a GPU, model H100, at least 40 GB of GPU memory in the worker's share")
    assert Fit(gpu_memory_gb=40).to_dict() == {"gpu": False, "gpu_memory_gb": 40.0, "gpu_model": None,
                                               "cpu_only": False}


# -- the scheduler ---------------------------------------------------------------------------------
def _pool(**workers: dict[str, Any]) -> WorkerPool:
    pool = WorkerPool(Config())
    for wid, hw in workers.items():
        pool.workers[wid] = WorkerHandle(id=wid, name=wid, slot=0, actor=None, info={"worker_key": "0x1", **hw})
    return pool


def _job(n: int, model: str = "m", **options: Any) -> Pending:
    return Pending(f"j{n}", model, {"x": np.zeros(1, np.float32)}, "ic", "receipt", 0.0, options)


class _Dispatch:
    """A scheduler whose chosen batches are recorded instead of launched (``take_batch`` chooses and dequeues;
    nothing runs, so no worker's in-flight count changes)."""

    def __init__(self, pool: WorkerPool, serving: Serving | None = None) -> None:
        self.s = Scheduler(Config(), mock.Mock(), mock.Mock(), pool, mock.Mock())
        if serving is not None:
            self.s.serving["m"] = serving
        self.sent: list[tuple[list[str], list[str]]] = []

    def run(self, *jobs: Pending) -> list[tuple[list[str], list[str]]]:
        self.s.enqueue(list(jobs))
        while self.s.queues["m"]:
            choice = self.s.take_batch("m")
            if not isinstance(choice, Choice):
                break
            self.sent.append(([p.id for p in choice.jobs], [w.id for w in choice.workers]))
        return self.sent


def test_serving_keeps_its_positional_order() -> None:
    assert Serving(4, 2, Fit(gpu=True)) == Serving(max_batch_size=4, replicas=2, fit=Fit(gpu=True))
    assert DEFAULT_SERVING.fit == Fit()


def test_job_fit_adds_the_options_to_the_deployment_and_ignores_invalid_ones() -> None:
    serving = Serving(fit=Fit(gpu_model="H100"))
    assert job_fit(serving, _job(1, gpu_memory_gb=40)) == Fit(gpu_model="H100", gpu_memory_gb=40)
    assert job_fit(serving, _job(2, rtol=0.1)) == serving.fit
    assert job_fit(serving, _job(3, gpu_memory_gb="lots")) == serving.fit  # admission refuses these
    assert job_fit(serving, _job(4, gpu_model="A100")) == serving.fit
    assert job_fit(DEFAULT_SERVING, _job(5, gpu="H100")) == Fit()


def test_a_batch_holds_jobs_of_one_requirement_and_goes_to_a_worker_that_fits() -> None:
    d = _Dispatch(_pool(w1=CPU, w2=H100_HALF))
    sent = d.run(_job(1), _job(2, gpu="H100"), _job(3, gpu=True), _job(4, gpu=True), _job(5, gpu_memory_gb=40),
                 _job(6))
    assert [b for b, _ in sent] == [["j1", "j2"], ["j3", "j4"], ["j5"], ["j6"]]
    assert [w for _, w in sent][1:3] == [["w2"], ["w2"]]  # the GPU batches only on the GPU worker


def test_a_job_no_free_worker_fits_waits_without_holding_up_jobs_for_other_hardware() -> None:
    d = _Dispatch(_pool(w1=CPU))
    assert d.run(_job(1, gpu_model="H100"), _job(2), _job(3)) == [(["j2", "j3"], ["w1"])]
    assert [p.id for p in d.s.queues["m"]] == ["j1"]  # it keeps its place at the head
    d = _Dispatch(_pool(w1=H100_HALF), Serving(fit=Fit(cpu_only=True)))
    assert d.run(_job(1)) == []


def test_a_busy_gpu_does_not_hold_up_the_cpu_jobs_queued_behind_a_gpu_job() -> None:
    pool = _pool(c1=CPU, g1=H100_HALF)
    pool.workers["g1"].inflight = 2  # the GPU worker's pipeline is full
    d = _Dispatch(pool)
    sent = d.run(_job(1, gpu=True), _job(2, gpu=True), _job(3, cpu_only=True), _job(4, gpu=True),
                 _job(5, cpu_only=True))
    assert sent == [(["j3", "j5"], ["c1"])]  # in queue order, one batch of the CPU-only jobs
    assert [p.id for p in d.s.queues["m"]] == ["j1", "j2", "j4"]
    pool.workers["g1"].inflight = 0
    assert d.run() == [(["j3", "j5"], ["c1"]), (["j1", "j2", "j4"], ["g1"])]


def test_a_quorum_head_waiting_for_workers_lets_jobs_for_other_hardware_behind_it_run() -> None:
    d = _Dispatch(_pool(w1=CPU, w2=CPU))  # a quorum needs 4
    quorum = Pending("q0", "m", {}, "ic", "quorum", 0.0, {})
    sent = d.run(quorum, _job(1), _job(2, cpu_only=True), _job(3, cpu_only=True))
    assert sent == [(["j2", "j3"], ["w1"])]  # j1 needs what the quorum needs: it waits behind it, as before
    assert [p.id for p in d.s.queues["m"]] == ["q0", "j1"]


def test_a_deployment_fit_places_every_batch_and_replicas_still_cap() -> None:
    d = _Dispatch(_pool(w1=CPU, w2=A10, w3=H100_HALF), Serving(1, 1, Fit(gpu_memory_gb=20)))
    sent = d.run(_job(1), _job(2), _job(3, gpu_model="H100"))
    assert sent[0] == (["j1"], ["w2"]) and all(w != ["w1"] for _, w in sent)
    assert sent[2] == (["j3"], ["w3"])  # the job's model on top of the deployment's memory


def test_quorum_batches_group_by_fit_too() -> None:
    d = _Dispatch(_pool(**{f"g{i}": A10 for i in range(4)}, c1=CPU))
    quorum = [Pending(f"q{i}", "m", {}, "ic", "quorum", 0.0, {"gpu": True} if i < 2 else {}) for i in range(3)]
    sent = d.run(*quorum)
    assert sent[0] == (["q0", "q1"], ["g0", "g1", "g2", "g3"])
    assert sent[1][0] == ["q2"]


def test_prepaid_jobs_batch_apart_and_at_most_prepaid_max_leaves_a_batch() -> None:
    """The ledger pays a worker's signed batch whole: no other job shares it, and it holds at most 64 leaves (a
    dispute's Merkle path of at most 6)."""
    def paid(n: int) -> Pending:
        p = _job(n)
        p.settlement, p.price, p.payer = "prepaid", 10, "0xc"
        return p

    queue = [_job(0), *[paid(n) for n in range(1, 101)], _job(101)]
    pool = _pool(w1=CPU)
    first = choose_batch(queue, DEFAULT_SERVING, pool, busy=None, max_batch_size=256, batch_timeout_s=0)
    assert isinstance(first, Choice) and [p.id for p in first.jobs] == ["j0"]  # stops at the first prepaid job
    second = choose_batch(queue[1:], DEFAULT_SERVING, pool, busy=None, max_batch_size=256, batch_timeout_s=0)
    assert isinstance(second, Choice) and len(second.jobs) == PREPAID_MAX_LEAVES == 64
    assert all(p.settlement == "prepaid" for p in second.jobs)
    rest = choose_batch(queue[65:], DEFAULT_SERVING, pool, busy=None, max_batch_size=256, batch_timeout_s=0)
    assert isinstance(rest, Choice) and [p.id for p in rest.jobs] == [f"j{n}" for n in range(65, 101)]


def test_choose_batch_waits_for_a_fuller_batch_only_while_its_worker_is_busy() -> None:
    pool = _pool(w1=CPU)
    queue = [_job(1), _job(2)]
    for p in queue:
        p.enqueued_at = 100.0
    choice = choose_batch(queue, DEFAULT_SERVING, pool, busy=None, max_batch_size=4, batch_timeout_s=0.5, now=100.1)
    assert isinstance(choice, Choice) and [p.id for p in choice.jobs] == ["j1", "j2"]  # an idle worker: at once
    pool.workers["w1"].inflight = 1
    due = choose_batch(queue, DEFAULT_SERVING, pool, busy={"w1": 1}, max_batch_size=4, batch_timeout_s=0.5,
                       now=100.1)
    assert due == pytest.approx(0.4)  # busy: the batch fills for what is left of the timeout
    late = choose_batch(queue, DEFAULT_SERVING, pool, busy={"w1": 1}, max_batch_size=4, batch_timeout_s=0.5,
                        now=100.6)
    assert isinstance(late, Choice) and len(late.jobs) == 2
    full = choose_batch(queue, DEFAULT_SERVING, pool, busy={"w1": 1}, max_batch_size=2, batch_timeout_s=0.5,
                        now=100.1)
    assert isinstance(full, Choice)  # a full batch never waits
    pool.workers["w1"].inflight = 2  # the pipeline is full: nothing until a batch finishes
    assert choose_batch(queue, DEFAULT_SERVING, pool, busy={"w1": 2}, max_batch_size=4, batch_timeout_s=0.5,
                        now=100.1) is None
    assert [p.id for p in queue] == ["j1", "j2"]  # choosing changes nothing


def test_choose_batch_keeps_a_model_on_its_busy_replicas() -> None:
    pool = _pool(w1=CPU, w2=CPU)
    pool.workers["w1"].inflight = 1
    serving = Serving(replicas=1)
    choice = choose_batch([_job(1)], serving, pool, busy={"w1": 1}, max_batch_size=4, batch_timeout_s=0.0)
    assert isinstance(choice, Choice) and [w.id for w in choice.workers] == ["w1"]  # w2 is idle but over the cap
    choice = choose_batch([_job(1)], Serving(replicas=2), pool, busy={"w1": 1}, max_batch_size=4,
                          batch_timeout_s=0.0)
    assert isinstance(choice, Choice) and [w.id for w in choice.workers] == ["w2"]


# -- admission --------------------------------------------------------------------------------------
def test_admission_refuses_what_no_worker_has_with_the_fix() -> None:
    pool = _pool(w1=CPU, w2=CPU, w3=H100_HALF)
    assert admit_fit(Fit(), {"gpu": "H100"}, _pool(w1=CPU)) == Fit()  # a preference is never refused
    assert admit_fit(Fit(), {"gpu_model": "h100", "gpu_memory_gb": 40}, pool) == Fit(gpu_memory_gb=40,
                                                                                     gpu_model="h100")
    with pytest.raises(InputError) as err:
        admit_fit(Fit(), {"gpu_memory_gb": 41}, pool)
    message = err.value.message
    assert message.startswith("No worker of this gateway fits this job: it requires a GPU, at least 41 GB")
    assert "2 CPU-only, 1 with a 0.5 share of a GPU NVIDIA H100 80GB HBM3 (80 GB)" in message
    assert "Submit without gpu, gpu_model and gpu_memory_gb" in message
    assert "ciro provider join --num-gpus 1" in message
    assert err.value.detail["required"]["gpu_memory_gb"] == 41
    with pytest.raises(InputError, match=r"requires a CPU-only worker.*Submit without cpu_only.*--num-gpus 0"):
        admit_fit(Fit(), {"cpu_only": True}, _pool(w1=A10))
    with pytest.raises(InputError, match="Update its deployment to require less"):
        admit_fit(Fit(gpu=True), {}, _pool(w1=CPU))
    with pytest.raises(InputError, match="the workers have: none"):
        admit_fit(Fit(), {"gpu": True}, None)


def test_admission_refuses_options_that_contradict_the_deployment() -> None:
    pool = _pool(w1=CPU, w2=A10)
    with pytest.raises(InputError, match=r"asks for a GPU but its deployment requires a CPU-only worker\. Submit "
                                         r"without gpu"):
        admit_fit(Fit(cpu_only=True), {"gpu": True}, pool)
    with pytest.raises(InputError, match="asks for a CPU-only worker but its deployment requires a GPU"):
        admit_fit(Fit(gpu=True), {"cpu_only": True}, pool)
    with pytest.raises(InputError, match="must be a number of GB"):
        admit_fit(Fit(), {"gpu_memory_gb": [1]}, pool)


def test_hardware_summary_counts_the_workers_that_may_get_jobs() -> None:
    pool = _pool(w1=CPU, w2=A10, w3=A10, w4={"num_gpus": 2.0}, w5=CPU)
    pool.workers["w5"].draining = True
    assert hardware_summary(pool) == ("2 with a whole GPU NVIDIA A10G (24 GB), 1 CPU-only, "
                                      "1 with 2 GPUs of unknown model")


# -- deployment records ------------------------------------------------------------------------------
def test_deployment_records_from_before_the_hardware_settings_load_and_take_them(tmp_path: Path) -> None:
    db = tmp_path / "deployments.db"
    old = sqlite3.connect(db)  # what a gateway wrote before gpu_memory_gb/gpu_model/cpu_only existed
    old.execute("CREATE TABLE deployments (name TEXT PRIMARY KEY, record TEXT NOT NULL)")
    old.execute("INSERT INTO deployments VALUES (?, ?)", ("old", json.dumps({
        "name": "old", "model_hash": "ab" * 32, "verification": "receipt", "replicas": 2, "max_batch_size": None,
        "gpu": True, "max_payment": None, "metadata": {}, "version": 3, "previous_model_hash": None,
        "status": "ready", "created_at": 1.0, "updated_at": 2.0, "owner": None})))
    old.commit()
    old.close()

    store = DeploymentStore(db)
    d = store.get("old")
    assert d is not None and (d.gpu, d.gpu_memory_gb, d.gpu_model, d.cpu_only, d.version) == (True, None, None,
                                                                                               False, 3)
    assert deployment_fit(d) == Fit(gpu=True)
    store.put(Deployment("new", "cd" * 32, "receipt", gpu_memory_gb=40.0, gpu_model="H100"))
    store.put(Deployment("cpu", "ef" * 32, "receipt", cpu_only=True))
    store.close()

    store = DeploymentStore(db)
    assert [x.name for x in store.list()] == ["cpu", "new", "old"]
    new, cpu = store.get("new"), store.get("cpu")
    assert new is not None and (new.gpu_memory_gb, new.gpu_model, new.cpu_only) == (40.0, "H100", False)
    assert cpu is not None and deployment_fit(cpu) == Fit(cpu_only=True)
    assert deployment_fit(new) == Fit(gpu_memory_gb=40.0, gpu_model="H100")
    store.close()


def test_a_gpu_preference_picks_a_matching_gpu_first_and_falls_back_to_any_free_worker() -> None:
    pool = _pool(a=CPU, b=H100_HALF)
    d = _Dispatch(pool)
    assert d.run(_job(1, gpu="H100")) == [(["j1"], ["b"])]  # the H100, though "a" sorts first
    assert d.run(_job(2)) == [(["j1"], ["b"]), (["j2"], ["a"])]  # no preference: the least busy worker
    pool.workers["a"].inflight = pool.workers["b"].inflight = 0
    pool.workers["b"].inflight = 2  # the H100's pipeline is full: the preference does not wait for it
    assert d.run(_job(3, gpu="h100"))[-1] == (["j3"], ["a"])
    pool.workers["a"].inflight = 0
    assert d.run(_job(4, gpu="A100"))[-1] == (["j4"], ["a"])  # no A100 anywhere: any free worker
