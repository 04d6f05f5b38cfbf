"""The shared Starknet client: one account on one JSON-RPC endpoint (the local devnet, Sepolia, mainnet).

- Keys come from the Ciro key store (:class:`ciro.Identity`); the account is any SRC-6 account contract.
- Nonces: one lock per account; the nonce is read from the node once and then counted locally, so
  concurrent ``execute`` calls never race; a nonce error re-reads it and retries once.
- Transient RPC failures (connection errors, HTTP 5xx) are retried with back-off.
- A reverted transaction raises :class:`ContractRevertedError` with the contract's message decoded.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ChainError, ContractRevertedError
from ..identity import Identity

__all__ = ["ChainClient", "TxResult", "decode_revert"]

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
    #: Fee charged (fri), 0 where the node charges none.
    fee: int = 0

    @property
    def tx_hex(self) -> str:
        return f"{self.tx_hash:#066x}"


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

    @classmethod
    async def connect(cls, rpc_url: str, *, address: int, identity: Identity, **kw: Any) -> ChainClient:
        from starknet_py.net.account.account import Account
        from starknet_py.net.full_node_client import FullNodeClient
        from starknet_py.net.signer.key_pair import KeyPair

        node = FullNodeClient(node_url=rpc_url)
        try:
            chain_id = await node.get_chain_id()
        except Exception as exc:
            raise ChainError(f"No Starknet node answers at {rpc_url} ({exc}). Start the local devnet (`ciro devnet`) "
                             "or set rpc_url to a running node.") from exc
        account = Account(client=node, address=address, chain=int(chain_id, 16),
                          key_pair=KeyPair(private_key=identity.private_key, public_key=identity.public_key))
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
        from starknet_py.net.client_models import ResourceBounds, ResourceBoundsMapping

        # Generous limits: the node charges what the transaction used, never more than these.
        return ResourceBoundsMapping(l1_gas=ResourceBounds(max_amount=10**6, max_price_per_unit=10**12),
                                     l1_data_gas=ResourceBounds(max_amount=10**6, max_price_per_unit=10**12),
                                     l2_gas=ResourceBounds(max_amount=10**10, max_price_per_unit=10**12))

    async def execute(self, calls: Sequence[Any], *, what: str = "The transaction") -> TxResult:
        """Send ``calls`` (starknet-py ``Call``s, e.g. prepared contract invocations) as ONE transaction from this
        account and wait for its receipt."""
        if not calls:
            raise ChainError("Nothing to send: the transaction holds no calls.")

        async def send(nonce: int) -> int:
            sent = await self.account.execute_v3(list(calls), nonce=nonce, resource_bounds=self._bounds())
            return int(sent.transaction_hash)

        return await self.submit(send, what=what)

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
