"""The chain's state as plain Python data: storage, nonces, deployed contracts and declared classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .classes import ContractClassArtifact


@dataclass
class StateDiff:
    """What one transaction changed."""

    storage: dict[tuple[int, int], int] = field(default_factory=dict)  # (address, key) -> value
    nonces: dict[int, int] = field(default_factory=dict)  # address -> new nonce
    deployed: dict[int, int] = field(default_factory=dict)  # address -> class hash
    declared: dict[int, int] = field(default_factory=dict)  # class hash -> compiled class hash

    def __len__(self) -> int:
        return len(self.storage) + len(self.nonces) + len(self.deployed) + len(self.declared)

    def to_rpc(self) -> dict[str, Any]:
        """The `state_diff` object of `starknet_getStateUpdate`."""
        by_address: dict[int, list[dict[str, str]]] = {}
        for (address, key), value in sorted(self.storage.items()):
            by_address.setdefault(address, []).append({"key": hex(key), "value": hex(value)})
        return {
            "storage_diffs": [{"address": hex(a), "storage_entries": e} for a, e in by_address.items()],
            "deprecated_declared_classes": [],
            "declared_classes": [
                {"class_hash": hex(c), "compiled_class_hash": hex(cc)} for c, cc in self.declared.items()
            ],
            "deployed_contracts": [{"address": hex(a), "class_hash": hex(c)} for a, c in self.deployed.items()],
            "replaced_classes": [],
            "nonces": [{"contract_address": hex(a), "nonce": hex(n)} for a, n in self.nonces.items()],
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "storage": [[hex(a), hex(k), hex(v)] for (a, k), v in self.storage.items()],
            "nonces": {hex(a): hex(n) for a, n in self.nonces.items()},
            "deployed": {hex(a): hex(c) for a, c in self.deployed.items()},
            "declared": {hex(c): hex(cc) for c, cc in self.declared.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StateDiff:
        return cls(
            storage={(int(a, 16), int(k, 16)): int(v, 16) for a, k, v in data["storage"]},
            nonces={int(a, 16): int(n, 16) for a, n in data["nonces"].items()},
            deployed={int(a, 16): int(c, 16) for a, c in data["deployed"].items()},
            declared={int(c, 16): int(cc, 16) for c, cc in data["declared"].items()},
        )


@dataclass
class StateStore:
    """The committed state of the devnet."""

    storage: dict[int, dict[int, int]] = field(default_factory=dict)
    nonces: dict[int, int] = field(default_factory=dict)
    contracts: dict[int, int] = field(default_factory=dict)  # address -> class hash
    compiled_class_hashes: dict[int, int] = field(default_factory=dict)  # class hash -> compiled class hash
    classes: dict[int, ContractClassArtifact] = field(default_factory=dict)  # class hash -> artifact

    def storage_at(self, address: int, key: int) -> int:
        return self.storage.get(address, {}).get(key, 0)

    def nonce(self, address: int) -> int:
        return self.nonces.get(address, 0)

    def class_hash_at(self, address: int) -> int:
        return self.contracts.get(address, 0)

    def is_declared(self, class_hash: int) -> bool:
        return class_hash in self.compiled_class_hashes

    def add_class(self, artifact: ContractClassArtifact) -> None:
        self.classes[artifact.class_hash] = artifact

    def artifact_by_compiled_hash(self, compiled_class_hash: int) -> ContractClassArtifact | None:
        """The class with this compiled class hash, declared or about to be (a declare in flight)."""
        for artifact in self.classes.values():
            if artifact.compiled_class_hash == compiled_class_hash:
                return artifact
        return None

    def apply(self, diff: StateDiff) -> None:
        for (address, key), value in diff.storage.items():
            self.storage.setdefault(address, {})[key] = value
        self.nonces.update(diff.nonces)
        self.contracts.update(diff.deployed)
        self.compiled_class_hashes.update(diff.declared)

    def to_json(self) -> dict[str, Any]:
        """Everything but the class artifacts (saved once each, on their own)."""
        return {
            "storage": {hex(a): {hex(k): hex(v) for k, v in s.items()} for a, s in self.storage.items()},
            "nonces": {hex(a): hex(n) for a, n in self.nonces.items()},
            "contracts": {hex(a): hex(c) for a, c in self.contracts.items()},
            "compiled_class_hashes": {hex(c): hex(cc) for c, cc in self.compiled_class_hashes.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], classes: dict[int, ContractClassArtifact]) -> StateStore:
        return cls(
            storage={int(a, 16): {int(k, 16): int(v, 16) for k, v in s.items()} for a, s in data["storage"].items()},
            nonces={int(a, 16): int(n, 16) for a, n in data["nonces"].items()},
            contracts={int(a, 16): int(c, 16) for a, c in data["contracts"].items()},
            compiled_class_hashes={int(c, 16): int(cc, 16) for c, cc in data["compiled_class_hashes"].items()},
            classes=classes,
        )
