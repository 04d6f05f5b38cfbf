"""The shared Starknet client: one account on one JSON-RPC endpoint (the local devnet, Sepolia, mainnet).

- Keys come from the Ciro key store (:class:`ciro.Identity`); the account is any SRC-6 account contract.
- Nonces: one lock per account; the nonce is read from the node once and then counted locally, so
  concurrent ``execute`` calls never race; a nonce error re-reads it and retries once.
- Transient RPC failures (connection errors, HTTP 5xx) are retried with back-off.
- Fees: each transaction is estimated first (``starknet_estimateFee``, validation included) and sent with resource
  bounds of ``AMOUNT_MARGIN`` x each estimated amount at ``PRICE_MARGIN`` x each estimated price, so its max fee
  is 3x the estimate; the node charges what it used at the block's prices. A transaction the contract would refuse
  fails at its estimate (nothing is sent). An account whose fee-token balance cannot cover the max fee gets
  :class:`InsufficientFeeError`, naming the account, its balance, the fee needed and how to fund it.
- A reverted transaction raises :class:`ContractRevertedError` with the contract's message decoded.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ..errors import ChainError, ContractRevertedError
from ..identity import Identity

__all__ = ["AMOUNT_MARGIN", "PRICE_MARGIN", "ChainClient", "InsufficientFeeError", "TxResult", "decode_revert",
           "fee_bounds"]

#: Margins over the fee estimate: max amount = AMOUNT_MARGIN x estimated amount (the state can change between the
#: estimate and the block), max price = PRICE_MARGIN x the estimate's price (gas prices move between blocks).
AMOUNT_MARGIN = Fraction(3, 2)
PRICE_MARGIN = 2
#: Starknet's error code for a sender whose balance is below the transaction's max fee.
INSUFFICIENT_ACCOUNT_BALANCE = 54


class InsufficientFeeError(ChainError):
    """The sending account's fee-token balance does not cover the transaction's max fee."""

    code = "insufficient_fee"
    http_status = 402

_FELT = re.compile(r"0x[0-9a-fA-F]{2,64}")
_HINTS = {
    "insufficient allowance": "approve the spender for at least the amount first",
    "insufficient balance": "the paying account needs more CIRO",
    "bad receipt signature": "the receipt was not signed by the worker's registered key",
    "no quorum": "fewer than 2f+1 registered validators signed the result",
    "too few validators": "the pool needs at least 3f+1 validators for that f",
    "not eligible": "the worker must be registered, staked to the minimum and not banned",
    "deadline": "the job's deadline decides what is allowed now",
}


def decode_revert(reason: str) -> str:
    """The readable part of a revert reason: Cairo short strings among the felts, else the raw text."""
    texts = []
    for m in _FELT.findall(reason or ""):
        raw = bytes.fromhex(m[2:].rjust(len(m[2:]) + len(m[2:]) % 2, "0"))
        if raw and all(32 <= b < 127 for b in raw) and len(raw) >= 4:
            texts.append(raw.decode())
    if texts:
        return "; ".join(dict.fromkeys(texts))
    quoted = re.findall(r"'([^']{3,})'", reason or "")
    return "; ".join(quoted) if quoted else (reason or "unknown reason").strip()[:300]


def _revert_error(reason: str, where: str) -> ContractRevertedError:
    text = decode_revert(reason)
    hint = next((h for k, h in _HINTS.items() if k in text.lower()), "check the arguments and the contract's state")
    return ContractRevertedError(f"{where} was refused by the contract: {text}. Fix: {hint}.",
                                 detail={"reason": text, "raw": (reason or "")[:2000]})


@dataclass(frozen=True)
class TxResult:
    tx_hash: int
    block_number: int | None
    #: Events as (from_address, keys, data).
    events: list[tuple[int, list[int], list[int]]] = field(default_factory=list)
    #: L2 gas the transaction used (Cairo steps and builtins, priced), as the node reports it.
    l2_gas: int = 0
    #: Fee charged (fri), in the fee token (STRK).
    fee: int = 0

    @property
    def tx_hex(self) -> str:
        return f"{self.tx_hash:#066x}"


def fee_bounds(estimate: Any) -> Any:
    """Resource bounds from a fee estimate (starknet-py ``EstimatedFee``) with the margins applied."""
    from starknet_py.net.client_models import ResourceBounds, ResourceBoundsMapping

    def bound(amount: int, price: int) -> Any:
        return ResourceBounds(max_amount=math.ceil(amount * AMOUNT_MARGIN), max_price_per_unit=price * PRICE_MARGIN)

    return ResourceBoundsMapping(l1_gas=bound(estimate.l1_gas_consumed, estimate.l1_gas_price),
                                 l1_data_gas=bound(estimate.l1_data_gas_consumed, estimate.l1_data_gas_price),
                                 l2_gas=bound(estimate.l2_gas_consumed, estimate.l2_gas_price))


def _strk(fri: int) -> str:
    return f"{fri / 10**18:.6f}".rstrip("0").rstrip(".")


def _transient(exc: BaseException) -> bool:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectionError | asyncio.TimeoutError):
        return True
    code = getattr(exc, "code", None)
    return isinstance(code, int) and 500 <= code < 600


class ChainClient:
    """An account on a Starknet node. Build with :meth:`connect` (reads the chain id)."""

    def __init__(self, node: Any, account: Any, *, retries: int = 3, poll_s: float = 0.05,
                 max_wait_s: float = 300.0) -> None:
        self.node = node
        self.account = account
        self.retries = retries
        self.poll_s = poll_s
        self.max_wait_s = max_wait_s
        self._lock = asyncio.Lock()
        self._nonce: int | None = None
        self._max_fee = 0  # of the last transaction estimated (under the lock: this account's only one in flight)

    @classmethod
    async def connect(cls, rpc_url: str, *, address: int, identity: Identity, **kw: Any) -> ChainClient:
        from starknet_py.net.account.account import Account
        from starknet_py.net.full_node_client import FullNodeClient

        from .fasthash import install
        from .signer import IdentitySigner

        install()  # starknet-py's Poseidon, from the Rust binding (class and transaction hashes)

        node = FullNodeClient(node_url=rpc_url)
        try:
            chain_id = await node.get_chain_id()
        except Exception as exc:
            raise ChainError(f"No Starknet node answers at {rpc_url} ({exc}). Start the local devnet (`ciro devnet`) "
                             "or set rpc_url to a running node.") from exc
        chain = int(chain_id, 16)
        account = Account(client=node, address=address, chain=chain, signer=IdentitySigner(identity, chain))
        return cls(node, account, **kw)

    @property
    def address(self) -> int:
        return int(self.account.address)

    async def _retry(self, fn: Any, *args: Any, **kw: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return await fn(*args, **kw)
            except Exception as exc:
                if attempt == self.retries or not _transient(exc):
                    raise
                await asyncio.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    async def now(self) -> int:
        """The chain's time as the next transaction will see it: the pre-confirmed block's timestamp (the latest
        block's can be old on a quiet chain), else the latest's."""
        from starknet_py.net.client_errors import ClientError

        try:
            block = await self.node.get_block(block_number="pre_confirmed")
        except (ClientError, ValueError, TypeError):
            block = await self.node.get_block(block_number="latest")
        return int(block.timestamp)

    def _bounds(self) -> Any:
        """Fixed, generous bounds (10^10 L2 gas at up to 10^12 fri: a max fee of ~10,000 STRK) for simulations
        only (bench/settlement.py's step count); sent transactions use :meth:`estimate_bounds`."""
        from starknet_py.net.client_models import ResourceBounds, ResourceBoundsMapping

        return ResourceBoundsMapping(l1_gas=ResourceBounds(max_amount=10**6, max_price_per_unit=10**12),
                                     l1_data_gas=ResourceBounds(max_amount=10**6, max_price_per_unit=10**12),
                                     l2_gas=ResourceBounds(max_amount=10**10, max_price_per_unit=10**12))

    async def estimate_bounds(self, draft: Any) -> Any:
        """Resource bounds for a transaction: ``draft`` (the same transaction, signed with any bounds) estimated by
        the node, with the margins applied. Records the max fee for :class:`InsufficientFeeError`."""
        estimate = await self._retry(self.account.estimate_fee, draft)
        bounds = fee_bounds(estimate)
        self._max_fee = sum(b.max_amount * b.max_price_per_unit
                            for b in (bounds.l1_gas, bounds.l1_data_gas, bounds.l2_gas))
        return bounds

    async def fee_balance(self, address: int | None = None) -> int:
        """The fee-token (STRK) balance of an account (this one by default), in fri."""
        from starknet_py.hash.selector import get_selector_from_name
        from starknet_py.net.client_models import Call

        from ..networks import STRK

        who = self.address if address is None else address
        low, high = await self._retry(self.node.call_contract, Call(int(STRK, 16),
                                                                   get_selector_from_name("balance_of"), [who]))
        return int(low) + (int(high) << 128)

    async def execute(self, calls: Sequence[Any], *, what: str = "The transaction") -> TxResult:
        """Send ``calls`` (starknet-py ``Call``s, e.g. prepared contract invocations) as ONE transaction from this
        account, with bounds from its fee estimate, and wait for its receipt."""
        from starknet_py.net.client_models import ResourceBoundsMapping

        if not calls:
            raise ChainError("Nothing to send: the transaction holds no calls.")

        async def send(nonce: int) -> int:
            draft = await self.account.sign_invoke_v3(list(calls), nonce=nonce,
                                                      resource_bounds=ResourceBoundsMapping.init_with_zeros())
            bounds = await self.estimate_bounds(draft)
            sent = await self.account.execute_v3(list(calls), nonce=nonce, resource_bounds=bounds)
            return int(sent.transaction_hash)

        return await self.submit(send, what=what)

    async def _fee_error(self, what: str) -> InsufficientFeeError:
        from ..networks import STRK

        try:
            balance: int | None = await self.fee_balance()
        except Exception:  # the node refused the balance read too: say what is known
            balance = None
        need = self._max_fee
        held = "an unknown amount" if balance is None else f"{balance} fri ({_strk(balance)} STRK)"
        return InsufficientFeeError(
            f"{what} was refused: the account {self.address:#x} holds {held} of the fee token (STRK, {STRK}) and "
            f"the transaction's max fee is {need} fri ({_strk(need)} STRK: the estimate with {float(AMOUNT_MARGIN)}x "
            f"gas and {PRICE_MARGIN}x price margins). Fix: send STRK to {self.address:#x} (on the local devnet: "
            f"`ciro fund` with the account's key, or the devnet_mint RPC).",
            detail={"account": hex(self.address), "balance": None if balance is None else str(balance),
                    "max_fee": str(need), "fee_token": STRK})

    async def submit(self, send: Callable[[int], Awaitable[int]], *, what: str) -> TxResult:
        """Run ``send(nonce) -> tx hash`` under this account's nonce lock, then wait for the receipt."""
        from starknet_py.net.client_errors import ClientError

        async with self._lock:
            for attempt in range(2):
                if self._nonce is None:
                    self._nonce = int(await self._retry(self.account.get_nonce))
                try:
                    tx_hash = await self._retry(send, self._nonce)
                except ClientError as exc:
                    text = f"{exc.message} {exc.data or ''}"
                    self._nonce = None  # whatever happened, read it again next time
                    if exc.code == INSUFFICIENT_ACCOUNT_BALANCE:
                        raise await self._fee_error(what) from exc
                    if "nonce" in text.lower() and attempt == 0:
                        continue
                    raise _revert_error(text, what) from exc
                self._nonce += 1
                break
        return await self.wait(tx_hash, what=what)

    async def wait(self, tx_hash: int, *, what: str = "The transaction") -> TxResult:
        from starknet_py.net.client_errors import ClientError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while True:
            try:
                receipt = await self.node.get_transaction_receipt(tx_hash)
                break
            except ClientError:
                if loop.time() > deadline:
                    raise ChainError(f"Transaction {tx_hash:#x} has no receipt after {self.max_wait_s:.0f}s. Check "
                                     "the node, then look the hash up again.") from None
                await asyncio.sleep(self.poll_s)
        status = getattr(receipt.execution_status, "value", str(receipt.execution_status))
        if str(status).upper() == "REVERTED":
            raise _revert_error(receipt.revert_reason or "", what)
        resources = getattr(receipt, "execution_resources", None)
        l2_gas = int(getattr(resources, "l2_gas", 0) or 0)
        fee = getattr(getattr(receipt, "actual_fee", None), "amount", 0) or 0
        events = [(int(e.from_address), [int(k) for k in e.keys], [int(d) for d in e.data]) for e in receipt.events]
        return TxResult(tx_hash=tx_hash, block_number=getattr(receipt, "block_number", None), events=events,
                        l2_gas=l2_gas, fee=int(fee))
