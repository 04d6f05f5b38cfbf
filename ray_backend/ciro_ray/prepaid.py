"""Prepaid jobs (settlement v2, CiroLedger): a client deposits once and signs a spend cap with each request; the
gateway settles whole worker batches, many in one transaction.

Admission (:meth:`Prepaid.authorize`): a request carries, in the ``x-ciro-spend`` header, the paying account and
one signed cap per job, ``{"client": "0x..", "caps": [{"cumulative": "N", "r": "0x..", "s": "0x.."}, ...]}``. The
caps must climb from the last one this gateway accepted from that account (or from what the ledger has charged it,
the first time) by exactly the gateway's price per job, each signed by the key the account registered in the
ledger, and the account's deposit must cover every cap not charged yet. Anything else is refused with nothing
stored. Only receipt and zk jobs are prepaid: their worker signs one Merkle leaf per job with the price and the
client; a quorum job would have k workers sign the price (pay it through a JobManager escrow instead).

Settlement (:meth:`Prepaid.settle_once`): the scheduler keeps prepaid jobs in batches of their own of at most 64
jobs (``batching.PREPAID_MAX_LEAVES``: a dispute's path of at most 6), so a worker's signed batch is settled whole
once all of its jobs are done: ``settle_batch`` with each worker's root, size, total and signature, and for each
client the amount its leaves in those batches cost under its latest signed cap; a worker's n-th batch goes into the
n-th ``settle_batch`` call of the one transaction (:func:`settle_rounds`). The
ledger checks the signatures, the caps and that charges equal payments; afterwards each job's leaf is checked
against its batch's stored root by the ledger's own ``job_in_batch``, and only then is the job ``paid`` (and
``on_chain_verified``). A batch that never completes (a job in it failed, e.g. a zk proof contradicted the worker)
is not settled: its done jobs end ``error`` after ``escrow_window_s`` and nobody is charged or paid for them.
A prepaid job that ends without a result is ``uncharged``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from ciro import Config, VerificationLevel
from ciro.chain import CDCPool, account_address
from ciro.chain.ledger import SPEND_HEADER, Charge, CiroLedger, SpendAuthorization, parse_spend_header, spend_message
from ciro.errors import ChainError, InputError, InsufficientEscrowError
from ciro.identity import verify_felt

from .jobstore import JobRow, JobStore

__all__ = ["PREPAID_LEVELS", "Prepaid", "batch_fault", "check_level", "settle_rounds"]

log = logging.getLogger("ciro.prepaid")
PREPAID_LEVELS = (VerificationLevel.RECEIPT, VerificationLevel.ZKML)


def check_level(level: VerificationLevel) -> None:
    if level not in PREPAID_LEVELS:
        raise InputError(f"A prepaid job is a receipt or zk job (its worker signs the price in one leaf); this one is "
                         f"{level.value}. Pay a quorum job with max_payment= (a JobManager escrow), or run it unpaid.")


class Prepaid:
    def __init__(self, cfg: Config, store: JobStore, ledger: CiroLedger, pool: CDCPool) -> None:
        self.cfg = cfg
        self.store = store
        self.ledger = ledger
        self.pool = pool
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._chain_id: int | None = None

    async def account(self, client: int) -> dict[str, Any]:
        """What a client needs to sign its next cap: the price, the last cap accepted, and its ledger account."""
        charged, balance = await self.ledger.charged_of(client), await self.ledger.balance_of(client)
        last = self.store.spend_cap(hex(client))
        return {"ledger": hex(self.ledger.address), "chain_id": hex(await self._chain()), "client": hex(client),
                "price_per_job": str(self.cfg.price_per_job), "authorized": str(last[0] if last else charged),
                "charged": str(charged), "balance": str(balance),
                "registered_key": hex(int(await self.ledger.view("client_key", client)))}

    async def _chain(self) -> int:
        if self._chain_id is None:
            self._chain_id = await self.ledger.chain_id()
        return self._chain_id

    @contextlib.asynccontextmanager
    async def authorize(self, header: str, jobs: int, level: VerificationLevel) -> AsyncIterator[list[dict[str, Any]]]:
        """Check a request's caps for ``jobs`` jobs at ``level``; yields each job's payment record. The caps are
        recorded as accepted only if the body of the ``async with`` (storing the jobs) succeeds; one account's
        requests are checked one at a time."""
        client, auths = parse_spend_header(header)
        check_level(level)
        if len(auths) != jobs:
            raise InputError(f"{SPEND_HEADER} has {len(auths)} caps for {jobs} jobs: sign one cap per job.")
        if self.cfg.price_per_job <= 0:
            raise InputError(f"This gateway's price per job is 0: there is nothing to prepay. Drop the {SPEND_HEADER} "
                             "header.")
        async with self._locks[client]:
            last = self.store.spend_cap(hex(client))
            charged = await self.ledger.charged_of(client)
            start = last[0] if last else charged
            price = self.cfg.price_per_job
            want = [start + price * (i + 1) for i in range(jobs)]
            if [a.cumulative for a in auths] != want:
                raise InsufficientEscrowError(
                    f"The caps must be the last accepted cap ({start}) plus the price per job ({price}) for each job: "
                    f"expected {want[:3]}{'...' if jobs > 3 else ''}, got {[a.cumulative for a in auths][:3]}. Ask "
                    f"GET /v1/ledger/{hex(client)} for the last cap and sign again (the SDK does it).",
                    detail={"expected_first": str(want[0]), "price_per_job": str(price)})
            key = int(await self.ledger.view("client_key", client))
            if key == 0:
                raise InsufficientEscrowError(f"Account {hex(client)} has no key registered in CiroLedger "
                                              f"{hex(self.ledger.address)}: deposit first (client.deposit(amount) or "
                                              "`ciro deposit AMOUNT`, which registers it).")
            chain_id = await self._chain()
            bad = [a.cumulative for a in auths if not verify_felt(key, spend_message(
                chain_id=chain_id, ledger=self.ledger.address, client=client, cumulative=a.cumulative), a.r, a.s)]
            if bad:
                raise InsufficientEscrowError(f"The caps for {bad[:3]} are not signed by the key account {hex(client)} "
                                              "registered in the ledger. Sign them with that key.")
            balance = await self.ledger.balance_of(client)
            if want[-1] - charged > balance:
                raise InsufficientEscrowError(
                    f"Account {hex(client)}'s deposit ({balance}) does not cover its unsettled caps "
                    f"({want[-1] - charged}). Deposit more (client.deposit(amount) or `ciro deposit AMOUNT`).",
                    detail={"balance": str(balance), "needed": str(want[-1] - charged)})
            records = [{"prepaid": True, "client": hex(client), "price": str(price), "cumulative": str(c)}
                       for c in want]
            yield records
            top = auths[-1]
            self.store.set_spend_cap(hex(client), top.cumulative, hex(top.r), hex(top.s))

    # -- settling ------------------------------------------------------------------------
    async def settle_once(self) -> int:
        """Settle the complete worker batches of done prepaid jobs (up to ``settle_batch`` jobs); returns how many
        jobs changed state."""
        rows = self.store.prepaid_final(self.cfg.settle_batch * 4)
        if not rows:
            return 0
        ended = [r for r in rows if r.status.value != "done"]
        self.store.settled([(r.id, "uncharged", None, None) for r in ended])
        groups: dict[tuple[str, str], list[JobRow]] = defaultdict(list)
        for r in rows:
            if r.status.value == "done":
                rec = (r.evidence or {}).get("receipt") or {}
                groups[(str(rec.get("worker_key")), str(rec.get("root")))].append(r)
        ready, stale = [], []
        cutoff = time.time() - self.cfg.escrow_window_s
        for rs in groups.values():
            size = int(_receipt(rs[0]).get("batch_size", 0))
            if len(rs) == size:
                ready.append(rs)
            elif all((r.finished_at or 0) < cutoff for r in rs):
                stale.extend(rs)
        if stale:
            log.warning("%d prepaid job(s) are in worker batches that never completed: not charged", len(stale))
            self.store.settled([(r.id, "error", None, None) for r in stale])
        bad = [(rs, why) for rs in ready if (why := batch_fault([_receipt(r) for r in rs])) is not None]
        for rs, why in bad:
            log.warning("worker batch %s of worker %s is not settled: %s", _receipt(rs[0]).get("root"),
                        _receipt(rs[0]).get("worker_key"), why)
        self.store.settled([(r.id, "error", None, None) for rs, _ in bad for r in rs])
        ready = [rs for rs in ready if all(rs is not b for b, _ in bad)]
        picked, count = [], 0
        for rs in ready:
            if count and count + len(rs) > self.cfg.settle_batch:
                break
            picked.append(rs)
            count += len(rs)
        return len(ended) + len(stale) + sum(len(rs) for rs, _ in bad) + (await self._settle(picked) if picked else 0)

    async def _settle(self, batches: list[list[JobRow]]) -> int:
        """One transaction for these worker batches: the ledger keeps one batch per worker under a batch id, so a
        worker's n-th batch goes into the n-th ``settle_batch`` call (batch ids ``base``, ``base + 1``, ...), each
        call with its own charges."""
        workers = [_worker_batch(rs) for rs in batches]
        for w, rs in zip(workers, batches, strict=True):
            if not await self.pool.is_eligible(w["worker"]):  # slashed or banned since it ran: never paid
                log.warning("worker %s is no longer eligible in CDCPool; its batch is not settled", hex(w["worker"]))
                self.store.settled([(r.id, "error", None, None) for r in rs])
                return len(rs)
        rounds = settle_rounds([w["worker"] for w in workers])
        base = time.time_ns() // 1_000_000
        calls = []
        for n, members in enumerate(rounds):
            charges = self._charges([batches[i] for i in members])
            if charges is None:
                return 0
            calls.append(self.ledger.settle_batch_call(base + n, [workers[i] for i in members], charges))
        try:
            tx = await self.ledger.chain.execute(calls, what="CiroLedger.settle_batch")
        except ChainError as exc:
            if len(batches) > 1:  # find the batch the ledger refuses: each alone, the others still settle
                log.warning("settling %d worker batches together failed (%s); settling each alone", len(batches),
                            exc.message)
                return sum([await self._settle([rs]) for rs in batches])
            log.warning("the ledger refuses worker batch %s: %s; its jobs are not charged", workers[0]["root"],
                        exc.message)
            self.store.settled([(r.id, "error", None, None) for r in batches[0]])
            return len(batches[0])
        jobs = [(base + n, workers[i]["worker"], r) for n, members in enumerate(rounds) for i in members
                for r in batches[i]]

        async def proven(batch_id: int, worker: int, r: JobRow) -> bool:
            rr = _receipt(r)
            return await self.ledger.job_in_batch(batch_id, worker, _leaf(r), int(rr["leaf_index"]),
                                                  [int(p, 16) for p in rr["path"]])

        found = await asyncio.gather(*(proven(*job) for job in jobs))  # the ledger's own check of each job's leaf
        done = [(r.id, "paid" if ok else "error", tx.tx_hex, int(_receipt(r)["price"]) if ok else None)
                for (_, _, r), ok in zip(jobs, found, strict=True)]
        self.store.settled(done)
        log.info("settled %d prepaid job(s) of %d worker batch(es) in %d call(s) of %s", len(done), len(batches),
                 len(calls), tx.tx_hex)
        return len(done)

    def _charges(self, batches: list[list[JobRow]]) -> list[Charge] | None:
        """Per client, what its leaves in these worker batches cost, under its latest accepted cap."""
        amounts: dict[str, int] = defaultdict(int)
        for rs in batches:
            for r in rs:
                rr = _receipt(r)
                if int(rr["price"]):
                    amounts[hex(int(rr["client"], 16))] += int(rr["price"])
        charges = []
        for client, amount in amounts.items():
            cap = self.store.spend_cap(client)
            if cap is None:
                log.error("no accepted cap for client %s; its jobs cannot be charged", client)
                return None
            charges.append(Charge(SpendAuthorization(int(client, 16), cap[0], int(cap[1], 16), int(cap[2], 16)),
                                  amount))
        return charges


def settle_rounds(workers: list[int]) -> list[list[int]]:
    """The ``settle_batch`` calls of one transaction for worker batches of these workers (in order): call n holds
    each worker's n-th batch (indices into ``workers``), since the ledger keeps one batch per worker under a batch
    id."""
    rounds: list[list[int]] = []
    seen: dict[int, int] = defaultdict(int)
    for i, w in enumerate(workers):
        n = seen[w]
        seen[w] += 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(i)
    return rounds


def _worker_batch(rows: list[JobRow]) -> dict[str, int]:
    """The ledger's ``WorkerBatch`` of one worker batch (its receipts agree on these: ``batch_fault``)."""
    rec = _receipt(rows[0])
    return {"worker": account_address(int(rec["worker_key"], 16)), "root": int(rec["root"], 16),
            "count": int(rec["batch_size"]), "total": int(rec["batch_total"]), "r": int(rec["signature"][0], 16),
            "s": int(rec["signature"][1], 16)}


