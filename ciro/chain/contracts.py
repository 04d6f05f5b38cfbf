"""Typed bindings for the Ciro contracts over starknet-py, for any node and any account.

Each binding prepares calls (``*_call`` methods return a starknet-py ``Call``, so many can go into one
transaction with :meth:`ChainClient.execute`), sends single ones, and reads views. Argument names and
order are the Cairo interfaces' (``contracts/src/interfaces.cairo``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..jobs import VerificationLevel
from ..receipts import short_string
from .artifacts import abi, parsed_abi
from .client import ChainClient, TxResult, _revert_error

__all__ = ["CDCPool", "CiroToken", "JobManager", "JobState", "Violation", "u256_of"]

#: Job status codes (JobManager).
STATUS = {0: "none", 1: "submitted", 2: "assigned", 3: "result_submitted", 4: "finalized", 5: "refunded"}
#: Model level bitmask.
LEVEL_BITS: dict[str, int] = {VerificationLevel.RECEIPT: 1, VerificationLevel.QUORUM: 2, VerificationLevel.ZKML: 4}


class Violation:
    """CDCPool slashing codes (the seed's matrix)."""

    DOUBLE_SIGNING = 1  # 30 % of stake, reputation -50, banned 90 days
    DOWNTIME = 2  # 5 %, -10, 30 days
    INVALID_COMPUTE = 3  # 50 %, -75, 180 days
    COORDINATED_ATTACK = 4  # 100 %, reputation 0, banned forever


def u256_of(hex_digest: str) -> int:
    """A SHA-256 hex digest (model hash, commitments) as the u256 the contracts store."""
    return int(hex_digest, 16)


class _Bound:
    NAME: ClassVar[str]

    def __init__(self, chain: ChainClient, address: int) -> None:
        from starknet_py.contract import Contract, ContractData

        self.chain = chain
        self.address = address
        data = ContractData.from_abi(address, abi(self.NAME), 1)
        data.__dict__["parsed_abi"] = parsed_abi(self.NAME)  # fills the cached_property: parsed once, shared
        self._functions = Contract._make_functions(contract_data=data, client=chain.account.client,
                                                   account=chain.account, cairo_version=1)

    def prepare(self, fn: str, *args: Any, **kw: Any) -> Any:
        return self._functions[fn].prepare_invoke_v3(*args, **kw)

    async def invoke(self, fn: str, *args: Any, **kw: Any) -> TxResult:
        return await self.chain.execute([self.prepare(fn, *args, **kw)], what=f"{self.NAME}.{fn}")

    async def view(self, fn: str, *args: Any, **kw: Any) -> Any:
        from starknet_py.net.client_errors import ClientError

        try:
            out = await self._functions[fn].call(*args, block_number="latest", **kw)
        except ClientError as exc:
            raise _revert_error(f"{exc.message} {exc.data or ''}", f"{self.NAME}.{fn}") from exc
        return out[0] if len(out) == 1 else tuple(out)


class CiroToken(_Bound):
    NAME = "CiroToken"

    async def balance_of(self, account: int) -> int:
        return int(await self.view("balance_of", account))

    async def allowance(self, owner: int, spender: int) -> int:
        return int(await self.view("allowance", owner, spender))

    def approve_call(self, spender: int, amount: int) -> Any:
        return self.prepare("approve", spender, amount)

    def transfer_call(self, recipient: int, amount: int) -> Any:
        return self.prepare("transfer", recipient, amount)

    def mint_call(self, recipient: int, amount: int) -> Any:
        return self.prepare("mint", recipient, amount)


@dataclass(frozen=True)
class WorkerState:
    key: int
    stake: int
    pending: int
    ready_at: int
    reputation: int
    banned_until: int
    eligible: bool
    validator: bool


class CDCPool(_Bound):
    NAME = "CDCPool"

    async def worker(self, worker: int) -> WorkerState:
        pending, ready_at = await self.view("pending_unstake", worker)
        return WorkerState(
            key=int(await self.view("worker_key", worker)), stake=int(await self.view("stake_of", worker)),
            pending=int(pending), ready_at=int(ready_at), reputation=int(await self.view("reputation_of", worker)),
            banned_until=int(await self.view("banned_until", worker)),
            eligible=bool(await self.view("is_eligible", worker)),
            validator=bool(await self.view("is_validator", worker)))

    async def is_eligible(self, worker: int) -> bool:
        return bool(await self.view("is_eligible", worker))

    def register_worker_call(self, public_key: int) -> Any:
        return self.prepare("register_worker", public_key)

    def stake_call(self, worker: int, amount: int) -> Any:
        return self.prepare("stake_for_worker", worker, amount)

    def slash_call(self, worker: int, violation: int, evidence: int) -> Any:
        return self.prepare("slash", worker, violation, evidence)

    def withdraw_slashed_call(self, recipient: int) -> Any:
        """Governance only: move every slashed token the pool holds to ``recipient``."""
        return self.prepare("withdraw_slashed", recipient)

    async def slashed_balance(self) -> int:
        """Slashed tokens the pool holds for governance (a slash keeps them in the pool)."""
        return int(await self.view("slashed_balance"))

    def add_validator_call(self, worker: int) -> Any:
        return self.prepare("add_validator", worker)


@dataclass(frozen=True)
class JobState:
    client: int
    model_hash: int
    input_commitment: int
    level: str
    max_payment: int
    deadline: int
    worker: int
    output_commitment: int
    evidence_hash: int
    status: str
    payment: int


def _text(felt: int) -> str:
    return felt.to_bytes(31, "big").lstrip(b"\0").decode("ascii", "replace")


class JobManager(_Bound):
    NAME = "JobManager"

    async def job(self, job_id: str | int) -> JobState:
        j = await self.view("get_job", _job(job_id))
        return JobState(client=int(j["client"]), model_hash=int(j["model_hash"]),
                        input_commitment=int(j["input_commitment"]), level=_text(int(j["level"])),
                        max_payment=int(j["max_payment"]), deadline=int(j["deadline"]), worker=int(j["worker"]),
                        output_commitment=int(j["output_commitment"]), evidence_hash=int(j["evidence_hash"]),
                        status=STATUS.get(int(j["status"]), str(j["status"])), payment=int(j["payment"]))

    def register_model_call(self, model_hash: str, vk_hash: str | None, levels: Sequence[str]) -> Any:
        bits = sum(LEVEL_BITS[lv] for lv in set(levels))
        return self.prepare("register_model", u256_of(model_hash), u256_of(vk_hash) if vk_hash else 0, bits)

    def submit_job_call(self, job_id: str, model_hash: str, input_commitment: str, level: str, max_payment: int,
                        deadline: int) -> Any:
        return self.prepare("submit_job", _job(job_id), u256_of(model_hash), u256_of(input_commitment),
                            short_string(level), max_payment, deadline)

    def assign_call(self, job_id: str, worker: int) -> Any:
        return self.prepare("assign_job", _job(job_id), worker)

    def submit_result_call(self, job_id: str, output_commitment: str, evidence_hash: int) -> Any:
        return self.prepare("submit_result", _job(job_id), u256_of(output_commitment), evidence_hash)

    def finalize_receipt_call(self, job_id: str, worker: int, receipt: dict[str, Any]) -> Any:
        """Finalize one job with its worker's Merkle receipt (``worker``: that worker's account address). The
        contract pays the price the receipt states; nothing here chooses an amount."""
        leaf = _leaf(receipt)
        return self.prepare("finalize_receipt", _job(job_id), _batch(worker, receipt), leaf["timestamp_ms"],
                            leaf["price"], leaf["leaf_index"], leaf["path"])

    def finalize_batch_call(self, items: Sequence[tuple[str, int, dict[str, Any]]]) -> Any:
        """One call finalizing many receipt jobs: (job id, worker account address, Merkle receipt) each. Receipts
        of one signed batch share one signature check on chain."""
        batches: list[dict[str, Any]] = []
        index: dict[tuple[int, str], int] = {}
        payload = []
        for job_id, worker, receipt in items:
            key = (worker, str(receipt["root"]))
            if key not in index:
                index[key] = len(batches)
                batches.append(_batch(worker, receipt))
            payload.append({"batch": index[key], "job_id": _job(job_id), **_leaf(receipt)})
        return self.prepare("finalize_batch", batches, payload)

    def finalize_quorum_call(self, job_id: str, f: int, attestations: Sequence[tuple[int, dict[str, Any]]]) -> Any:
        """``attestations``: (signer account address, that worker's Merkle receipt for the job) each; the assigned
        worker's is among them (its signed price is paid) and 2f + 1 validators'."""
        return self.prepare("finalize_quorum", _job(job_id), f, [_attestation(a, rc) for a, rc in attestations])

    def refund_call(self, job_id: str) -> Any:
        return self.prepare("refund", _job(job_id))

    def report_invalid_compute_call(self, job_id: str, worker: int, receipt: dict[str, Any]) -> Any:
        """Report ``worker``'s signed quorum receipt of an output other than the finalized one (it is slashed)."""
        return self.prepare("report_invalid_compute", _job(job_id), u256_of(receipt["output_commitment"]),
                            _attestation(worker, receipt))


def _batch(worker: int, receipt: dict[str, Any]) -> dict[str, Any]:
    """The BatchSignature of a Merkle receipt (``ciro.receipts``, scheme stark-ecdsa-poseidon-merkle-v1)."""
    r, s = (int(x, 16) for x in receipt["signature"])
    return {"worker": worker, "root": int(receipt["root"], 16), "count": int(receipt["batch_size"]),
            "total": int(receipt["batch_total"]), "r": r, "s": s}


def _leaf(receipt: dict[str, Any]) -> dict[str, Any]:
    return {"timestamp_ms": int(receipt["timestamp_ms"]), "price": int(receipt["price"]),
            "leaf_index": int(receipt["leaf_index"]), "path": [int(x, 16) for x in receipt["path"]]}


def _attestation(worker: int, receipt: dict[str, Any]) -> dict[str, Any]:
    return {"batch": _batch(worker, receipt), **_leaf(receipt)}


def _job(job_id: str | int) -> int:
    return job_id if isinstance(job_id, int) else int(job_id, 16)
