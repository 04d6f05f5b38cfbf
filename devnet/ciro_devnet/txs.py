"""Broadcasted v3 transactions (INVOKE, DECLARE, DEPLOY_ACCOUNT): parsing and hashing, as starknet-py signs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .classes import fast_hashes, sierra_class_hash, sierra_rpc_form
from .errors import INVALID_PARAMS, UNSUPPORTED_TX_VERSION, RpcError
from .felts import parse_felt, parse_felts

QUERY_VERSION_BASE = 2**128
RESOURCES = ("l1_gas", "l2_gas", "l1_data_gas")
TX_TYPES = ("INVOKE", "DECLARE", "DEPLOY_ACCOUNT")


@dataclass(frozen=True)
class ResourceBound:
    max_amount: int
    max_price_per_unit: int


@dataclass
class ParsedTx:
    """A v3 account transaction, validated in form, with the hash its signature covers."""

    type: str
    version: int
    hash: int
    sender: int  # the sender (INVOKE, DECLARE) or the account being deployed (DEPLOY_ACCOUNT)
    nonce: int
    signature: list[int]
    resource_bounds: dict[str, ResourceBound]
    tip: int = 0
    paymaster_data: list[int] = field(default_factory=list)
    nonce_data_availability_mode: str = "L1"
    fee_data_availability_mode: str = "L1"
    account_deployment_data: list[int] = field(default_factory=list)
    calldata: list[int] = field(default_factory=list)  # INVOKE
    proof_facts: list[int] | None = None  # INVOKE
    class_hash: int = 0  # DECLARE, DEPLOY_ACCOUNT
    compiled_class_hash: int = 0  # DECLARE
    sierra: dict[str, Any] | None = None  # DECLARE: the class in RPC form
    contract_address_salt: int = 0  # DEPLOY_ACCOUNT
    constructor_calldata: list[int] = field(default_factory=list)  # DEPLOY_ACCOUNT

    @property
    def is_query(self) -> bool:
        """A version only fee estimation and simulation accept (2^128 + 3): signed, never included."""
        return self.version >= QUERY_VERSION_BASE

    def to_rpc(self) -> dict[str, Any]:
        """The transaction as `starknet_getTransactionByHash` returns it."""
        data: dict[str, Any] = {
            "transaction_hash": hex(self.hash),
            "type": self.type,
            "version": hex(self.version),
            "signature": [hex(s) for s in self.signature],
            "nonce": hex(self.nonce),
            "resource_bounds": {
                name: {"max_amount": hex(b.max_amount), "max_price_per_unit": hex(b.max_price_per_unit)}
                for name, b in self.resource_bounds.items()
            },
            "tip": hex(self.tip),
            "paymaster_data": [hex(p) for p in self.paymaster_data],
            "nonce_data_availability_mode": self.nonce_data_availability_mode,
            "fee_data_availability_mode": self.fee_data_availability_mode,
        }
        if self.type == "INVOKE":
            data["sender_address"] = hex(self.sender)
            data["calldata"] = [hex(c) for c in self.calldata]
            data["account_deployment_data"] = [hex(c) for c in self.account_deployment_data]
            if self.proof_facts:
                data["proof_facts"] = [hex(p) for p in self.proof_facts]
        elif self.type == "DECLARE":
            data["sender_address"] = hex(self.sender)
            data["class_hash"] = hex(self.class_hash)
            data["compiled_class_hash"] = hex(self.compiled_class_hash)
            data["account_deployment_data"] = [hex(c) for c in self.account_deployment_data]
        else:
            data["class_hash"] = hex(self.class_hash)
            data["contract_address_salt"] = hex(self.contract_address_salt)
            data["constructor_calldata"] = [hex(c) for c in self.constructor_calldata]
        return data


def parse_transaction(data: Any, chain_id: int, expected_type: str | None = None) -> ParsedTx:
    """Parse a BROADCASTED_TXN object and compute its hash; raises RpcError on a malformed or unsupported one."""
    if not isinstance(data, dict):
        raise RpcError(INVALID_PARAMS, data="a transaction must be an object")
    try:
        return _parse(data, chain_id, expected_type)
    except RpcError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise RpcError(INVALID_PARAMS, data=f"malformed transaction: {exc!r}") from exc


def _parse(data: dict[str, Any], chain_id: int, expected_type: str | None) -> ParsedTx:
    tx_type = data.get("type")
    if tx_type == "INVOKE_FUNCTION":
        tx_type = "INVOKE"
    if tx_type not in TX_TYPES or (expected_type is not None and tx_type != expected_type):
        raise RpcError(INVALID_PARAMS, data=f"unexpected transaction type {tx_type!r}")
    version = parse_felt(data["version"])
    if version not in (3, QUERY_VERSION_BASE + 3):
        raise RpcError(UNSUPPORTED_TX_VERSION, data=f"only v3 transactions are supported, got version {hex(version)}")
    bounds = {
        name: ResourceBound(
            parse_felt(data["resource_bounds"][name]["max_amount"]),
            parse_felt(data["resource_bounds"][name]["max_price_per_unit"]),
        )
        for name in RESOURCES
    }
    for mode in ("nonce_data_availability_mode", "fee_data_availability_mode"):
        if data.get(mode, "L1") not in ("L1", "L2"):
            raise ValueError(f"{mode} must be L1 or L2")
    tx = ParsedTx(
        type=tx_type,
        version=version,
        hash=0,
        sender=0,
        nonce=parse_felt(data["nonce"]),
        signature=parse_felts(data.get("signature", [])),
        resource_bounds=bounds,
        tip=parse_felt(data.get("tip", "0x0")),
        paymaster_data=parse_felts(data.get("paymaster_data", [])),
        nonce_data_availability_mode=data.get("nonce_data_availability_mode", "L1"),
        fee_data_availability_mode=data.get("fee_data_availability_mode", "L1"),
        account_deployment_data=parse_felts(data.get("account_deployment_data", [])),
    )
    if tx_type == "INVOKE":
        tx.sender = parse_felt(data["sender_address"])
        tx.calldata = parse_felts(data["calldata"])
        if data.get("proof_facts"):
            tx.proof_facts = parse_felts(data["proof_facts"])
    elif tx_type == "DECLARE":
        tx.sender = parse_felt(data["sender_address"])
        tx.compiled_class_hash = parse_felt(data["compiled_class_hash"])
        tx.sierra = sierra_rpc_form(data["contract_class"])
        tx.class_hash = sierra_class_hash(tx.sierra)
    else:
        from starknet_py.hash.address import compute_address

        tx.class_hash = parse_felt(data["class_hash"])
        tx.contract_address_salt = parse_felt(data["contract_address_salt"])
        tx.constructor_calldata = parse_felts(data["constructor_calldata"])
        tx.sender = int(
            compute_address(
                salt=tx.contract_address_salt, class_hash=tx.class_hash, constructor_calldata=tx.constructor_calldata
            )
        )
    tx.hash = transaction_hash(tx, chain_id)
    return tx


def transaction_hash(tx: ParsedTx, chain_id: int) -> int:
    """The v3 transaction hash, computed with starknet-py's own hash functions."""
    fast_hashes()
    from starknet_py.hash.transaction import (
        CommonTransactionV3Fields,
        TransactionHashPrefix,
        compute_declare_v3_transaction_hash,
        compute_deploy_account_v3_transaction_hash,
        compute_invoke_v3_transaction_hash,
    )
    from starknet_py.net.client_models import DAMode, ResourceBounds, ResourceBoundsMapping

    prefix = {
        "INVOKE": TransactionHashPrefix.INVOKE,
        "DECLARE": TransactionHashPrefix.DECLARE,
        "DEPLOY_ACCOUNT": TransactionHashPrefix.DEPLOY_ACCOUNT,
    }[tx.type]
    bounds = {name: ResourceBounds(b.max_amount, b.max_price_per_unit) for name, b in tx.resource_bounds.items()}
    common = CommonTransactionV3Fields(
        tx_prefix=prefix,
        version=tx.version,
        address=tx.sender,
        tip=tx.tip,
        resource_bounds=ResourceBoundsMapping(**bounds),
        paymaster_data=tx.paymaster_data,
        chain_id=chain_id,
        nonce=tx.nonce,
        nonce_data_availability_mode=DAMode[tx.nonce_data_availability_mode],
        fee_data_availability_mode=DAMode[tx.fee_data_availability_mode],
    )
    if tx.type == "INVOKE":
        return int(
            compute_invoke_v3_transaction_hash(
                account_deployment_data=tx.account_deployment_data,
                calldata=tx.calldata,
                common_fields=common,
                proof_facts=tx.proof_facts,
            )
        )
    if tx.type == "DECLARE":
        return int(
            compute_declare_v3_transaction_hash(
                class_hash=tx.class_hash,
                account_deployment_data=tx.account_deployment_data,
                compiled_class_hash=tx.compiled_class_hash,
                common_fields=common,
            )
        )
    return int(
        compute_deploy_account_v3_transaction_hash(
            class_hash=tx.class_hash,
            constructor_calldata=tx.constructor_calldata,
            contract_address_salt=tx.contract_address_salt,
            common_fields=common,
        )
    )
