"""Who may read and act on a gateway, attacked the way each party would: a remote outsider, another client,
a web page the operator opens (cross-site forgery, DNS rebinding). The real gateway app is called through
ASGI with the peer address of our choosing; none of these paths needs Ray, so the app is not started."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciro import AsyncCiroClient, Config, Identity, KeyStore, canonical_bytes, new_job_id, sign_request
from ciro.auth import LOCAL_TOKEN_HEADER, read_local_token
from ciro_ray.gateway import create_app
from ciro_ray.jobstore import NewJob

PORT = 18765
REMOTE, LOOPBACK = ("10.0.0.9", 40000), ("127.0.0.1", 40000)
ALICE, BOB, EVE = (Identity.generate(n) for n in ("alice", "bob", "eve"))


class Gateway:
    def __init__(self, home: Path, **settings: Any) -> None:
        self.operator = KeyStore(home / "keys").new("devnet-governance")
        self.app = create_app(Config.load(port=PORT, settlement="off", **settings))
        self.gw = self.app.state.gw
        self.jobs = {who: self._job(key) for who, key in (("alice", ALICE.public_hex), ("bob", BOB.public_hex),
                                                          ("local", None))}

    def _job(self, client: str | None, options: dict[str, Any] | None = None) -> str:
        job_id = new_job_id()
        blob = canonical_bytes({"x": [1.0]})
        self.gw.store.insert([NewJob(job_id, "ab" * 32, "receipt", options or {}, "cd" * 32, blob, client=client)])
        return job_id

    def call(self, method: str, path: str, *, peer: tuple[str, int] = REMOTE, signer: Identity | None = None,
             headers: dict[str, str] | None = None, params: dict[str, str] | None = None,
             content: bytes = b"", host: str = f"127.0.0.1:{PORT}") -> httpx.Response:
        hdrs = {"host": host, **(headers or {})}
        if signer is not None:
            hdrs.update(sign_request(signer, method=method, path=path, query=params, body=content))
        return asyncio.run(self._call(method, path, peer, hdrs, params, content))

    async def _call(self, method: str, path: str, peer: tuple[str, int], headers: dict[str, str],
                    params: dict[str, str] | None, content: bytes) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app, client=peer)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{PORT}") as http:
            return await http.request(method, path, headers=headers, params=params, content=content)

    def status(self, job_id: str) -> str:
        row = self.gw.store.get(job_id)
        assert row is not None
        return str(row.status.value)


@pytest.fixture
def gateway(tmp_home: Path) -> Iterator[Gateway]:
    g = Gateway(tmp_home)
    yield g
    g.gw.store.close()


def _reason(r: httpx.Response) -> str:
    return str(r.json()["error"]["detail"].get("reason"))


def test_an_outsider_reads_no_job_data(gateway: Gateway) -> None:
    for path in ("/v1/jobs", f"/v1/jobs/{gateway.jobs['alice']}", f"/v1/jobs/{gateway.jobs['alice']}/result",
                 "/v1/faults"):
        r = gateway.call("GET", path)
        assert r.status_code == 401 and _reason(r) == "unsigned", path
    assert gateway.call("GET", "/v1/models").status_code == 200  # models, workers, health stay public
    assert gateway.call("GET", "/healthz").status_code == 200


def test_a_signed_client_sees_only_its_own_jobs(gateway: Gateway) -> None:
    mine = gateway.call("GET", "/v1/jobs", signer=ALICE, params={"limit": "100"})
    assert mine.status_code == 200 and [j["id"] for j in mine.json()] == [gateway.jobs["alice"]]
    assert gateway.call("GET", f"/v1/jobs/{gateway.jobs['alice']}/result", signer=ALICE).status_code == 202
    for other in ("bob", "local"):
        r = gateway.call("GET", f"/v1/jobs/{gateway.jobs[other]}/result", signer=ALICE)
        assert r.status_code == 403 and _reason(r) == "not_owner"
    everything = gateway.call("GET", "/v1/jobs", signer=gateway.operator)  # the operator key sees all
    assert {j["id"] for j in everything.json()} == set(gateway.jobs.values())


def test_faults_hold_outputs_and_are_scoped(gateway: Gateway) -> None:
    gateway.gw.store.record_faults([(gateway.jobs["alice"], "0x1", "w0", "invalid_compute", {"outputs": [1]}),
                                    (gateway.jobs["bob"], "0x1", "w0", "invalid_compute", {"outputs": [2]})])
    mine = gateway.call("GET", "/v1/faults", signer=ALICE).json()
    assert [f["job_id"] for f in mine] == [gateway.jobs["alice"]]
    assert len(gateway.call("GET", "/v1/faults", peer=LOOPBACK).json()) == 2  # the operator's own machine


def test_a_fresh_key_cannot_cancel_someone_elses_job(gateway: Gateway) -> None:
    for job in gateway.jobs.values():  # including the job the operator submitted unsigned on the head machine
        r = gateway.call("POST", f"/v1/jobs/{job}/cancel", signer=EVE)
        assert r.status_code == 403 and _reason(r) == "not_owner"
        assert gateway.status(job) == "queued"


@pytest.mark.parametrize("headers", [
    {"origin": "http://evil.example"},  # a form or fetch() on another site, posted by the user's browser
    {"sec-fetch-site": "cross-site"},
    {"host": "evil.example:18765"},  # DNS rebinding: evil.example now resolves to 127.0.0.1
], ids=["origin", "fetch-metadata", "rebinding"])
def test_a_web_page_cannot_act_through_the_operators_browser(gateway: Gateway, headers: dict[str, str]) -> None:
    host = headers.pop("host", f"127.0.0.1:{PORT}")
    text = {"content-type": "text/plain", **headers}  # a "simple" request: no CORS preflight protects it
    job = gateway.jobs["local"]
    r = gateway.call("POST", f"/v1/jobs/{job}/cancel", peer=LOOPBACK, headers=text, host=host)
    assert r.status_code == 403 and _reason(r) == "cross_site"
    assert gateway.status(job) == "queued"
    r = gateway.call("POST", "/v1/models", peer=LOOPBACK, headers=text, host=host, params={"name": "evil"},
                     content=b"not onnx")
    assert r.status_code == 403 and gateway.gw.models.list() == []
    r = gateway.call("GET", f"/v1/jobs/{job}/result", peer=LOOPBACK, headers=headers, host=host)
    assert r.status_code == 401  # a rebinding page cannot read results either
    ok = gateway.call("GET", f"/v1/jobs/{job}/result", peer=LOOPBACK)  # the same machine, its own Host
    assert ok.status_code == 202 and ok.json()["id"] == job


def test_auth_required_trusts_the_local_token_only(tmp_home: Path) -> None:
    g = Gateway(tmp_home, auth="required")
    token = read_local_token(tmp_home)
    assert token and (tmp_home / "run" / "gateway.token").stat().st_mode & 0o777 == 0o600
    assert g.call("GET", "/v1/jobs", peer=LOOPBACK).status_code == 401
    assert g.call("GET", "/v1/jobs", peer=LOOPBACK, headers={LOCAL_TOKEN_HEADER: "0" * 64}).status_code == 401
    assert g.call("GET", "/v1/jobs", peer=REMOTE, headers={LOCAL_TOKEN_HEADER: token}).status_code == 401
    r = g.call("GET", "/v1/jobs", peer=LOOPBACK, headers={LOCAL_TOKEN_HEADER: token})
    assert r.status_code == 200 and len(r.json()) == 3
    # the SDK on this machine sends it by itself (no signing needed), and never to another machine
    assert AsyncCiroClient(f"http://127.0.0.1:{PORT}")._local_token() == token
    assert AsyncCiroClient("http://192.0.2.1:8765", config=Config.load(sign_requests="never"))._local_token() is None
    g.gw.store.close()


def test_a_stored_value_json_cannot_carry_does_not_break_the_listing(gateway: Gateway) -> None:
    """An older build stored options unchecked: one integer beyond 64 bits made every GET /v1/jobs answer 500."""
    job = gateway._job(None, {"priority": 2**70})
    r = gateway.call("GET", "/v1/jobs", peer=LOOPBACK)
    assert r.status_code == 200
    assert next(j for j in r.json() if j["id"] == job)["options"] == {"priority": str(2**70)}


def test_malformed_job_ids_are_refused_before_any_lookup(gateway: Gateway) -> None:
    r = gateway.call("GET", "/v1/jobs/..%2F..%2Fmodels", peer=LOOPBACK)
    assert r.status_code in (404, 422) and r.headers["content-type"] == "application/json"
    r = gateway.call("GET", "/v1/jobs/not-a-job-id", peer=LOOPBACK)
    assert r.status_code == 422 and "path.job_id" in r.json()["error"]["message"]
