"""Signed requests, replay protection and worker admission: unit checks, then a real gateway with
``auth=required`` and allow-lists on the session's Ray cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from conftest import Cluster, free_port
from starknet_py.hash.utils import verify_message_signature

from ciro import (
    CiroClient,
    Config,
    ForbiddenError,
    Identity,
    KeyStore,
    UnauthenticatedError,
    encode_json,
    sign_request,
    verify,
)
from ciro.auth import (
    LOCAL_TOKEN_HEADER,
    SignedRequest,
    canonical_target,
    is_loopback_url,
    read_local_token,
    request_message,
)
from ciro_ray.auth import NonceStore, read_keys


def _check(headers: dict[str, str], *, method: str = "POST", path: str = "/v1/jobs",
           query: dict[str, str] | None = None, body: bytes = b"{}", now: float | None = None,
           ttl: float = 300) -> None:
    sig = SignedRequest.from_headers(headers)
    assert sig is not None
    sig.check(method=method, target=canonical_target(path, (query or {}).items()), body=body,
              now=time.time() if now is None else now, max_ttl_s=ttl)


def _reason(exc: pytest.ExceptionInfo[Exception]) -> str:
    return str(exc.value.detail.get("reason"))  # type: ignore[attr-defined]


def test_signature_round_trip_and_every_tampering() -> None:
    me = Identity.generate("me")
    headers = sign_request(me, method="POST", path="/v1/jobs", query={"wait": "5"}, body=b'{"a":1}')
    _check(headers, query={"wait": "5"}, body=b'{"a":1}')
    # the same felt verifies with starknet-py, so Cairo's check_ecdsa_signature accepts it too
    sig = SignedRequest.from_headers(headers)
    assert sig is not None
    msg = request_message(method="POST", target="/v1/jobs?wait=5", body=b'{"a":1}', account=me.public_key,
                          nonce=sig.nonce, expiry=sig.expiry)
    assert verify_message_signature(msg, [sig.r, sig.s], me.public_key)
    for change in ({"body": b'{"a":2}'}, {"path": "/v1/jobs/batch"}, {"query": {"wait": "6"}}, {"method": "PUT"}):
        with pytest.raises(UnauthenticatedError) as exc:
            _check(headers, **{"query": {"wait": "5"}, "body": b'{"a":1}', **change})  # type: ignore[arg-type]
        assert _reason(exc) == "bad_signature", change
    other = Identity.generate("other")
    with pytest.raises(UnauthenticatedError) as exc:  # someone else's key in the account header
        _check({**headers, "x-ciro-account": other.public_hex}, query={"wait": "5"}, body=b'{"a":1}')
    assert _reason(exc) == "bad_signature"
    old = sign_request(me, method="POST", path="/v1/jobs", now=time.time() - 1000)
    with pytest.raises(UnauthenticatedError, match="expired") as exc:
        _check(old)
    far = sign_request(me, method="POST", path="/v1/jobs", ttl_s=86400)
    with pytest.raises(UnauthenticatedError) as exc:
        _check(far)
    assert _reason(exc) == "expiry_too_far"
    with pytest.raises(UnauthenticatedError, match="missing x-ciro-signature"):
        SignedRequest.from_headers({k: v for k, v in headers.items() if k != "x-ciro-signature"})
    with pytest.raises(UnauthenticatedError, match="malformed"):
        SignedRequest.from_headers({**headers, "x-ciro-signature": "zz"})
    assert SignedRequest.from_headers({}) is None


def test_canonical_target_and_loopback() -> None:
    assert canonical_target("/v1/jobs", [("wait", "1"), ("model", "a b")]) == "/v1/jobs?model=a+b&wait=1"
    assert canonical_target("/v1/jobs") == "/v1/jobs"
    assert is_loopback_url("http://127.0.0.1:8765") and is_loopback_url("http://localhost:1")
    assert is_loopback_url("http://[::1]:8765")
    assert not is_loopback_url("http://10.0.0.5:8765") and not is_loopback_url("https://gateway.example.com")


def test_nonce_store_survives_a_restart(tmp_path: Path) -> None:
    store = NonceStore(tmp_path / "n.db")
    exp = int(time.time()) + 60
    assert store.use(1, 2, exp) and not store.use(1, 2, exp) and store.use(3, 2, exp)
    store.close()
    again = NonceStore(tmp_path / "n.db")
    assert not again.use(1, 2, exp)  # a replay after a gateway restart is still refused
    again.close()


def test_key_list_errors(tmp_path: Path) -> None:
    p = tmp_path / "keys"
    p.write_text("# workers\n0x1234  # first\n\n0xabc\n")
    assert read_keys(p) == {0x1234, 0xABC}
    p.write_text("0x12\nnot-a-key\n")
    with pytest.raises(ValueError, match=":2: 'not-a-key'"):
        read_keys(p)
    with pytest.raises(ValueError, match="Cannot read the key list"):
        read_keys(tmp_path / "missing")


def test_client_signs_only_for_remote_gateways(tmp_home: Path) -> None:
    from ciro import AsyncCiroClient

    assert AsyncCiroClient("http://127.0.0.1:9").identity is None
    remote = AsyncCiroClient("http://192.0.2.1:8765")
    assert remote.identity is not None and remote.identity.name == "client"
    assert (tmp_home / "keys" / "client.json").stat().st_mode & 0o777 == 0o600
    assert AsyncCiroClient("http://127.0.0.1:9", config=Config.load(sign_requests="always")).identity is not None
    assert AsyncCiroClient("http://192.0.2.1:9", config=Config.load(sign_requests="never")).identity is None


def test_auto_mode_refuses_unsigned_requests_from_other_machines(tmp_home: Path) -> None:
    """The real gateway app, called as if from 10.0.0.9. Refused requests never reach a route, so the
    app need not start Ray."""
    asyncio.run(_remote_calls())


async def _remote_calls() -> None:
    from ciro_ray.gateway import create_app

    transport = httpx.ASGITransport(app=create_app(Config.load()), client=("10.0.0.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        await _refusals(http)
    cfg = Config.load()
    local = httpx.ASGITransport(app=create_app(cfg), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=local, base_url=cfg.local_url) as http:
        r = await http.post("/v1/jobs", json={"model": "x", "inputs": {}})
        assert r.status_code not in (401, 403)  # the same request from this machine passes auth (and fails later)


async def _refusals(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/jobs", json={"model": "x", "inputs": {}})
    assert r.status_code == 401 and r.json()["error"]["detail"]["reason"] == "unsigned"
    assert "signed requests" in r.json()["error"]["message"]
    me = Identity.generate("me")
    body = orjson.dumps({"model": "x", "inputs": {}})
    headers = sign_request(me, method="POST", path="/v1/jobs", body=body)
    r = await http.post("/v1/jobs", content=b'{"model":"y","inputs":{}}', headers=headers)
    assert r.status_code == 401 and r.json()["error"]["detail"]["reason"] == "bad_signature"
    hb = sign_request(me, method="POST", path="/v1/workers/heartbeat")
    r = await http.post("/v1/workers/heartbeat", headers=hb)
    assert r.status_code == 403 and r.json()["error"]["detail"]["reason"] == "unknown_worker"
    assert (await http.get("/v1/models")).status_code == 200  # public reads need no signature
    r = await http.get("/v1/jobs")  # job data does: only its submitter or the operator sees it
    assert r.status_code == 401 and r.json()["error"]["detail"]["reason"] == "unsigned"


# -- a real gateway with auth=required and allow-lists ---------------------------------------------

@dataclass
class Keys:
    alice: Identity
    bob: Identity
    mallory: Identity
    worker0: Identity
    worker1: Identity


@pytest.fixture(scope="module")
def locked(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Keys]]:
    home = tmp_path_factory.mktemp("locked-home")
    ks = KeyStore(home / "keys")
    keys = Keys(*(ks.new(n) for n in ("alice", "bob", "mallory", "worker-0", "worker-1")))
    (home / "clients.txt").write_text(f"{keys.alice.public_hex}\n{keys.bob.public_hex}\n")
    (home / "workers.txt").write_text(f"# only the first worker slot\n{keys.worker0.public_hex}\n")
    port = free_port()
    env = {**cluster.env, "CIRO_HOME": str(home), "CIRO_PORT": str(port), "CIRO_WORKER_NUM_CPUS": "0.5",
           "CIRO_AUTH": "required", "CIRO_ALLOWED_CLIENTS": str(home / "clients.txt"),
           "CIRO_ALLOWED_WORKERS": str(home / "workers.txt")}
    gw = Cluster(home, port, cluster.ray_address, f"http://127.0.0.1:{port}", env)
    gw.ciro("up", "--ray-address", cluster.ray_address, "--workers", "2")
    try:
        yield gw, keys
    finally:
        gw.ciro("down", check=False)


def _job_count(gw: Cluster) -> int:
    """Every job, read as the operator: from this machine with the gateway's local token (auth=required)."""
    token = read_local_token(gw.home)
    assert token is not None
    r = httpx.get(f"{gw.url}/v1/jobs", params={"limit": 10_000}, headers={LOCAL_TOKEN_HEADER: token})
    assert r.status_code == 200, r.text
    return len(r.json())


