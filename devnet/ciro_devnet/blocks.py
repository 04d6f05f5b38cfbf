"""The chain's records: blocks (one per transaction) and the transactions included in them, as saved and served."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .state import StateDiff

__all__ = ["Block", "TxRecord"]


@dataclass
class Block:
    number: int
    hash: int
    parent_hash: int
    timestamp: int
    tx_hashes: list[int]
    state_diff: StateDiff

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "hash": hex(self.hash),
            "parent_hash": hex(self.parent_hash),
            "timestamp": self.timestamp,
            "tx_hashes": [hex(h) for h in self.tx_hashes],
            "state_diff": self.state_diff.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Block:
        return cls(
            number=data["number"],
            hash=int(data["hash"], 16),
            parent_hash=int(data["parent_hash"], 16),
            timestamp=data["timestamp"],
            tx_hashes=[int(h, 16) for h in data["tx_hashes"]],
            state_diff=StateDiff.from_json(data["state_diff"]),
        )


@dataclass
class TxRecord:
    """An included transaction: its RPC form and its receipt (without the block fields)."""

    hash: int
    block_number: int
    index: int
    tx: dict[str, Any]
    receipt: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"block_number": self.block_number, "index": self.index, "tx": self.tx, "receipt": self.receipt}

    @classmethod
    def from_json(cls, tx_hash: str, data: dict[str, Any]) -> TxRecord:
        return cls(int(tx_hash, 16), data["block_number"], data["index"], data["tx"], data["receipt"])
