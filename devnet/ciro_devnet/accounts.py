"""Predeployed accounts: deterministic Stark keys derived from a seed, CiroAccount instances at genesis."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

EC_ORDER = 0x800000000000010FFFFFFFFFFFFFFFFB781126DCAE7B2321E66A241ADC64D2F


@dataclass(frozen=True)
class PredeployedAccount:
    """A funded (fees are not charged) CiroAccount the devnet deploys at genesis."""

    address: int
    private_key: int
    public_key: int

    def to_json(self) -> dict[str, Any]:
        return {
            "address": hex(self.address),
            "private_key": hex(self.private_key),
            "public_key": hex(self.public_key),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PredeployedAccount:
        return cls(int(data["address"], 16), int(data["private_key"], 16), int(data["public_key"], 16))


def derive_private_key(seed: int, index: int) -> int:
    """The index-th private key of a seed: sha256("ciro-devnet:<seed>:<index>") mapped into [1, EC_ORDER - 1]."""
    digest = hashlib.sha256(f"ciro-devnet:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest, "big") % (EC_ORDER - 1) + 1


def public_key_of(private_key: int) -> int:
    from starknet_py.hash.utils import private_to_stark_key

    return int(private_to_stark_key(private_key))


def account_address(class_hash: int, public_key: int) -> int:
    """Where a CiroAccount with this key lives: salt = public key, deployed from zero (as DEPLOY_ACCOUNT does)."""
    from starknet_py.hash.address import compute_address

    return int(compute_address(salt=public_key, class_hash=class_hash, constructor_calldata=[public_key]))


def derive_accounts(seed: int, count: int, class_hash: int) -> list[PredeployedAccount]:
    accounts = []
    for index in range(count):
        private_key = derive_private_key(seed, index)
        public_key = public_key_of(private_key)
        accounts.append(PredeployedAccount(account_address(class_hash, public_key), private_key, public_key))
    return accounts