def test_locked_gateway_admits_only_listed_workers(locked: tuple[Cluster, Keys], mlp_path: Path) -> None:
    gw, keys = locked
    workers = httpx.get(f"{gw.url}/v1/workers").json()
    assert sorted((w["worker_key"], w["admitted"]) for w in workers) == sorted(
        [(keys.worker0.public_hex, True), (keys.worker1.public_hex, False)])
    admitted = next(w["id"] for w in workers if w["admitted"])
    with CiroClient(gw.url, config=gw.config, identity=keys.alice) as alice:
        model = alice.deploy(mlp_path)
        rng = np.random.default_rng(1)
        results = alice.infer_batch(model.hash, [{"x": rng.standard_normal((1, 16)).astype(np.float32)}
                                                 for _ in range(20)])
        assert {r.worker for r in results} == {admitted}
        assert {r.client for r in results} == {keys.alice.public_hex}
        assert all(r.receipt and r.receipt.worker_key == keys.worker0.public_hex for r in results)
        assert verify(results[0]).valid


def test_locked_gateway_refuses_unsigned_unknown_forged_expired_replayed(locked: tuple[Cluster, Keys],
                                                                        mlp_path: Path) -> None:
    gw, keys = locked
    with CiroClient(gw.url, config=gw.config, identity=keys.alice) as alice:
        model = alice.deploy(mlp_path)
    x = {"x": np.zeros((1, 16), np.float32)}
    before = _job_count(gw)
    elsewhere = gw.home.parent / "anon-home"  # no local token there: like a user without the gateway's home
    with CiroClient(gw.url, config=Config.load(home=elsewhere, sign_requests="never")) as anon:
        with pytest.raises(UnauthenticatedError, match="only signed requests") as exc:
            anon.infer(model.hash, x)
        assert _reason(exc) == "unsigned"
    with CiroClient(gw.url, config=gw.config, identity=keys.mallory) as mallory:
        with pytest.raises(ForbiddenError, match="not allowed") as exc:
            mallory.infer(model.hash, x)
        assert _reason(exc) == "unknown_client"
    body = orjson.dumps({"model": model.hash, "inputs": encode_json(x), "verification": "receipt"})
    signed = sign_request(keys.alice, method="POST", path="/v1/jobs", query={"wait": "30"}, body=body)
    forged = httpx.post(f"{gw.url}/v1/jobs", params={"wait": "30"}, content=body.replace(b"receipt", b"none"),
                        headers={**signed, "content-type": "application/json"})
    assert forged.status_code == 401 and forged.json()["error"]["detail"]["reason"] == "bad_signature"
    expired = sign_request(keys.alice, method="POST", path="/v1/jobs", body=body, now=time.time() - 3600)
    r = httpx.post(f"{gw.url}/v1/jobs", content=body, headers={**expired, "content-type": "application/json"})
    assert r.status_code == 401 and r.json()["error"]["detail"]["reason"] == "expired"
    assert _job_count(gw) == before  # nothing refused left a job behind
    first = httpx.post(f"{gw.url}/v1/jobs", params={"wait": "30"}, content=body,
                       headers={**signed, "content-type": "application/json"}, timeout=60)
    assert first.status_code == 200 and first.json()["client"] == keys.alice.public_hex
    replay = httpx.post(f"{gw.url}/v1/jobs", params={"wait": "30"}, content=body,
                        headers={**signed, "content-type": "application/json"})
    assert replay.status_code == 401 and replay.json()["error"]["detail"]["reason"] == "replayed"
    assert _job_count(gw) == before + 1


