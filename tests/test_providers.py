"""Providers: `ciro provider head/join/stake/status/leave` with real `ray start` nodes on loopback, the devnet's
CDCPool for registration, stake, eligibility and the downtime slash, and the gateway scheduling by hardware fit."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import CIRO, browser_page, free_port

from ciro import CiroClient, Config, InputError
from ciro.demo import digits_inputs
from ciro.local import ray_env
from ciro_devnet.launch import rpc_request
from ciro_ray.hardware import Hardware
from ciro_ray.provider import accelerator_type, fmt_ciro, parse_amount
from ciro_ray.providers import ProviderStore, downtime_evidence, evidence_felt

CIRO_UNIT = 10**18
HEARTBEAT_TIMEOUT_S = 3.0
DOWNTIME_SLASH_S = 6.0


# -- the gateway's record of heartbeats and downtime (no Ray) -------------------------------------------------
def test_provider_store_turns_silence_into_downtime_and_slash_evidence(tmp_path: Path) -> None:
    store = ProviderStore(tmp_path / "providers.db")
    key = f"{7:#066x}"
    store.track(key, "alpha", "node-1", now=100.0)
    assert store.silent(10.0, now=105.0) == []  # joined 5 s ago: not silent yet
    store.heartbeat(key, now=108.0)
    [silent] = store.silent(10.0, now=120.0)
    opened = store.open_downtime(silent, now=120.0)
    assert opened is not None and opened["last_seen"] == 108.0 and store.is_down(key)
    assert store.open_downtime(silent, now=121.0) is None  # one record per gap
    assert store.to_slash(60.0, 10, now=150.0) == []  # 42 s of silence: below the threshold
    [due] = store.to_slash(60.0, 10, now=200.0)
    evidence = downtime_evidence(due, 200.0)
    assert evidence == {"worker_key": key, "violation": "downtime", "last_heartbeat": 108.0, "silent_until": 200.0,
                        "seconds": 92.0}
    store.slashed([(due["id"], "slashed", "0xabc", evidence)])
    assert store.to_slash(60.0, 10, now=300.0) == []  # filed once
    [record] = store.downtime(worker_key=key)
    assert record["evidence"] == evidence and record["slash_tx"] == "0xabc"
    assert evidence_felt(record["evidence"]) == evidence_felt(evidence) < 2**251  # a felt anyone can recompute
    closed = store.heartbeat(key, now=210.0)  # back: the record closes
    assert closed is not None and closed["ended_at"] == 210.0 and not store.is_down(key)
    assert store.silent(10.0, now=300.0, since=295.0) == []  # a gateway that just restarted: no heartbeat could come
    assert len(store.silent(10.0, now=320.0, since=295.0)) == 1
    store.set_state(key, "left")
    assert store.silent(10.0, now=10_000.0) == []  # a worker that left is not watched
    store.close()


def test_hardware_and_amounts_as_a_provider_types_them() -> None:
    assert accelerator_type("NVIDIA H100 80GB HBM3") == "H100"  # Ray's accelerator_type:H100 resource
    assert accelerator_type("Tesla V100-SXM2-16GB") == "V100"
    assert parse_amount("1000") == 1000 * CIRO_UNIT and parse_amount("0.5") == CIRO_UNIT // 2
    assert fmt_ciro(950 * CIRO_UNIT) == "950" and fmt_ciro(CIRO_UNIT // 4) == "0.25"
    for bad in ("-1", "lots", "nan"):
        with pytest.raises(InputError, match="CIRO"):
            parse_amount(bad)
    hw = Hardware.detect(cpus=4, gpus=1, gpu_model="NVIDIA L4", gpu_memory_gb=24)
    assert (hw.gpus, hw.gpu_source, hw.describe()) == (1.0, "declared", "4 CPU, 1 x NVIDIA L4 (24 GB, declared)")
    assert Hardware.detect(cpus=2, gpus=0).describe() == "2 CPU, no GPU"


# -- the multi-node scenario -----------------------------------------------------------------------------------
class Site:
    """A head and its providers' homes, driven through the `ciro` CLI as users do."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port, self.devnet_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIRO_")}
        self.env = {**ray_env(env), "CIRO_PORT": str(self.port), "CIRO_DEVNET_PORT": str(self.devnet_port),
                    "CIRO_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
                    "CIRO_DOWNTIME_SLASH_S": str(DOWNTIME_SLASH_S), "CIRO_NODE_POLL_S": "0.5",
                    "CIRO_HEARTBEAT_INTERVAL_S": "0.5", "CIRO_SETTLE_INTERVAL_S": "0.5"}
        self.ray_address = ""

    def ciro(self, home: str, *args: str, timeout: float = 300) -> str:
        r = subprocess.run([CIRO, "--home", str(self.root / home), *args], env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        assert r.returncode == 0, f"ciro {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def fails(self, home: str, *args: str) -> str:
        r = subprocess.run([CIRO, "--home", str(self.root / home), *args], env=self.env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode != 0, f"ciro {' '.join(args)} should have failed:\n{r.stdout}"
        return r.stderr

    def join(self, home: str, *args: str) -> dict[str, Any]:
        pub = self.ciro(home, "keys", "new", "provider").split()[1]
        self.ciro("head", "fund", pub, "--amount", "5000")
        state: dict[str, Any] = json.loads(self.ciro(home, "provider", "join", "--address", self.ray_address,
                                                     "--gateway", self.url, "--json", *args))
        return state

    def get(self, path: str) -> Any:
        return httpx.get(self.url + path, timeout=30).json()

    def workers_of(self, state: dict[str, Any]) -> dict[str, dict[str, Any]]:
        keys = set(state["worker_keys"])
        return {w["id"]: w for w in self.get("/v1/workers") if w.get("worker_key") in keys}


def _until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    out = s.ciro("head", "provider", "head")
    s.ray_address = out.split("ray: ")[1].split()[0]
    try:
        yield s
    finally:
        for home in ("a", "b", "c"):
            state_file = tmp_path / home / "run" / "provider.json"
            if state_file.exists():
                pid = json.loads(state_file.read_text())["supervisor_pid"]
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
        subprocess.run([CIRO, "--home", str(tmp_path / "head"), "down"], env=s.env, capture_output=True, timeout=120)


class Stream:
    """Plain jobs, 20 per request, sent one request after another from a thread until stopped."""

    def __init__(self, client: CiroClient, model: str) -> None:
        self.client, self.model = client, model
        # (the gateway's finished_at, worker): the batch returns when its last job ends, so a job the killed node
        # finished before the kill can come back seconds after it, in a batch whose other jobs were re-run.
        self.results: list[tuple[float, str | None]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.x = digits_inputs()[:20]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for r in self.client.infer_batch(self.model, self.x, timeout=120):
                    assert r.status.value == "done" and r.outputs is not None and r.finished_at is not None
                    self.results.append((r.finished_at, r.worker))
            except BaseException as exc:  # reported by the test
                self.errors.append(exc)
                return

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=180)

    def workers_after(self, t: float) -> set[str | None]:
        return {w for at, w in self.results if at > t}


def test_providers_join_are_scheduled_by_fit_survive_a_dead_node_and_leave_cleanly(site: Site,
                                                                                      digits_path: Path) -> None:
    # Three provider nodes: CPU-only, one (declared) H100 shared by two workers, and one under the minimum stake.
    a = site.join("a", "--stake", "1000", "--num-cpus", "1", "--name", "cpu-provider")
    b = site.join("b", "--stake", "1000", "--num-cpus", "1", "--num-gpus", "1", "--gpu-model",
                  "NVIDIA H100 80GB HBM3", "--gpu-memory-gb", "80", "--workers-per-gpu", "2", "--name", "gpu-provider")
    c = site.join("c", "--stake", "10", "--num-cpus", "1", "--name", "small-provider")
    # Mistakes change nothing: a wallet without an account, one without enough CIRO, joining twice.
    join_d = ("provider", "join", "--address", site.ray_address, "--gateway", site.url, "--num-cpus", "1")
    pub_d = site.ciro("d", "keys", "new", "provider").split()[1]
    assert "has no account" in site.fails("d", *join_d, "--stake", "1000")
    site.ciro("head", "fund", pub_d, "--amount", "100")
    err = site.fails("d", *join_d, "--stake", "1000")
    assert "holds 100 CIRO" in err and "Nothing was staked" in err
    assert not (site.root / "d" / "run" / "provider.json").exists()
    assert "already runs a provider node" in site.fails("a", *join_d, "--stake", "1")
    assert a["slots"] == 1 and b["slots"] == 2 and c["slots"] == 1
    assert all(w["eligible"] for w in a["staking"]["workers"] + b["staking"]["workers"])
    assert not c["staking"]["workers"][0]["eligible"]  # 10 CIRO < the pool's minimum of 1,000
    _until("the staked workers to be admitted", lambda: all(
        w["admitted"] for w in [*site.workers_of(a).values(), *site.workers_of(b).values()]))
    wa, wb, wc = site.workers_of(a), site.workers_of(b), site.workers_of(c)
    assert len(wa) == 1 and len(wb) == 2 and len(wc) == 1
    assert all(w["num_gpus"] == 0.5 and w["gpu_model"] == "NVIDIA H100 80GB HBM3" and w["gpu_memory_gb"] == 80
               and w["gpu_source"] == "declared" for w in wb.values())
    assert [w["num_gpus"] for w in wa.values()] == [0.0] and not next(iter(wc.values()))["admitted"]
    assert len(site.get("/v1/workers")) == 4  # the mistakes above started no node
    code = (f"import json, ray; ray.init(address={site.ray_address!r}, logging_level='ERROR'); "
            "print(json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))")
    listed = subprocess.run([sys.executable, "-c", code], env=site.env, capture_output=True, text=True, timeout=120)
    resources = json.loads(listed.stdout.strip().splitlines()[-1])
    [gpu_node] = [r for r in resources if r.get("GPU")]
    assert gpu_node["GPU"] == 1 and gpu_node["ciro_worker"] == 2 and gpu_node["ciro_gpu_memory_gb"] == 80
    assert gpu_node["accelerator_type:H100"] == 1  # hardware advertised as Ray resources
    assert sorted(r.get("ciro_worker", 0) for r in resources) == [0, 1, 1, 2]  # the head offers no worker slot
    shown = site.ciro("c", "provider", "status")
    assert "not admitted" in shown and "stake=10 CIRO" in shown and "eligible=no" in shown

    client = CiroClient(site.url, config=Config.load(home=site.root / "client"))
    model = client.deploy(digits_path)
    x = digits_inputs()
    # Jobs go where their hardware fits; the under-staked worker gets nothing.
    on_gpu = client.infer_batch(model.hash, x[:60], gpu_memory_gb=40)  # half of an 80 GB GPU holds 40 GB
    assert {r.worker for r in on_gpu} <= set(wb) and len(on_gpu) == 60
    on_cpu = client.infer_batch(model.hash, x[:60], cpu_only=True)
    assert {r.worker for r in on_cpu} == set(wa)
    anywhere = client.infer_batch(model.hash, x[:200])
    assert not {r.worker for r in anywhere} & set(wc)
    np.testing.assert_allclose(np.stack([r.outputs["probabilities"][0] for r in on_gpu]),
                               np.stack([r.outputs["probabilities"][0] for r in on_cpu]), rtol=1e-5)
    for too_much in ({"gpu_memory_gb": 41}, {"gpu_model": "A100"}):
        with pytest.raises(InputError, match="No worker of this gateway fits this job"):
            client.infer(model.hash, x[:1], **too_much)

    # The dashboard, in Chromium, shows every provider's workers with their hardware.
    from playwright.sync_api import expect

    with browser_page() as page:
        page.goto(f"{site.url}/dashboard")
        table = page.get_by_role("table", name="workers")
        expect(table.locator("tbody tr")).to_have_count(4)
        for name in ("cpu-provider", "gpu-provider", "small-provider"):
            expect(table).to_contain_text(name)
        expect(table).to_contain_text("0.5 x NVIDIA H100 80GB HBM3 (80 GB, declared)")

    # Kill the CPU node (its Ray processes and heartbeats) mid-run: every job completes on the GPU node's workers.
    with Stream(client, model.hash) as stream:
        _until("jobs on the CPU node", lambda: set(wa) & stream.workers_after(0), timeout=60)
        killed_at = time.time()
        os.killpg(a["supervisor_pid"], signal.SIGKILL)
        _until("jobs after the kill", lambda: len([1 for at, _ in stream.results if at > killed_at + 3]) >= 100,
               timeout=120)
    assert not stream.errors, stream.errors
    assert stream.workers_after(killed_at + 3) <= set(wb)
    assert not set(wa) & set(site.workers_of(a))  # its worker is gone from the gateway

    # Its silence became downtime evidence and, past the (test's) threshold, a downtime slash on chain.
    key_a = a["worker_keys"][0]
    [down] = _until("the downtime slash", lambda: [d for d in site.get(f"/v1/downtime?worker_key={key_a}")
                                                     if d["slash"] == "slashed"], timeout=90)
    assert down["provider"] == "cpu-provider" and down["ended_at"] is None and down["slash_tx"].startswith("0x")
    assert down["evidence"]["worker_key"] == key_a and down["evidence"]["seconds"] > DOWNTIME_SLASH_S
    assert down["last_seen"] <= killed_at + 1
    status_a = json.loads(site.ciro("a", "provider", "status", "--json"))
    assert not status_a["running"]
    [chain_a] = status_a["chain"]
    assert int(chain_a["stake"]) == 950 * CIRO_UNIT  # 5 % of 1,000 CIRO
    assert chain_a["reputation"] == 490 and not chain_a["eligible"]  # -10, banned for 30 days
    providers = {p["worker_key"]: p for p in site.get("/v1/providers")}
    assert providers[key_a]["down"] and not any(providers[k]["down"] for k in b["worker_keys"])

    # The under-staked provider tops up and is admitted; then the GPU provider leaves while jobs run.
    stake_c = json.loads(site.ciro("c", "provider", "stake", "1000", "--json"))
    assert stake_c["workers"][0]["eligible"]
    _until("the topped-up worker to be admitted", lambda: all(w["admitted"] for w in site.workers_of(c).values()),
           timeout=60)
    with Stream(client, model.hash) as stream:
        _until("jobs before the leave", lambda: len(stream.results) >= 40)
        left = json.loads(site.ciro("b", "provider", "leave", "--json"))
        left_at = time.time()
        _until("jobs after the leave", lambda: len(stream.workers_after(left_at)) and
               len([1 for at, _ in stream.results if at > left_at]) >= 60)
    assert not stream.errors, stream.errors
    assert {w["state"] for w in left["left"]} == {"left"} and len(left["left"]) == 2
    assert [int(u["pending"]) for u in left["unstake"]] == [1000 * CIRO_UNIT] * 2
    assert all(u["tx"] for u in left["unstake"])
    assert stream.workers_after(left_at) <= set(wc)
    assert set(wb) & {r for _, r in stream.results}  # B ran jobs of this stream before it left
    assert site.workers_of(b) == {}
    assert {p["state"] for k, p in {p["worker_key"]: p for p in site.get("/v1/providers")}.items()
            if k in b["worker_keys"]} == {"left"}
    time.sleep(HEARTBEAT_TIMEOUT_S + 1)
    assert not [d for d in site.get("/v1/downtime") if d["worker_key"] in b["worker_keys"]]  # leaving is not downtime

    # The unstaked CIRO comes back to the wallet once the pool's cooldown (7 days on the devnet) has passed.
    assert "already left" in site.fails("b", "provider", "leave")
    assert "still in the pool's cooldown" in site.fails("b", "provider", "withdraw")
    assert "unstaking=1000 CIRO" in site.ciro("b", "provider", "status")
    rpc_request(f"http://127.0.0.1:{site.devnet_port}/rpc", "devnet_increaseTime", {"time": 8 * 24 * 3600})
    back = json.loads(site.ciro("b", "provider", "withdraw", "--json"))
    assert [int(w["withdrawn"]) for w in back["workers"]] == [1000 * CIRO_UNIT] * 2 and back["to"] == "provider"
    assert int(back["wallet_balance"]) == 5000 * CIRO_UNIT  # funded 5,000, staked 2 x 1,000, got it all back
    assert [int(c["pending_unstake"]) for c in json.loads(site.ciro("b", "provider", "status", "--json"))["chain"]] \
        == [0, 0]


def test_node_watcher_admits_by_stake_marks_silent_workers_down_and_leaves_only_when_drained(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway side without Ray: a provider node's worker handle, a fake chain and the real store."""
    import asyncio

    import ciro_ray.pool
    from ciro_ray.nodes import ProviderNodes
    from ciro_ray.pool import WorkerHandle, WorkerPool

    killed: list[object] = []
    monkeypatch.setattr(ciro_ray.pool.ray, "kill", lambda actor, **kw: killed.append(actor))

    cfg = Config.load(home=tmp_path, heartbeat_timeout_s=0.05, settlement="off")
    pool = WorkerPool(cfg, allowed_keys=set())
    store = ProviderStore(tmp_path / "providers.db")
    staked: set[int] = set()

    async def eligible(keys: set[int]) -> set[int]:
        return keys & staked

    nodes = ProviderNodes(cfg, pool, store, eligible=eligible)
    key = 0xABC
    w = WorkerHandle(id="w1", name="w1", slot=0, actor=object(), node_id="node-1",
                     info={"worker_key": f"{key:#066x}", "provider": "alpha", "num_cpus": 1.0, "num_gpus": 0.5})
    pool.workers[w.id] = w

    async def scenario() -> None:
        pool._set_info(w, w.info)
        nodes._on_admit(w)
        await asyncio.sleep(0)
        await nodes.check_eligibility()
        assert not w.admitted and not w.schedulable  # registered with the gateway, but not staked
        staked.add(key)
        await nodes.check_eligibility()
        assert w.admitted and w.schedulable
        await asyncio.sleep(0.1)
        nodes._watch_heartbeats()  # silent past the timeout: down, no new jobs
        assert w.down and not w.schedulable and store.is_down(f"{key:#066x}")
        assert nodes.heartbeat(f"{key:#x}")["downtime_closed"]  # any spelling of the key
        assert not w.down and w.schedulable
        w.inflight = 1
        assert nodes.drain(f"{key:#066x}") == {"worker_key": f"{key:#066x}", "state": "draining",
                                               "inflight_batches": 1}
        assert not w.schedulable and pool.eligible_count() == 0
        assert nodes.leave(f"{key:#066x}")["state"] == "draining"  # still running a batch: refused
        w.inflight = 0
        assert nodes.leave(f"{key:#066x}")["state"] == "left"
        assert pool.workers == {} and killed == [w.actor] and "node-1" in nodes.left_nodes
        assert store.worker(f"{key:#066x}")["state"] == "left"  # type: ignore[index]

    asyncio.run(scenario())
    store.close()
