"""Prepaid jobs end to end (settlement v2): a client deposits into CiroLedger on the local devnet, signs one spend
cap per job with its requests, the gateway settles whole worker batches in one transaction, and each job's leaf is
confirmed by the ledger. Every refused request leaves the ledger, the gateway's caps and the job list unchanged."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Cluster, free_port, with_tests_on_path

from ciro import AsyncCiroClient, CiroClient, InputError, InsufficientEscrowError, JobStatus, KeyStore
from ciro.chain import ChainClient, Network, account_address
from ciro.chain.ledger import CiroLedger, sign_spend
from ciro.identity import Identity
from ciro_devnet.bootstrap import bootstrap
from ciro_devnet.launch import DevnetProcess

pytestmark = pytest.mark.timeout(900)
PRICE = 10**15
SPEND = "x-ciro-spend"


@pytest.fixture(scope="module")
def gw(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Network]]:
    with DevnetProcess(seed=11, state_dir=tmp_path_factory.mktemp("prepaid-devnet")) as dev:
        home = tmp_path_factory.mktemp("prepaid-home")
        net = asyncio.run(bootstrap(dev.url, dev.accounts[0], home))
        port = free_port()
        env = {**cluster.env, "CIRO_HOME": str(home), "CIRO_PORT": str(port), "CIRO_WORKER_NUM_CPUS": "0.5",
               "CIRO_PRICE_PER_JOB": str(PRICE), "CIRO_SETTLE_INTERVAL_S": "0.2", "CIRO_SETTLEMENT": "auto"}
        g = Cluster(home, port, cluster.ray_address, f"http://127.0.0.1:{port}", with_tests_on_path(env))
        g.ciro("up", "--ray-address", cluster.ray_address, "--workers", "2")
        try:
            yield g, net
        finally:
            g.ciro("down", check=False)


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
    ledger = _read(net, g.home, lambda token, led: asyncio.gather(led.balance_of(account), led.charged_of(account),
                                                                  token.balance_of(account)))
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
    caps_json = [{"cumulative": str(a.cumulative), "r": hex(a.r), "s": hex(a.s)} for a in signed]
    return {SPEND: json.dumps({"client": hex(account), "caps": caps_json})}


def test_prepaid_jobs_charge_the_deposit_once_per_worker_batch(gw: tuple[Cluster, Network], mlp_path: Path) -> None:
    g, net = gw
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


def test_caps_that_are_not_the_next_price_steps_are_refused_and_change_nothing(gw: tuple[Cluster, Network],
                                                                               mlp_path: Path) -> None:
    g, net = gw
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
            _post(g, model.hash, {SPEND: "{not json"})
        assert _state(g, net, client) == before
        # the right cap still works afterwards: nothing above moved the gateway's expectation
        r = client.infer(model.hash, np.zeros((1, 16), np.float32), prepaid=True)
        assert r.settlement == "prepaid" and int(client.ledger_account()["authorized"]) == start + PRICE
        with pytest.raises(InputError, match="not both"):
            client.infer(model.hash, np.zeros((1, 16), np.float32), prepaid=True, max_payment=PRICE)


def test_the_cli_deposits_and_runs_a_prepaid_job(gw: tuple[Cluster, Network], mlp_path: Path, tmp_path: Path) -> None:
    g, _ = gw
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