def test_locked_gateway_worker_heartbeats_and_job_ownership(locked: tuple[Cluster, Keys], mlp_path: Path) -> None:
    gw, keys = locked
    hb = httpx.post(f"{gw.url}/v1/workers/heartbeat",
                    headers=sign_request(keys.worker0, method="POST", path="/v1/workers/heartbeat"))
    assert hb.status_code == 200 and hb.json()["worker_key"] == keys.worker0.public_hex
    for who in (keys.worker1, keys.alice):  # a worker not on the list, and a client key
        r = httpx.post(f"{gw.url}/v1/workers/heartbeat",
                       headers=sign_request(who, method="POST", path="/v1/workers/heartbeat"))
        assert r.status_code == 403 and r.json()["error"]["detail"]["reason"] == "unknown_worker"
    assert httpx.post(f"{gw.url}/v1/workers/heartbeat").status_code == 401
    with CiroClient(gw.url, config=gw.config, identity=keys.alice) as alice, \
            CiroClient(gw.url, config=gw.config, identity=keys.bob) as bob:
        model = alice.deploy(mlp_path)
        job = alice.submit(model.hash, {"x": np.zeros((1, 16), np.float32)})
        with pytest.raises(ForbiddenError, match="Only the submitter or the operator"):
            bob.cancel(job)
        with pytest.raises(ForbiddenError, match="Only the submitter or the operator"):
            bob.status(job)  # nor read it
        assert [j.job_id for j in bob.jobs(limit=1000)] == []
        alice.cancel(job)  # the owner may (whether it was still queued or already done)
        assert alice.status(job).job_id == job and job in {j.job_id for j in alice.jobs(limit=1000)}
    # the SDK on the head machine needs no key: it sends the gateway's local token (auth=required)
    with CiroClient(gw.url, config=Config.load(home=gw.home, port=gw.port)) as local:
        assert local._async.identity is None
        assert job in {j.job_id for j in local.jobs(limit=1000)}
