"""Paid jobs end to end: the local devnet with the Ciro contracts, a gateway on the session's Ray cluster,
the SDK escrowing each job's payment, the gateway settling it in batches. Balances move by exactly the
expected amounts; a byzantine quorum worker is slashed by the matrix. Prepaid jobs (settlement v2): a client deposits
into CiroLedger, signs one spend cap per job with its requests, the gateway settles whole worker batches in one
transaction, and each job's leaf is confirmed by the ledger; every refused request leaves the ledger, the gateway's
caps and the job list unchanged."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Cluster, free_port, with_tests_on_path

from ciro import AsyncCiroClient, CiroClient, InputError, InsufficientEscrowError, JobResult, JobStatus, KeyStore
from ciro.chain import ChainClient, Network, account_address
from ciro.chain.ledger import SPEND_HEADER, CiroLedger, encode_spend_header, sign_spend
from ciro.identity import Identity
from ciro_devnet.bootstrap import bootstrap
from ciro_devnet.launch import DevnetProcess

pytestmark = pytest.mark.timeout(900)
PRICE = 10**15


@dataclass
class Paid:
    gw: Cluster
    net: Network
    devnet: DevnetProcess


def _gateway(cluster: Cluster, home: Path, workers: int, worker_class: str | None = None,
             cpus: float = 0.5) -> Cluster:
    """A gateway on the session's cluster (4 CPUs, 2 taken by the main gateway's workers)."""
    port = free_port()
    env = {**cluster.env, "CIRO_HOME": str(home), "CIRO_PORT": str(port), "CIRO_WORKER_NUM_CPUS": str(cpus),
           "CIRO_PRICE_PER_JOB": str(PRICE), "CIRO_SETTLE_INTERVAL_S": "0.2", "CIRO_SETTLEMENT": "auto"}
    if worker_class:
        env["CIRO_WORKER_CLASS"] = worker_class
    gw = Cluster(home, port, cluster.ray_address, f"http://127.0.0.1:{port}", with_tests_on_path(env))
    gw.ciro("up", "--ray-address", cluster.ray_address, "--workers", str(workers))
    return gw


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetProcess]:
    with DevnetProcess(seed=7, state_dir=tmp_path_factory.mktemp("devnet-state")) as dev:
        yield dev


@pytest.fixture(scope="module")
def paid(cluster: Cluster, devnet: DevnetProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paid]:
    home = tmp_path_factory.mktemp("paid-home")
    net = asyncio.run(bootstrap(devnet.url, devnet.accounts[0], home))
    gw = _gateway(cluster, home, 2)
    try:
        yield Paid(gw, net, devnet)
    finally:
        gw.ciro("down", check=False)


def _balances(net: Network, home: Path, addresses: dict[str, int]) -> dict[str, int]:
    async def read() -> dict[str, int]:
        gov = KeyStore(home / "keys").get("devnet-governance")
        chain = await ChainClient.connect(net.rpc_url, address=net.governance, identity=gov)
        token = net.token_on(chain)
        return {name: await token.balance_of(a) for name, a in addresses.items()}

    return asyncio.run(read())


def _settled(client: CiroClient, ids: list[str], timeout: float = 120) -> list[JobResult]:
    deadline = time.monotonic() + timeout
    while True:
        rows = [client.status(j) for j in ids]
        if all(r.settlement in ("paid", "refunded", "error") for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_paid_jobs_move_every_balance_by_exactly_the_price(paid: Paid, mlp_path: Path) -> None:
    gw, net = paid.gw, paid.net
    keys = KeyStore(gw.home / "keys")
    with CiroClient(gw.url, config=gw.config) as client:
        info = client.chain_info()
        assert info["enabled"] and int(info["price_per_job"]) == PRICE
        workers = {w["worker_key"]: w for w in client.workers()}
        assert len(workers) == 2 and all(w["admitted"] for w in workers.values())  # onboarded: staked, eligible
        who = {"client": account_address(keys.get("client").public_key), "job_manager": net.job_manager,
               **{k: account_address(int(k, 16)) for k in workers}}
        before = _balances(net, gw.home, who)
        model = client.deploy(mlp_path)
        x = np.random.default_rng(3).standard_normal((6, 16)).astype(np.float32)
        results = client.infer_batch(model.hash, x, max_payment=2 * PRICE)
        assert all(r.status is JobStatus.DONE for r in results)
        settled = _settled(client, [r.job_id for r in results])
    assert [r.settlement for r in settled] == ["paid"] * 6, [(r.settlement, r.error) for r in settled]
    assert all(r.settlement_tx and r.payment == PRICE for r in settled)
    # Each worker signed its jobs' price and the paying account, once per batch it ran.
    signed = [r.receipt for r in settled]
    assert all(rc is not None and rc.batched and rc.price == PRICE and int(rc.client, 16) == who["client"]
               and rc.signature_valid() for rc in signed)
    assert len({(rc.worker_key, rc.root) for rc in signed if rc}) == len({rc.signature for rc in signed if rc})
    after = _balances(net, gw.home, who)
    per_worker = {k: sum(1 for r in settled if r.receipt and r.receipt.worker_key == k) for k in workers}
    assert after["client"] == before["client"] - 6 * PRICE  # escrowed 2x the price, refunded the rest
    assert after["job_manager"] == before["job_manager"]  # nothing left in escrow
    for k, n in per_worker.items():
        assert after[k] == before[k] + n * PRICE


def test_an_escrow_below_the_price_is_refused_and_nothing_runs(paid: Paid, mlp_path: Path) -> None:
    with CiroClient(paid.gw.url, config=paid.gw.config) as client:
        model = client.deploy(mlp_path)
        with pytest.raises(InsufficientEscrowError, match="max_payment") as exc:
            client.infer(model.hash, np.zeros((1, 16), np.float32), max_payment=PRICE // 2)
        job_id = exc.value.detail["problems"][0].split(":")[0]
        assert client.status(job_id).status is JobStatus.AWAITING_ESCROW  # held, not run, not paid


def test_a_byzantine_quorum_worker_is_slashed_by_the_matrix(cluster: Cluster, devnet: DevnetProcess,
                                                             tmp_path: Path, mlp_path: Path) -> None:
    home = tmp_path / "home"
    net = asyncio.run(bootstrap(devnet.url, devnet.accounts[0], home))  # the same contracts, found again
    honest = "ciro_ray.worker:OnnxWorker"
    gw = _gateway(cluster, home, 4, f"byzantine:AlwaysWrong,{honest},{honest},{honest}", cpus=0.25)
    try:
        with CiroClient(gw.url, config=gw.config) as client:
            workers = client.workers()
            liar = next(w["worker_key"] for w in workers if "perturbed" in w)
            model = client.deploy(mlp_path)
            result = client.infer(model.hash, np.ones((1, 16), np.float32), verification="quorum",
                                  max_payment=PRICE)
            [settled] = _settled(client, [result.job_id])
    finally:
        gw.ciro("down", check=False)
    assert settled.settlement == "paid", settled.error
    assert liar not in {v["receipt"]["worker_key"] for v in settled.quorum["votes"] if v["agrees"]}

    async def pool_state() -> tuple[object, int, int]:
        gov = KeyStore(home / "keys").get("devnet-governance")
        chain = await ChainClient.connect(net.rpc_url, address=net.governance, identity=gov)
        pool = net.pool_on(chain)
        block = await chain.node.get_block(block_number="latest")
        return (await pool.worker(account_address(int(liar, 16))), int(await pool.view("min_stake")),
                int(block.timestamp))

    state, min_stake, now = asyncio.run(pool_state())
    assert state.stake == min_stake // 2  # invalid compute: 50 % of the stake
    assert state.reputation == 500 - 75
    assert now + 179 * 86400 < state.banned_until <= now + 180 * 86400  # banned 180 days
    assert not state.eligible


def test_a_worker_whose_outputs_the_zk_proof_contradicts_is_slashed_and_the_client_refunded(
        cluster: Cluster, devnet: DevnetProcess, tmp_path: Path, models_dir: Path) -> None:
    """A lying worker on a zk job: the proof of the model on the job's inputs shows other outputs than the ones
    the worker signed. The job fails (the lie is never returned as a result), the proof and the worker's signed
    outputs become a fault record that checks offline, the settler files the invalid-compute slash, the worker is
    no longer scheduled, and the client's escrow comes back after the deadline."""
    from ciro import InvalidComputeError, zk_verify
    from ciro.demo import build_tiny_mlp
    from ciro.receipts import Receipt
    from ciro.tensors import canonical_bytes, decode_json
    from ciro_devnet.launch import rpc_request
    from ciro_ray.settlement import fault_evidence

    home = tmp_path / "home"
    net = asyncio.run(bootstrap(devnet.url, devnet.accounts[0], home))
    gw = _gateway(cluster, home, 1, "byzantine:AlwaysWrong", cpus=0.25)
    keys = KeyStore(home / "keys")
    payer = account_address(keys.get("client").public_key)
    x = np.random.default_rng(5).standard_normal((1, 8)).astype(np.float32)
    try:
        with CiroClient(gw.url, config=gw.config) as client:
            [liar] = client.workers()
            assert liar["admitted"]
            model = client.deploy(build_tiny_mlp(models_dir / "zk-liar.onnx", in_dim=8, hidden=8, out_dim=3, seed=4),
                                  zk=True)
            before = _balances(net, home, {"client": payer})
            with pytest.raises(InvalidComputeError, match="reported for invalid compute") as err:
                client.infer(model.hash, x, verification="zk", max_payment=PRICE)
            assert err.value.detail["output_gap"] > err.value.detail["tolerance"]
            deadline = time.monotonic() + 60
            while not (faults := client.faults())[0].get("slash") and time.monotonic() < deadline:
                time.sleep(0.2)
            [fault] = faults
            job_id = fault["job_id"]
            assert client.status(job_id).status is JobStatus.FAILED and client.status(job_id).outputs is None
            deadline = time.monotonic() + 30
            while client.workers()[0]["admitted"] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not client.workers()[0]["admitted"]  # slashed below the minimum stake: no more jobs
            listing = gw.ciro("faults").stdout
            assert job_id in listing and "zk_output_mismatch" in listing and "slashed tx 0x" in listing
            rpc_request(devnet.url, "devnet_increaseTime", {"time": 3 * 3600})  # past the escrow's deadline
            [refunded] = _settled(client, [job_id])
    finally:
        gw.ciro("down", check=False)
    assert fault["kind"] == "invalid_compute" and fault["worker_key"] == liar["worker_key"]
    assert fault["slash"] == "slashed" and fault["slash_tx"]
    d = fault["detail"]
    # the evidence checks offline: the worker signed these outputs, and a valid proof shows the model's differ
    claimed = decode_json(d["outputs"])
    assert Receipt.from_dict(d["receipt"]).signature_valid()
    assert d["receipt"]["output_commitment"] == d["output_commitment"]
    assert hashlib.sha256(canonical_bytes(claimed)).hexdigest() == d["output_commitment"]
    checks = {name: ok for name, ok, _ in zk_verify.zk_check(d["zk"], outputs=list(claimed.values()), inputs=[x],
                                                     srs_path=next((home / "srs").glob("dev-kzg*.srs")))}
    assert checks["zk proof"] and checks["zk inputs"] and not checks["zk outputs"]
    assert refunded.settlement == "refunded" and refunded.settlement_tx
    assert _balances(net, home, {"client": payer}) == before  # the escrow came back in full

    async def on_chain() -> tuple[object, int, list[int]]:
        gov = keys.get("devnet-governance")
        chain = await ChainClient.connect(net.rpc_url, address=net.governance, identity=gov)
        pool = net.pool_on(chain)
        receipt = await chain.wait(int(fault["slash_tx"], 16))
        slashed = [data for addr, k, data in receipt.events if addr == net.pool and len(data) >= 3]
        return await pool.worker(account_address(int(liar["worker_key"], 16))), int(await pool.view("min_stake")), \
            slashed[0] if slashed else []

    state, min_stake, event = asyncio.run(on_chain())
    assert state.stake == min_stake // 2 and state.reputation == 500 - 75 and not state.eligible
    assert fault_evidence(fault) in event  # the Slashed event names the fault record's hash


