"""On-chain payment for the gateway: escrow checks before a job runs, payment and refunds in batches after.

A job is paid on Starknet when its client escrows it (``JobManager.submit_job`` pulls ``max_payment``
from the client's account) and tells the gateway the escrow transaction. The gateway checks that
transaction's ``JobSubmitted`` events against the jobs it holds (model, input commitment, level,
payment >= its price, a deadline ahead) before scheduling them, and tells the workers the price and the
client's account, which each worker's batched receipt signs. Finished jobs are settled in batches:
governance assigns each job to the worker that ran it (one transaction), each worker submits its output
commitments (one transaction per worker), then the operator finalizes them all in one transaction
(``finalize_batch`` with the workers' Merkle receipts for receipt and zk jobs, one signature check per
batch; ``finalize_quorum`` with the agreeing workers' receipts for quorum jobs), reports quorum
dissenters (``report_invalid_compute``, which slashes them), and refunds escrows of failed jobs after
their deadline. The contracts check every signature, leaf and path again and pay exactly the price the
worker signed; the gateway chooses no amount. It is trusted with timing and with assigning each job to the
worker that ran it.

Workers act through their own accounts. On the embedded default their keys are in this
``CIRO_HOME``'s key store, so the gateway sends their transactions; a worker whose key lives elsewhere
must submit its own results (its jobs wait as ``escrowed`` until then).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from ciro import Config, ConfigError, KeyStore, VerificationLevel
from ciro.chain import ChainClient, Network, Violation, account_address, ensure_account
from ciro.chain.ledger import CiroLedger
from ciro.errors import ChainError, InsufficientEscrowError
from ciro.identity import Identity
from ciro.receipts import MERKLE_SCHEME, short_string

from .background import Background
from .jobstore import JobRow, JobStore
from .prepaid import Prepaid
from .providers import ProviderStore, downtime_evidence, evidence_felt

__all__ = ["Settlement"]

log = logging.getLogger("ciro.settlement")
#: The levels a model is registered for on chain: those whose jobs the JobManager can pay.
SETTLED_LEVELS = tuple(level for level in VerificationLevel if level.settles_on_chain)


def _selector(name: str) -> int:
    from starknet_py.hash.selector import get_selector_from_name

    return int(get_selector_from_name(name))


def _u256(low: int, high: int) -> int:
    return low + (high << 128)


def evidence_hash(row: JobRow) -> int:
    """What ``submit_result`` records as evidence: the proof hash for zk, else the receipt's SHA-256 (as a felt)."""
    ev = row.evidence or {}
    zk = ev.get("zk") or {}
    if zk.get("proof_hash"):
        return int(zk["proof_hash"], 16) >> 6
    blob = json.dumps(ev.get("receipt") or {}, sort_keys=True).encode()
    return int.from_bytes(hashlib.sha256(blob).digest(), "big") >> 6


def fault_evidence(fault: dict[str, Any]) -> int:
    """What a governance slash records as evidence: the SHA-256 (as a felt) of the fault record's job id, worker key
    and detail, canonical JSON (the record itself is served at ``GET /v1/faults``)."""
    blob = json.dumps({"job_id": fault["job_id"], "worker_key": fault["worker_key"], "detail": fault["detail"]},
                      sort_keys=True, separators=(",", ":")).encode()
    return int.from_bytes(hashlib.sha256(blob).digest(), "big") >> 6