def batch_fault(receipts: list[dict[str, Any]]) -> str | None:
    """Why one worker batch's receipts (every job of it) must not be settled, or None: each receipt verifies (leaf,
    path, root, signature), they agree on the batch (root, size, total, signature, worker), they are all its jobs at
    distinct indices, and the signed total is the sum of their prices. A worker who signed a total above its leaves'
    prices, or a size it did not fill, would make ``settle_batch`` revert for every batch settled with it."""
    from ciro.receipts import Receipt

    try:
        parsed = [Receipt.from_dict(r) for r in receipts]
    except InputError as exc:
        return f"malformed receipt ({exc})"
    head = parsed[0]
    for rc in parsed:
        if (why := rc.problem()) is not None:
            return f"job {rc.job_id}: {why}"
        if (rc.root, rc.batch_size, rc.batch_total, rc.signature, rc.worker_key) != (
                head.root, head.batch_size, head.batch_total, head.signature, head.worker_key):
            return "its receipts disagree on the batch (root, size, total, signature or worker)"
    if sorted(rc.leaf_index for rc in parsed) != list(range(head.batch_size)):
        return (f"{len(parsed)} receipts at indices {sorted(rc.leaf_index for rc in parsed)[:8]} do not make the "
                f"signed batch of {head.batch_size}")
    prices = sum(rc.price for rc in parsed)
    if prices != head.batch_total:
        return f"the signed total {head.batch_total} is not the sum of its jobs' prices {prices}"
    return None


def _receipt(row: JobRow) -> dict[str, Any]:
    rec: dict[str, Any] = (row.evidence or {}).get("receipt") or {}
    return rec


def _leaf(row: JobRow) -> int:
    from ciro.receipts import Receipt

    return Receipt.from_dict(_receipt(row)).leaf()
