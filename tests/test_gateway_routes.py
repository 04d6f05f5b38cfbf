"""The gateway's shape: one job record (``ciro.jobs.JOB_RECORD``) in every answer about a job, whichever route
built it; the OpenAPI document made from that record; the verification levels' facts read from the enum; and no
import circle among the gateway's modules (its routers never reach back into the gateway)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import Cluster

from ciro import Config, JobResult, JobStatus, ModelInfo, VerificationLevel, encode_json
from ciro.jobs import JOB_RECORD, job_record

KEYS = [f.key for f in JOB_RECORD]
PACKAGE = Path(__file__).resolve().parents[1] / "ray_backend" / "ciro_ray"


def _record(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {k: None for k in KEYS if k not in ("proof_hash", "on_chain_verified")}
    base.update(id="ab" * 16, model_hash="cd" * 32, status="done", verification="receipt",
                input_commitment="ef" * 32, attempts=1, submitted_at=1.0, options={})
    return job_record(**{**base, **over})


def test_the_record_has_every_key_and_derives_only_what_it_says() -> None:
    rec = _record(settlement="paid", zk={"proof_hash": "12" * 32})
    assert list(rec) == KEYS and rec["on_chain_verified"] is True and rec["proof_hash"] == "12" * 32
    assert _record(settlement="escrowed")["on_chain_verified"] is False
    with pytest.raises(TypeError, match=r"missing keys \['payment', 'settlement_tx'\]"):
        job_record(**{k: v for k, v in _record().items() if k not in ("payment", "settlement_tx")})
    with pytest.raises(TypeError, match="unknown keys"):
        _record(paid=True)


def test_the_sdk_reads_and_writes_the_same_record() -> None:
    wire = _record(outputs=encode_json({"y": np.arange(3, dtype=np.float32)}), payment="7", settlement="paid",
                   settlement_tx="0x1")
    result = JobResult.from_wire(wire)
    assert (result.payment, result.on_chain_verified, result.settlement_tx) == (7, True, "0x1")
    assert list(result.to_dict()) == KEYS and result.to_dict()["payment"] == 7  # a file keeps the exact integer
    again = JobResult.from_wire(result.to_dict())
    assert again.to_dict() == result.to_dict()


def test_the_openapi_job_schema_is_the_record(tmp_home: Path) -> None:
    from ciro_ray.gateway import create_app

    app = create_app(Config.load(settlement="off"))
    try:
        schema = app.openapi()["components"]["schemas"]["JobOut"]
    finally:
        app.state.gw.store.close()
    assert list(schema["properties"]) == KEYS and sorted(schema["required"]) == sorted(KEYS)
    assert "Tensor" in str(schema["properties"]["outputs"])  # outputs are described as tensors


def test_levels_carry_which_sign_and_settle() -> None:
    from ciro_ray.settlement import SETTLED_LEVELS

    assert not VerificationLevel.NONE.signs_receipt and not VerificationLevel.NONE.settles_on_chain
    assert all(v.signs_receipt and v.settles_on_chain for v in VerificationLevel if v is not VerificationLevel.NONE)
    assert set(SETTLED_LEVELS) == {"receipt", "quorum", "zk"}
    assert "not that the output is correct" in VerificationLevel.RECEIPT.proves


def test_an_answer_that_waited_is_the_same_record_as_a_later_read(cluster: Cluster, mlp: ModelInfo) -> None:
    """POST /v1/jobs?wait= answered from the scheduler's outcome; it used to leave out settlement_tx, payment and
    on_chain_verified, which GET /v1/jobs/ID/result (built from the stored row) had."""
    x = {"x": {"dtype": "float32", "shape": [1, 16], "data": [0.5] * 16}}
    with httpx.Client(base_url=cluster.url, timeout=60) as http:
        posted = http.post("/v1/jobs", params={"wait": "30"}, json={"model": mlp.hash, "inputs": x})
        assert posted.status_code == 200, posted.text
        job = posted.json()
        assert list(job) == KEYS and job["status"] == JobStatus.DONE.value
        assert (job["settlement_tx"], job["payment"], job["on_chain_verified"]) == (None, None, False)
        _same(job, http.get(f"/v1/jobs/{job['id']}/result").json())
        batch = http.post("/v1/jobs/batch", params={"wait": "30"},
                          json={"model": mlp.hash, "items": [x, x], "verification": "none"}).json()
        assert [list(r) for r in batch["results"]] == [KEYS, KEYS]
        for r in batch["results"]:
            _same(r, http.get(f"/v1/jobs/{r['id']}/result").json())
            assert r["receipt"] is None and r["verification"] == "none"


def _same(answered: dict[str, Any], stored: dict[str, Any]) -> None:
    """The same record; the scheduler's clock readings for a waiter and for the store may differ by a few ms."""
    clocks = ("started_at", "finished_at")
    assert {k: v for k, v in answered.items() if k not in clocks} == {
        k: v for k, v in stored.items() if k not in clocks}
    assert all(abs(answered[k] - stored[k]) < 1.0 for k in clocks)


def _imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (TYPE_CHECKING imports too: they are circles all the same)."""
    files = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                parts = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                base = ".".join([*parts, node.module or ""]).strip(".")
                deps |= {m for m in [base, *(f"{base}.{a.name}" for a in node.names)] if m in files}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in files}
        graph[name] = deps - {name}
    return graph


def test_no_import_circle_in_the_gateway() -> None:
    graph = _imports()
    assert "ciro_ray.routes.jobs" in graph and "ciro_ray.admission" in graph["ciro_ray.intake"]
    circles: list[list[str]] = []
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert circles == []
    assert not [m for m, deps in graph.items() if "ciro_ray.gateway" in deps and m != "ciro_ray.__main__"]
