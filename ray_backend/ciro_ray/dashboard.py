"""The gateway's dashboard (``GET /dashboard``, data at ``GET /v1/dashboard``): workers with their hardware,
utilisation, jobs/hour, stake and reputation; recent jobs with verification and payment state; the network's
efficiency and Security(n); a chart of jobs per hour.

Definitions (computed from live data on every request):
- C, a worker's capacity: its CPUs plus its GPUs (Ray resources it holds).
- U, its utilisation: the fraction of the last hour during which it ran at least one batch (job intervals merged).
- R, its reputation on chain divided by 1000 (1 without settlement).
- P, the utilisation it could reach: 1 (a worker is offered to the network in full).
- eta = sum(C x U x R) / sum(C x P), over live workers.
- Security(n): ``CDCPool.security()``, the sum over validators of stake x reputation x uptime (basis points), read
  from the chain when the gateway settles on one.
"""

from __future__ import annotations

import html
import time
from typing import Any

from ciro.chain import account_address

from .jobstore import JobStore
from .providers import ProviderStore
from .runtime import Runtime

__all__ = ["collect", "render"]

HOUR = 3600.0
_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1a1a1a} table{border-collapse:collapse;
margin-bottom:1.5rem} th,td{text-align:left;padding:.2rem .8rem .2rem 0;border-bottom:1px solid #ddd}
.kpi{display:inline-block;margin:0 2rem 1rem 0} .kpi b{font-size:1.4rem;display:block}"""


def _busy_seconds(intervals: list[tuple[float, float]], since: float) -> float:
    """Time covered by the union of the intervals, clipped to [since, now]."""
    total, end = 0.0, since
    for a, b in sorted((max(a, since), b) for a, b in intervals if b > since):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


async def collect(store: JobStore, providers: ProviderStore, live: Runtime) -> dict[str, Any]:
    """The dashboard's data, from the job store, the providers' records and the running pool and chain."""
    now = time.time()
    activity = store.activity(now - 24 * HOUR)
    by_worker: dict[str, list[tuple[float, float]]] = {}
    per_hour = [0] * 24
    for worker, start, finish in activity:
        by_worker.setdefault(worker, []).append((start, finish))
        per_hour[min(23, int((now - finish) // HOUR))] += 1
    chain_state: dict[str, Any] = {}
    security: int | None = None
    if live.settlement is not None:
        pool = live.settlement.network.pool_on(live.settlement.operator)
        security = int(await pool.view("security"))
        for handle in list(live.pool.workers.values()) if live.pool else []:  # it awaits: workers may change
            key = handle.info.get("worker_key")
            if key:
                address = account_address(int(str(key), 16))  # two reads, not the six of pool.worker()
                chain_state[handle.id] = {"stake": int(await pool.view("stake_of", address)),
                                          "reputation": int(await pool.view("reputation_of", address))}
    workers = []
    num = den = 0.0
    for d in live.pool.describe() if live.pool else []:
        intervals = by_worker.get(d["id"], [])
        recent = [(a, b) for a, b in intervals if b >= now - HOUR]
        capacity = float(d.get("num_cpus") or 0) + float(d.get("num_gpus") or 0)
        utilisation = _busy_seconds(recent, now - HOUR) / HOUR
        chain = chain_state.get(d["id"], {})
        reputation = chain["reputation"] / 1000 if "reputation" in chain else 1.0
        if d["alive"]:
            num += capacity * utilisation * reputation
            den += capacity
        workers.append({"id": d["id"], "provider": d.get("provider"), "node": d.get("hostname") or d.get("node_id"),
                        "alive": d["alive"], "admitted": d["admitted"], "num_cpus": d.get("num_cpus"),
                        "num_gpus": d.get("num_gpus"), "gpu_model": d.get("gpu_model"),
                        "gpu_memory_gb": d.get("gpu_memory_gb"), "gpu_source": d.get("gpu_source"),
                        "state": "draining" if d.get("draining") else "down" if d.get("down") else "ready",
                        "execution_providers": d.get("execution_providers", []),
                        "inflight_batches": d.get("inflight_batches", 0), "jobs_last_hour": len(recent),
                        "utilisation": utilisation, "stake": chain.get("stake"), "reputation": chain.get("reputation")})
    jobs = [{"id": r.id, "status": r.status.value, "verification": r.verification, "worker": r.worker,
             "model": r.model_hash[:12], "latency_ms": (r.finished_at - r.submitted_at) * 1000
             if r.finished_at else None, "settlement": r.settlement, "settlement_tx": r.settlement_tx}
            for r in store.recent(limit=20)]
    downtime = [{"worker_key": r["worker_key"], "provider": r["provider"], "last_heartbeat": r["last_seen"],
                 "seconds": (r["ended_at"] or now) - r["last_seen"], "ongoing": r["ended_at"] is None,
                 "slash": r["slash"], "slash_tx": r["slash_tx"]} for r in providers.downtime(limit=20)]
    return {"time": now, "workers": workers, "recent_jobs": jobs, "jobs_per_hour": list(reversed(per_hour)),
            "downtime": downtime,
            "eta": num / den if den else None, "security": str(security) if security is not None else None,
            "settlement": live.settlement is not None}


def _chart(per_hour: list[int]) -> str:
    """Jobs per hour over the last 24 h as an inline SVG bar chart (oldest left)."""
    top = max(per_hour) or 1
    bars = "".join(
        f"<rect x='{i * 20 + 2}' y='{100 - 96 * n / top:.1f}' width='16' height='{96 * n / top:.1f}' fill='#1d4ed8'>"
        f"<title>{24 - i} h ago: {n} jobs</title></rect>" for i, n in enumerate(per_hour))
    return (f"<svg id='jobs-chart' role='img' aria-label='jobs per hour, last 24 hours (max {top})' width='480' "
            f"height='104' viewBox='0 0 480 104'>{bars}<line x1='0' y1='100' x2='480' y2='100' stroke='#999'/></svg>")


def _table(name: str, header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th scope='col'>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('-' if c is None else str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table aria-label='{name}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _gpus(w: dict[str, Any]) -> str:
    share = float(w.get("num_gpus") or 0)
    if not share:
        return "0"
    facts = [f"{w['gpu_memory_gb']:g} GB" if w.get("gpu_memory_gb") else "", w.get("gpu_source") or ""]
    detail = ", ".join(f for f in facts if f)
    return f"{share:g} x {w.get('gpu_model') or 'GPU'}" + (f" ({detail})" if detail else "")


def render(data: dict[str, Any]) -> str:
    eta = "n/a" if data["eta"] is None else f"{data['eta']:.3f}"
    security = data["security"] if data["security"] is not None else "n/a (this gateway settles no payments)"
    workers = _table("workers", ["worker", "provider", "node", "alive", "admitted", "state", "CPUs", "GPUs",
                                 "runtime", "in flight", "jobs/hour", "utilisation", "stake", "reputation"],
                     [[w["id"], w["provider"], w["node"], "yes" if w["alive"] else "no",
                       "yes" if w["admitted"] else "no", w["state"], w["num_cpus"], _gpus(w),
                       ", ".join(w["execution_providers"]), w["inflight_batches"], w["jobs_last_hour"],
                       f"{w['utilisation']:.1%}", w["stake"], w["reputation"]] for w in data["workers"]])
    jobs = _table("recent jobs", ["job", "status", "verification", "worker", "model", "latency", "payment"],
                  [[j["id"], j["status"], j["verification"], j["worker"], j["model"],
                    f"{j['latency_ms']:.1f} ms" if j["latency_ms"] is not None else None,
                    (j["settlement"] or "unpaid") + (f" tx {j['settlement_tx'][:12]}..." if j["settlement_tx"] else "")]
                   for j in data["recent_jobs"]])
    downtime = _table("downtime", ["provider", "worker key", "silent for", "state", "slash"],
                      [[d["provider"], d["worker_key"][:18] + "...", f"{d['seconds']:.0f} s",
                        "ongoing" if d["ongoing"] else "ended",
                        (d["slash"] or "-") + (f" tx {d['slash_tx'][:12]}..." if d["slash_tx"] else "")]
                       for d in data["downtime"]])
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Ciro dashboard</title>"
            f"<meta http-equiv='refresh' content='10'><style>{_STYLE}</style></head><body><main>"
            f"<h1>Ciro network</h1><div class='kpi'>network efficiency &eta;<b id='eta'>{eta}</b></div>"
            f"<div class='kpi'>Security(n)<b id='security'>{html.escape(security)}</b></div>"
            f"<div class='kpi'>workers alive<b>{sum(w['alive'] for w in data['workers'])}</b></div>"
            f"<h2>Workers</h2>{workers}<h2>Jobs per hour (last 24 h)</h2>{_chart(data['jobs_per_hour'])}"
            f"<h2>Recent jobs</h2>{jobs}<h2>Provider downtime</h2>{downtime}"
            f"<p><small>Definitions of &eta; and Security(n): docs/architecture.md. "
            f"JSON: <a href='/v1/dashboard'>/v1/dashboard</a>.</small></p></main></body></html>")

