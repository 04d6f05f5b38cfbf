"""Reads of the chain (the RPC's getters): blocks by id, state as of a block, transactions, events."""

from __future__ import annotations

from typing import Any

from .blocks import Block, TxRecord
from .classes import ContractClassArtifact
from .errors import (
    BLOCK_NOT_FOUND,
    CLASS_HASH_NOT_FOUND,
    CONTRACT_NOT_FOUND,
    INVALID_CONTINUATION_TOKEN,
    INVALID_PARAMS,
    INVALID_TXN_INDEX,
    PAGE_SIZE_TOO_BIG,
    TXN_HASH_NOT_FOUND,
    RpcError,
)
from .felts import parse_felt
from .state import StateStore

__all__ = ["MAX_EVENTS_CHUNK", "ChainQueries"]

MAX_EVENTS_CHUNK = 1000


class ChainQueries:
    """The read side of `Devnet` (which holds these attributes): nothing here changes the chain."""

    blocks: list[Block]
    txs: dict[int, TxRecord]
    store: StateStore

    @property
    def latest(self) -> Block:
        return self.blocks[-1]

    def block_number_of(self, block_id: Any) -> int | None:
        """The block a BLOCK_ID names; None for the pre-confirmed (pending) block."""
        if block_id == "pre_confirmed":
            return None
        if block_id in ("latest", "l1_accepted"):
            return self.latest.number
        if isinstance(block_id, dict) and "block_number" in block_id:
            number = block_id["block_number"]
            if not isinstance(number, int) or not 0 <= number < len(self.blocks):
                raise RpcError(BLOCK_NOT_FOUND)
            return number
        if isinstance(block_id, dict) and "block_hash" in block_id:
            wanted = parse_felt(block_id["block_hash"])
            for block in self.blocks:
                if block.hash == wanted:
                    return block.number
            raise RpcError(BLOCK_NOT_FOUND)
        raise RpcError(INVALID_PARAMS, data=f"bad block id {block_id!r}")

    def _historical(self, block_id: Any, pick: Any, current: int) -> int:
        """A state value as of a block: the latest write at or before it in the block diffs."""
        number = self.block_number_of(block_id)
        if number is None or number == self.latest.number:
            return current
        for block in reversed(self.blocks[: number + 1]):
            value = pick(block.state_diff)
            if value is not None:
                return int(value)
        return 0

    def storage_at(self, address: int, key: int, block_id: Any) -> int:
        self._require_contract(address, block_id)
        return self._historical(block_id, lambda d: d.storage.get((address, key)), self.store.storage_at(address, key))

    def nonce_at(self, address: int, block_id: Any) -> int:
        self._require_contract(address, block_id)
        return self._historical(block_id, lambda d: d.nonces.get(address), self.store.nonce(address))

    def class_hash_at(self, address: int, block_id: Any) -> int:
        class_hash = self._historical(block_id, lambda d: d.deployed.get(address), self.store.class_hash_at(address))
        if class_hash == 0:
            raise RpcError(CONTRACT_NOT_FOUND)
        return class_hash

    def _require_contract(self, address: int, block_id: Any) -> None:
        self.class_hash_at(address, block_id)

    def contract_class(self, class_hash: int) -> ContractClassArtifact:
        if not self.store.is_declared(class_hash):
            raise RpcError(CLASS_HASH_NOT_FOUND)
        return self.store.classes[class_hash]

    def transaction(self, tx_hash: int) -> TxRecord:
        record = self.txs.get(tx_hash)
        if record is None:
            raise RpcError(TXN_HASH_NOT_FOUND)
        return record

    def transaction_by_index(self, block_id: Any, index: int) -> TxRecord:
        number = self.block_number_of(block_id)
        hashes = self.blocks[number].tx_hashes if number is not None else []
        if not 0 <= index < len(hashes):
            raise RpcError(INVALID_TXN_INDEX)
        return self.txs[hashes[index]]

    def events(self, query: dict[str, Any]) -> dict[str, Any]:
        """`starknet_getEvents`: events of accepted blocks matching the filter, a chunk at a time."""
        chunk_size = int(query.get("chunk_size", 0))
        if chunk_size <= 0:
            raise RpcError(INVALID_PARAMS, data="chunk_size must be positive")
        if chunk_size > MAX_EVENTS_CHUNK:
            raise RpcError(PAGE_SIZE_TOO_BIG)
        first = self._range_end(query.get("from_block"), default=0)
        last = self._range_end(query.get("to_block"), default=self.latest.number)
        address = query.get("address")
        addresses = {parse_felt(a) for a in (address if isinstance(address, list) else [address])} if address else None
        keys = [{parse_felt(k) for k in position} for position in query.get("keys", [])]
        token = query.get("continuation_token")
        try:
            skip = int(token) if token is not None else 0
        except ValueError as exc:
            raise RpcError(INVALID_CONTINUATION_TOKEN) from exc
        if skip < 0:
            raise RpcError(INVALID_CONTINUATION_TOKEN)
        matched: list[dict[str, Any]] = []
        seen = 0
        for block in self.blocks[first : last + 1]:
            for index, tx_hash in enumerate(block.tx_hashes):
                for event_index, event in enumerate(self.txs[tx_hash].receipt["events"]):
                    if not _event_matches(event, addresses, keys):
                        continue
                    seen += 1
                    if seen <= skip:
                        continue
                    if len(matched) == chunk_size:
                        return {"events": matched, "continuation_token": str(skip + chunk_size)}
                    matched.append(
                        {
                            **event,
                            "block_hash": hex(block.hash),
                            "block_number": block.number,
                            "transaction_hash": hex(tx_hash),
                            "transaction_index": index,
                            "event_index": event_index,
                        }
                    )
        return {"events": matched}

    def _range_end(self, block_id: Any, default: int) -> int:
        if block_id is None:
            return default
        number = self.block_number_of(block_id)
        return self.latest.number if number is None else number


def _event_matches(event: dict[str, Any], addresses: set[int] | None, keys: list[set[int]]) -> bool:
    if addresses is not None and int(event["from_address"], 16) not in addresses:
        return False
    event_keys = [int(k, 16) for k in event["keys"]]
    for position, allowed in enumerate(keys):
        if not allowed:
            continue
        if position >= len(event_keys) or event_keys[position] not in allowed:
            return False
    return True
