"""The transaction signer ChainClient gives starknet-py's Account: Stark ECDSA through ``ciro.identity`` (Rust).

starknet-py's own ``StarkCurveSigner`` signs through crypto-cpp-py, which took ~100 ms a signature on this
machine (two a transaction: the fee estimate's and the one sent); this signer takes well under a millisecond and
produces signatures that the same account contract verifies (tests/test_chain_fees.py sends with it).
"""

from __future__ import annotations

from starknet_py.net.models.transaction import AccountTransaction
from starknet_py.net.signer.base_signer import BaseSigner
from starknet_py.utils.typed_data import TypedData

from ..identity import Identity

__all__ = ["IdentitySigner"]


class IdentitySigner(BaseSigner):
    def __init__(self, identity: Identity, chain_id: int) -> None:
        self.identity = identity
        self.chain_id = chain_id

    @property
    def public_key(self) -> int:
        return self.identity.public_key

    def sign_transaction(self, transaction: AccountTransaction) -> list[int]:
        return list(self.identity.sign(transaction.calculate_hash(self.chain_id)))

    def sign_message(self, typed_data: TypedData, account_address: int) -> list[int]:
        return list(self.identity.sign(typed_data.message_hash(account_address)))