class Settlement(Background):
    def __init__(self, cfg: Config, store: JobStore, network: Network, operator: ChainClient, *,
                 providers: ProviderStore | None = None,
                 on_ineligible: Callable[[set[int]], None] | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.network = network
        self.operator = operator
        self.jm = network.job_manager_on(operator)
        self.keys = KeyStore(cfg.paths.keys)
        self._workers: dict[int, ChainClient] = {}
        self._identities: dict[int, Identity] = {}
        #: Called with the keys of workers a slash left ineligible (below the minimum stake, or banned).
        self.on_ineligible = on_ineligible
        #: Provider workers' downtime records (the gateway's); long downtime is slashed from here.
        self.providers = providers
        self._seated: set[int] = set()
        self._seating = asyncio.Lock()
        #: Prepaid jobs through CiroLedger, where the deployment has one.
        self.prepaid = (Prepaid(cfg, store, CiroLedger(operator, network.ledger), network.pool_on(operator))
                        if network.ledger else None)

    @classmethod
    async def open(cls, cfg: Config, store: JobStore, *, providers: ProviderStore | None = None,
                   on_ineligible: Callable[[set[int]], None] | None = None) -> Settlement | None:
        """The settlement of this gateway, or None when it has none (``settlement = off`` or no chain.json).
        ``providers``: whose long downtime is slashed; ``on_ineligible``: told the keys a slash left ineligible."""
        if cfg.settlement == "off":
            return None
        try:
            net = Network.load(cfg.home)
            operator_id = KeyStore(cfg.paths.keys).get(cfg.operator_key)
            operator = await ChainClient.connect(net.rpc_url, address=net.governance, identity=operator_id)
        except (ConfigError, ChainError) as exc:
            if cfg.settlement == "required":
                raise
            log.info("no on-chain settlement: %s", exc)
            return None
        return cls(cfg, store, net, operator, providers=providers, on_ineligible=on_ineligible)

    def info(self) -> dict[str, Any]:
        n = self.network
        return {"enabled": True, "required": self.cfg.settlement == "required", "rpc_url": n.rpc_url,
                "token": hex(n.token), "pool": hex(n.pool), "job_manager": hex(n.job_manager),
                "governance": hex(n.governance), "ledger": hex(n.ledger) if n.ledger else None,
                "price_per_job": str(self.cfg.price_per_job),
                "escrow_window_s": self.cfg.escrow_window_s}

    # -- before a job runs ---------------------------------------------------------------
    async def ensure_model(self, model_hash: str, vk_hash: str | None) -> None:
        """Register the model on chain (all levels) unless it is; the client's escrow needs it."""
        owner, _, _ = await self.jm.view("get_model", int(model_hash, 16))
        if int(owner) == 0:
            await self.operator.execute([self.jm.register_model_call(model_hash, vk_hash, SETTLED_LEVELS)],
                                        what="JobManager.register_model")

    async def verify_escrow(self, rows: list[JobRow], tx_hash: int) -> dict[str, dict[str, Any]]:
        """Check the escrow transaction covers every job; returns the escrow record per job id."""
        try:
            tx = await self.operator.wait(tx_hash, what="The escrow transaction")
        except ChainError as exc:
            raise InsufficientEscrowError(f"The escrow transaction {tx_hash:#x} is not usable: {exc.message}",
                                          detail={"tx_hash": hex(tx_hash)}) from exc
        block = await self.operator.node.get_block(block_number=tx.block_number)
        now = int(block.timestamp)
        sel = _selector("JobSubmitted")
        events = {}
        for address, keys, data in tx.events:
            if address == self.network.job_manager and len(keys) >= 2 and keys[0] == sel:
                events[keys[1]] = data
        out, problems = {}, []
        price, window = self.cfg.price_per_job, self.cfg.escrow_window_s
        for r in rows:
            d = events.get(int(r.id, 16))
            if d is None:
                problems.append(f"{r.id}: no JobSubmitted event in that transaction")
                continue
            client, model, ic = d[0], _u256(d[1], d[2]), _u256(d[3], d[4])
            level, max_payment, deadline = d[5], _u256(d[6], d[7]), d[8]
            wrong = [name for name, ok in (
                ("model hash", model == int(r.model_hash, 16)), ("input commitment", ic == int(r.input_commitment, 16)),
                ("level", level == short_string(r.verification)),
                (f"max_payment (below the price {price})", max_payment >= price),
                (f"deadline (less than {window:.0f}s ahead)", deadline >= now + window),
                ("client account (not the signer's)", r.client is None or client == account_address(int(r.client, 16))),
            ) if not ok]
            if wrong:
                problems.append(f"{r.id}: wrong {', '.join(wrong)}")
            else:
                out[r.id] = {"tx": hex(tx_hash), "client": hex(client), "max_payment": str(max_payment),
                             "deadline": deadline, "price": str(price)}
        if problems:
            raise InsufficientEscrowError(
                f"The escrow does not cover {len(problems)} job(s): {'; '.join(problems[:5])}. Escrow each job with "
                "JobManager.submit_job (the SDK does it when you pass max_payment=) and send that transaction's hash.",
                detail={"problems": problems})
        return out

    # -- workers -------------------------------------------------------------------------
    def _identity(self, public_key: int) -> Identity | None:
        """The key store's key with this public key; the store is read again only for a key not seen yet."""
        if public_key not in self._identities:
            self._identities = {k.public_key: k for k in self.keys.list()}
        return self._identities.get(public_key)

    async def _worker_chain(self, ident: Identity) -> ChainClient:
        if ident.public_key not in self._workers:
            self._workers[ident.public_key] = await ChainClient.connect(
                self.network.rpc_url, address=account_address(ident.public_key), identity=ident)
        return self._workers[ident.public_key]

    async def onboard(self, worker_keys: set[int]) -> set[int]:
        """Give this gateway's own workers an account, registration, the minimum stake and a validator seat (the
        governance account pays); returns the keys of every eligible (staked, not banned) worker."""
        pool = self.network.pool_on(self.operator)
        token = self.network.token_on(self.operator)
        min_stake = int(await pool.view("min_stake"))
        eligible = set()
        for key in worker_keys:
            address = account_address(key)
            ident = self._identity(key)
            if ident is not None and int(await pool.view("worker_key", address)) == 0:
                await ensure_account(self.operator, ident)
                wchain = await self._worker_chain(ident)
                await wchain.execute([pool.register_worker_call(key)], what="CDCPool.register_worker")
                await self.operator.execute([token.approve_call(pool.address, min_stake), pool.stake_call(
                    address, min_stake), pool.add_validator_call(address)], what="Staking a worker")
            if await pool.is_eligible(address):
                eligible.add(key)
        return eligible

    async def eligible(self, worker_keys: set[int]) -> set[int]:
        """The keys whose worker is eligible on chain (registered, at least the minimum stake, not banned). An
        eligible worker not yet in the validator set gets a seat (it then counts in Security(n))."""
        pool = self.network.pool_on(self.operator)
        out = set()
        async with self._seating:  # one seat per worker, however many checks run at once
            for key in worker_keys:
                address = account_address(key)
                if not await pool.is_eligible(address):
                    continue
                out.add(key)
                if key not in self._seated:
                    if not bool(await pool.view("is_validator", address)):
                        await self.operator.execute([pool.add_validator_call(address)], what="CDCPool.add_validator")
                    self._seated.add(key)
        return out

    # -- after a job ran -----------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.settle_interval_s)
            try:
                self.store.expire_escrow(time.time() - self.cfg.escrow_window_s)
                while await self.settle_once():
                    pass
            except Exception:  # a settlement problem must not stop the gateway; it is retried next round
                log.exception("settlement round failed")

    async def settle_once(self) -> int:
        """Settle up to ``settle_batch`` finished jobs and file pending slashes; returns how many changed state."""
        rows = self.store.to_settle(self.cfg.settle_batch)
        changed = await self._slash() + await self._slash_downtime()
        if self.prepaid is not None:
            changed += await self.prepaid.settle_once()
        if not rows:
            return changed
        done = [r for r in rows if r.status.value == "done"]
        changed += await self._pay(done) if done else 0
        changed += await self._refund([r for r in rows if r.status.value != "done"])
        return changed

    async def _pay(self, rows: list[JobRow]) -> int:
        old = [r for r in rows if _receipt(r).get("scheme") != MERKLE_SCHEME]
        if old:  # a receipt from before batched receipts: the JobManager settles Merkle receipts only
            log.warning("%d job(s) carry no Merkle receipt and cannot be paid on chain; refund them after their "
                        "deadline", len(old))
            self.store.settled([(r.id, "error", None, None) for r in old])
            rows = [r for r in rows if r not in old]
        by_worker: dict[int, list[JobRow]] = defaultdict(list)
        for r in rows:
            receipt = (r.evidence or {}).get("receipt") or {}
            by_worker[int(receipt.get("worker_key", "0x0"), 16)].append(r)
        ready: list[JobRow] = []
        mine = {key: rs for key, rs in by_worker.items() if self._identity(key) is not None}
        # Governance assigns each job to the worker that ran it; only that worker can then submit its result, and
        # only its signed receipt settles the job.
        assign = [self.jm.assign_call(r.id, account_address(key)) for key, rs in mine.items() for r in rs]
        if assign:
            try:
                await self.operator.execute(assign, what="Assigning jobs")
            except ChainError as exc:
                log.warning("assigning %d jobs failed: %s", len(assign), exc)
                self.store.settled([(r.id, "error", None, None) for rs in mine.values() for r in rs])
                return len(assign)
        for key, rs in mine.items():  # the others' workers submit their own results
            ident = self._identity(key)
            assert ident is not None
            wchain = await self._worker_chain(ident)
            calls = [self.jm.submit_result_call(r.id, r.output_commitment or "0" * 64, evidence_hash(r)) for r in rs]
            try:
                await wchain.execute(_plain(calls), what="Submitting results")
            except ChainError as exc:
                log.warning("worker %s could not submit results: %s", ident.name, exc)
                self.store.settled([(r.id, "error", None, None) for r in rs])
                continue
            ready.extend(rs)
        if not ready:
            return 0
        receipts = [(r.id, account_address(int(_receipt(r)["worker_key"], 16)), _receipt(r)) for r in ready
                    if r.verification != VerificationLevel.QUORUM]
        calls = [self.jm.finalize_batch_call(receipts)] if receipts else []
        reports = []
        for r in (r for r in ready if r.verification == VerificationLevel.QUORUM):
            quorum = (r.evidence or {}).get("quorum") or {}
            agreeing = [v["receipt"] for v in quorum.get("votes", []) if v.get("agrees")]
            calls.append(self.jm.finalize_quorum_call(
                r.id, int(quorum.get("f", 1)), [(account_address(int(rc["worker_key"], 16)), rc) for rc in agreeing]))
        quorum_ids = [r.id for r in ready if r.verification == VerificationLevel.QUORUM]
        dissent = [f for f in (self.store.faults(job_ids=quorum_ids, limit=100_000) if quorum_ids else [])
                   if f["kind"] == "invalid_compute" and f["slash"] is None]
        for f in dissent:
            rc = f["detail"]["receipt"]
            reports.append(self.jm.report_invalid_compute_call(f["job_id"], account_address(
                int(rc["worker_key"], 16)), rc))
        try:
            tx = await self.operator.execute(calls + reports, what="Settling jobs")
        except ChainError as exc:
            log.warning("settling %d jobs failed: %s", len(ready), exc)
            self.store.settled([(r.id, "error", None, None) for r in ready])
            return len(ready)
        self.store.settled([(r.id, "paid", tx.tx_hex, int(_receipt(r)["price"])) for r in ready])
        if dissent:  # JobManager.report_invalid_compute slashed them, checking their own signed receipts
            self.store.slashed([(f["id"], "reported", tx.tx_hex) for f in dissent])
            await self._drop_ineligible({int(f["worker_key"], 16) for f in dissent})
        return len(ready)

    async def _slash(self) -> int:
        """File the faults a zk proof exposed (a worker's signed outputs that are not the proven ones) as
        ``CDCPool.slash(worker, INVALID_COMPUTE, evidence)`` from the governance account, in one transaction.
        The pool cannot check a Halo2 proof, so this slash trusts governance; the evidence hash names the
        fault record anyone can check offline (the proof, the worker's outputs and its signed receipt)."""
        faults = self.store.faults_to_slash(self.cfg.settle_batch)
        if not faults:
            return 0
        pool = self.network.pool_on(self.operator)
        calls, filed = [], []
        skipped: list[tuple[int, str, str | None]] = []
        registered: dict[int, bool] = {}  # one chain read per worker, however many faults it has
        for f in faults:
            key = int(f["worker_key"] or "0x0", 16)
            if key not in registered:
                registered[key] = key != 0 and int(await pool.view("worker_key", account_address(key))) != 0
            if not registered[key]:
                skipped.append((int(f["id"]), "unregistered", None))  # no stake to slash on chain
                continue
            calls.append(pool.slash_call(account_address(key), Violation.INVALID_COMPUTE, fault_evidence(f)))
            filed.append(f)
        if filed:
            try:
                tx = await self.operator.execute(calls, what="Slashing for invalid compute")
            except ChainError as exc:
                log.warning("filing %d invalid-compute slashes failed: %s", len(filed), exc)
                skipped += [(int(f["id"]), "error", None) for f in filed]
            else:
                skipped += [(int(f["id"]), "slashed", tx.tx_hex) for f in filed]
        self.store.slashed(skipped)
        if filed:
            await self._drop_ineligible({int(f["worker_key"], 16) for f in filed})
        return len(faults)

    async def _slash_downtime(self) -> int:
        """File downtime longer than ``downtime_slash_s`` as ``CDCPool.slash(worker, DOWNTIME, evidence)`` from
        governance, in one transaction. The evidence names the record served at GET /v1/downtime (the worker, its
        last heartbeat, how long it was silent); like the zk slash, the pool takes governance's word for it."""
        if self.providers is None:
            return 0
        now = time.time()
        due = self.providers.to_slash(self.cfg.downtime_slash_s, self.cfg.settle_batch, now)
        if not due:
            return 0
        pool = self.network.pool_on(self.operator)
        calls: list[Any] = []
        filed: list[tuple[dict[str, Any], dict[str, Any]]] = []
        done: list[tuple[int, str, str | None, dict[str, Any] | None]] = []
        for d in due:
            key = int(d["worker_key"], 16)
            evidence = downtime_evidence(d, now)
            if int(await pool.view("worker_key", account_address(key))) == 0:
                done.append((int(d["id"]), "unregistered", None, evidence))
                continue
            calls.append(pool.slash_call(account_address(key), Violation.DOWNTIME, evidence_felt(evidence)))
            filed.append((d, evidence))
        if filed:
            try:
                tx = await self.operator.execute(calls, what="Slashing for downtime")
            except ChainError as exc:
                log.warning("filing %d downtime slashes failed: %s", len(filed), exc)
                done += [(int(d["id"]), "error", None, ev) for d, ev in filed]
            else:
                log.warning("slashed %d worker(s) for downtime: tx %s", len(filed), tx.tx_hex)
                done += [(int(d["id"]), "slashed", tx.tx_hex, ev) for d, ev in filed]
        self.providers.slashed(done)
        if filed:
            await self._drop_ineligible({int(d["worker_key"], 16) for d, _ in filed})
        return len(due)

    async def _drop_ineligible(self, keys: set[int]) -> None:
        pool = self.network.pool_on(self.operator)
        gone = {k for k in keys if not await pool.is_eligible(account_address(k))}
        if gone and self.on_ineligible is not None:
            self.on_ineligible(gone)

    async def _refund(self, rows: list[JobRow]) -> int:
        if not rows:
            return 0
        now = await self.operator.now()
        due = [r for r in rows if r.escrow and now > int(r.escrow["deadline"])]
        if not due:
            return 0
        tx = await self.operator.execute([self.jm.refund_call(r.id) for r in due], what="Refunding escrows")
        self.store.settled([(r.id, "refunded", tx.tx_hex, None) for r in due])
        return len(due)


def _receipt(row: JobRow) -> dict[str, Any]:
    """The worker's receipt of a finished job (for a quorum job, the assigned worker's vote)."""
    return dict((row.evidence or {}).get("receipt") or {})


def _plain(calls: list[Any]) -> list[Any]:
    """Calls prepared through the operator's binding, as plain (target, selector, calldata) calls: a call does
    not name its sender, so the worker's account can send them."""
    from starknet_py.net.client_models import Call

    return [Call(to_addr=c.to_addr, selector=c.selector, calldata=list(c.calldata)) for c in calls]