def test_one_account_sends_concurrently_and_recovers_a_stale_nonce(devnet: DevnetProcess, tmp_path: Path) -> None:
    """The shared client's nonce handling: concurrent sends from one account all land, in order; a nonce
    used behind its back (another client of the same account) is read again and the send retried."""
    from ciro import Identity

    async def run() -> None:
        home = tmp_path / "home"
        net = await bootstrap(devnet.url, devnet.accounts[0], home)
        gov_id = KeyStore(home / "keys").get("devnet-governance")
        a = await ChainClient.connect(net.rpc_url, address=net.governance, identity=gov_id)
        b = await ChainClient.connect(net.rpc_url, address=net.governance, identity=gov_id)
        token = net.token_on(a)
        to = account_address(Identity.generate("payee").public_key)
        results = await asyncio.gather(*(a.execute([token.transfer_call(to, i + 1)]) for i in range(6)))
        assert len({r.tx_hash for r in results}) == 6 and await token.balance_of(to) == 21
        await b.execute([token.transfer_call(to, 100)])  # a's cached nonce is now stale
        await a.execute([token.transfer_call(to, 1000)])
        assert await token.balance_of(to) == 1121

    asyncio.run(run())


def test_the_settler_refunds_an_escrowed_job_that_failed_once_its_deadline_passed(devnet: DevnetProcess,
                                                                                  tmp_path: Path) -> None:
    """The gateway's Settlement and JobStore (no gateway process): a job escrowed on chain that then failed is
    refunded by the settler, not before its deadline, and exactly."""
    from ciro import Config, new_job_id
    from ciro.chain import JobManager
    from ciro_devnet.launch import rpc_request
    from ciro_ray.jobstore import JobStore, NewJob
    from ciro_ray.settlement import Settlement

    async def run() -> None:
        home = tmp_path / "home"
        net = await bootstrap(devnet.url, devnet.accounts[0], home)
        cfg = Config.load(home=home, settlement="auto", price_per_job=PRICE, escrow_window_s=60)
        store = JobStore(home / "jobs.db")
        settlement = await Settlement.open(cfg, store)
        assert settlement is not None
        model_hash, ic = "ab" * 32, "cd" * 32
        await settlement.ensure_model(model_hash, None)
        payer = KeyStore(home / "keys").get("client")
        chain = await ChainClient.connect(net.rpc_url, address=account_address(payer.public_key), identity=payer)
        token, jm = net.token_on(chain), JobManager(chain, net.job_manager)
        before = await token.balance_of(chain.address)
        job_id = new_job_id()
        now = await chain.now()
        tx = await chain.execute([token.approve_call(jm.address, 2 * PRICE),
                                  jm.submit_job_call(job_id, model_hash, ic, "receipt", 2 * PRICE, now + 600)])
        store.insert([NewJob(job_id, model_hash, "receipt", {}, ic, b"", status=JobStatus.AWAITING_ESCROW)])
        [row] = [store.get(job_id)]
        assert row is not None
        escrow = await settlement.verify_escrow([row], tx.tx_hash)
        assert store.escrowed([job_id], escrow) == {job_id}
        store.mark_running([job_id], "w1")
        store.fail([(job_id, 1, {"code": "worker_error", "message": "died"})])
        assert await token.balance_of(chain.address) == before - 2 * PRICE
        assert await settlement.settle_once() == 0  # before the deadline: nothing to do yet
        rpc_request(devnet.url, "devnet_increaseTime", {"time": 601})
        assert await settlement.settle_once() == 1
        row = store.get(job_id)
        assert row is not None and row.settlement == "refunded" and row.settlement_tx
        assert await token.balance_of(chain.address) == before
        assert (await jm.job(job_id)).status == "refunded"
        store.close()

    asyncio.run(run())


def test_mlflow_predict_escrows_each_job_and_the_worker_is_paid(paid: Paid, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`-C max_payment`: every prediction's job is escrowed from the caller's account and paid once verified."""
    import mlflow.onnx as mlflow_onnx
    import onnx
    from mlflow.deployments import get_deploy_client

    from ciro.demo import build_tiny_mlp

    monkeypatch.setenv("CIRO_HOME", str(paid.gw.home))  # the payer's key (funded by the devnet) lives there
    path = build_tiny_mlp(tmp_path / "m.onnx", seed=21)
    x = np.random.default_rng(4).standard_normal((3, 16)).astype(np.float32)
    mlflow_onnx.save_model(onnx.load(str(path)), str(tmp_path / "mlflow-model"), input_example=x[:2])
    client = get_deploy_client(f"ciro:/{paid.gw.url}")
    client.delete_deployment("paid-mlp")
    info = client.create_deployment("paid-mlp", str(tmp_path / "mlflow-model"),
                                    config={"max_payment": str(2 * PRICE)})
    assert info["max_payment"] == 2 * PRICE and int(info["settlement"]["price_per_job"]) == PRICE
    resp = client.predict("paid-mlp", x)  # a PredictionsResponse: one list per column
    assert len(resp["job_id"]) == 3 and set(resp["settlement"]) <= {"escrowed", "paid"}
    with CiroClient(paid.gw.url, config=paid.gw.config) as c:
        settled = _settled(c, list(resp["job_id"]))
    assert [r.settlement for r in settled] == ["paid"] * 3 and all(r.payment == PRICE for r in settled)
    client.delete_deployment("paid-mlp")


def test_the_dashboard_reads_stake_reputation_and_security_from_the_chain(paid: Paid) -> None:
    import httpx

    data = httpx.get(f"{paid.gw.url}/v1/dashboard", timeout=60).json()
    assert data["settlement"] and int(data["security"]) > 0  # stake x reputation x uptime over the validators
    staked = [w for w in data["workers"] if w["stake"] is not None]
    assert len(staked) == 2 and all(w["stake"] > 0 and 0 < w["reputation"] <= 1000 for w in staked)


# -- prepaid jobs (CiroLedger) -----------------------------------------------------------------------------
def _read(net: Network, home: Path, fn: Any) -> Any:
    async def go() -> Any:
        chain = await ChainClient.connect(net.rpc_url, address=net.governance,
                                          identity=KeyStore(home / "keys").get("devnet-governance"))
        assert net.ledger is not None
        return await fn(net.token_on(chain), CiroLedger(chain, net.ledger))

    return asyncio.run(go())


def _state(g: Cluster, net: Network, client: CiroClient) -> dict[str, Any]:
    """Everything a refused request must leave as it was: the ledger's view of the client, the gateway's last
    accepted cap and the client's job list."""
    account = account_address(client.payer().public_key)
    ledger = _read(net, g.home, lambda token, led: asyncio.gather(led.balance_of(account), led.charged_of(account)))
    return {"ledger": ledger, "standing": client.ledger_account()["authorized"],
            "jobs": sorted(j.job_id for j in client.jobs(limit=500))}


def _post(g: Cluster, model: str, headers: dict[str, str], verification: str = "receipt", n: int = 1) -> Any:
    async def go() -> Any:
        c = AsyncCiroClient(g.url, config=g.config)
        body = {"model": model, "items": [{"x": {"dtype": "float32", "shape": [1, 16], "data": [0.0] * 16}}] * n,
                "verification": verification, "options": {}}
        try:
            return await c._request("POST", "/v1/jobs/batch", json=body, headers=headers)
        finally:
            await c.aclose()

    return asyncio.run(go())


def _header(client: CiroClient, caps: list[int], key: Identity | None = None, account: int | None = None) -> dict:
    s = client.ledger_account()
    payer = client.payer()
    account = account if account is not None else account_address(payer.public_key)
    signed = [sign_spend(key or payer, chain_id=int(s["chain_id"], 16), ledger=int(s["ledger"], 16),
                         client=account, cumulative=c) for c in caps]
    return {SPEND_HEADER: encode_spend_header(account, signed)}


def test_prepaid_jobs_charge_the_deposit_once_per_worker_batch(paid: Paid, mlp_path: Path) -> None:
    g, net = paid.gw, paid.net
    with CiroClient(g.url, config=g.config) as client:
        assert client.chain_info()["ledger"] == hex(net.ledger or 0)
        account = account_address(client.payer().public_key)
        workers = {w["worker_key"]: account_address(int(w["worker_key"], 16)) for w in client.workers()}
        before = _read(net, g.home, lambda token, led: asyncio.gather(
            token.balance_of(account), *[token.balance_of(a) for a in workers.values()]))
        client.deposit(10 * PRICE)
        standing = client.ledger_account()
        assert (int(standing["balance"]), int(standing["charged"]), int(standing["authorized"])) == (10 * PRICE, 0, 0)
        model = client.deploy(mlp_path)
        x = np.random.default_rng(5).standard_normal((6, 16)).astype(np.float32)
        results = client.infer_batch(model.hash, x, prepaid=True)
        assert [r.status for r in results] == [JobStatus.DONE] * 6 and {r.settlement for r in results} == {"prepaid"}
        assert int(client.ledger_account()["authorized"]) == 6 * PRICE  # the caps climbed by the price per job
        settled = [client.wait_settled(r.job_id, timeout=120) for r in results]
        assert [(r.settlement, r.payment, r.on_chain_verified) for r in settled] == [("paid", PRICE, True)] * 6
        end = client.ledger_account()
    assert (int(end["balance"]), int(end["charged"])) == (4 * PRICE, 6 * PRICE)
    receipts = [r.receipt for r in settled]
    assert all(rc is not None and rc.batched and rc.price == PRICE and int(rc.client, 16) == account for rc in receipts)
    after = _read(net, g.home, lambda token, led: asyncio.gather(
        token.balance_of(account), *[token.balance_of(a) for a in workers.values()]))
    assert after[0] == before[0] - 10 * PRICE  # the deposit left the account; the ledger keeps what is not charged
    for i, key in enumerate(workers):  # each worker paid exactly its jobs' prices
        n = sum(1 for rc in receipts if rc and rc.worker_key == key)
        assert after[1 + i] == before[1 + i] + n * PRICE


def test_caps_that_are_not_the_next_price_steps_are_refused_and_change_nothing(paid: Paid,
                                                                               mlp_path: Path) -> None:
    g, net = paid.gw, paid.net
    with CiroClient(g.url, config=g.config) as client:
        client.deposit(3 * PRICE)
        model = client.deploy(mlp_path)
        start = int(client.ledger_account()["authorized"])
        before = _state(g, net, client)
        attempts = {
            "underpay": _header(client, [start + PRICE // 2]),  # a client paying less than the price
            "skip ahead": _header(client, [start + 2 * PRICE]),
            "stale": _header(client, [start]),  # a replay of the last accepted cap
            "other key": _header(client, [start + PRICE], key=Identity.generate("mallory")),  # forged for this account
        }
        for name, headers in attempts.items():
            with pytest.raises(InsufficientEscrowError) as exc:
                _post(g, model.hash, headers)
            assert exc.value.http_status == 402, name
            assert _state(g, net, client) == before, name
        # an unregistered account (its own key, no deposit) is refused too
        stranger = Identity.generate("stranger")
        with pytest.raises(InsufficientEscrowError, match="no key registered"):
            _post(g, model.hash, _header(client, [PRICE], key=stranger, account=account_address(stranger.public_key)))
        # more caps than the deposit covers
        left = int(client.ledger_account()["balance"]) - (start - int(client.ledger_account()["charged"]))
        n = left // PRICE + 1
        with pytest.raises(InsufficientEscrowError, match="does not cover"):
            _post(g, model.hash, _header(client, [start + PRICE * (i + 1) for i in range(n)]), n=n)
        # one cap for two jobs; a quorum job; a malformed header
        with pytest.raises(InputError, match="2 jobs"):
            _post(g, model.hash, _header(client, [start + PRICE]), n=2)
        with pytest.raises(InputError, match="receipt or zk"):
            _post(g, model.hash, _header(client, [start + PRICE]), verification="quorum")
        with pytest.raises(InputError, match="malformed"):
            _post(g, model.hash, {SPEND_HEADER: "{not json"})
        assert _state(g, net, client) == before
        # the right cap still works afterwards: nothing above moved the gateway's expectation
        r = client.infer(model.hash, np.zeros((1, 16), np.float32), prepaid=True)
        assert r.settlement == "prepaid" and int(client.ledger_account()["authorized"]) == start + PRICE
        with pytest.raises(InputError, match="not both"):
            client.infer(model.hash, np.zeros((1, 16), np.float32), prepaid=True, max_payment=PRICE)


def test_the_cli_deposits_and_runs_a_prepaid_job(paid: Paid, mlp_path: Path, tmp_path: Path) -> None:
    g = paid.gw
    out = g.ciro("deposit", "0.002").stdout
    assert "deposited 0.002 CIRO" in out and "price per job 0.001" in out
    with CiroClient(g.url, config=g.config) as client:
        model = client.deploy(mlp_path)
    (tmp_path / "x.json").write_text(json.dumps({"x": [[0.5] * 16]}))
    job = json.loads(g.ciro("infer", model.hash, "-i", str(tmp_path / "x.json"), "--prepaid").stdout)
    assert job["settlement"] == "prepaid"
    deadline = time.monotonic() + 120
    with CiroClient(g.url, config=g.config) as client:
        while client.status(job["id"]).settlement == "prepaid" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.status(job["id"]).settlement == "paid"
