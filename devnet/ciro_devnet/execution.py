"""Executing one transaction on the VM: its validation (nonce, the account's `__validate*__`), its execution, the
gas and fee it used, the fee's payment in the fee token (`fee_recipient`), and the outcome a receipt or a trace is
made of. Nothing here keeps state: `Devnet` includes an outcome in a block, or (`simulate`, `estimate_fee`) drops it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import fees, feetoken
from .classes import ContractClassArtifact
from .errors import (
    CLASS_ALREADY_DECLARED,
    CLASS_HASH_NOT_FOUND,
    INSUFFICIENT_RESOURCES_FOR_VALIDATE,
    INVALID_TRANSACTION_NONCE,
    VALIDATION_FAILURE,
    RpcError,
)
from .felts import encode_short_string
from .state import StateDiff
from .txs import ParsedTx

if TYPE_CHECKING:
    from .vm import CallOutcome, Execution

__all__ = ["TxOutcome", "check_bounds_prices", "execute", "receipt"]

VALID = encode_short_string("VALID")


def _selector(name: str) -> int:
    from starknet_py.hash.selector import get_selector_from_name

    return int(get_selector_from_name(name))


@dataclass
class TxOutcome:
    """A transaction that passed validation: what its receipt says."""

    tx: ParsedTx
    reverted: bool
    revert_reason: str | None
    events: list[Any]  # vm.Event
    gas: fees.GasUsage
    fee: int = 0  # fri: what the sender paid (charged), or the estimate's fee (simulations charge nothing)
    contract_address: int | None = None  # DEPLOY_ACCOUNT
    artifact: ContractClassArtifact | None = None  # DECLARE
    state_diff: StateDiff = field(default_factory=StateDiff)
    validate_trace: dict[str, Any] | None = None
    execute_trace: dict[str, Any] | None = None  # __execute__ (INVOKE) or the constructor (DEPLOY_ACCOUNT)
    resources: Any = None  # vm.Resources: Cairo steps, builtins and syscalls of validation and execution

    def trace(self) -> dict[str, Any]:
        """The TRANSACTION_TRACE of `starknet_simulateTransactions`."""
        trace: dict[str, Any] = {
            "type": self.tx.type,
            "execution_resources": self.gas.to_resources(),
            "state_diff": self.state_diff.to_rpc(),
        }
        if self.validate_trace is not None:
            trace["validate_invocation"] = self.validate_trace
        if self.tx.type == "INVOKE":
            if self.reverted or self.execute_trace is None:
                trace["execute_invocation"] = {"revert_reason": self.revert_reason or "reverted"}
            else:
                trace["execute_invocation"] = self.execute_trace
        elif self.tx.type == "DEPLOY_ACCOUNT":
            trace["constructor_invocation"] = self.execute_trace
        return trace


def check_bounds_prices(tx: ParsedTx) -> None:
    """Refuse a transaction whose resource bounds are all zero or offer less than the devnet's gas prices."""
    bounds = tx.resource_bounds
    if all(b.max_amount == 0 for b in bounds.values()):
        raise RpcError(INSUFFICIENT_RESOURCES_FOR_VALIDATE, data="all resource bounds are zero")
    for name, price in fees.PRICES.items():
        if bounds[name].max_amount > 0 and bounds[name].max_price_per_unit < price:
            raise RpcError(
                INSUFFICIENT_RESOURCES_FOR_VALIDATE,
                data=f"max price per unit of {name} {bounds[name].max_price_per_unit} is below its price {price}",
            )


def execute(
    ex: Execution,
    tx: ParsedTx,
    artifact_for: Callable[[ParsedTx], ContractClassArtifact],
    *,
    validate: bool,
    enforce_bounds: bool,
    fee_recipient: int | None = None,
) -> TxOutcome:
    """Run a transaction on `ex`, keeping its writes there. Raises RpcError where it would be rejected.
    `artifact_for` gives a DECLARE's class (compiled here, its compiled class hash checked against the tx's).
    With `enforce_bounds`, a transaction that used more of a resource than its bound allows reverts (and pays the
    whole bound of it); with `fee_recipient` (the sequencer) the fee is moved there in the fee token. The sender's
    balance must cover the max fee before (`feetoken.check_balance`); a transaction that leaves less than the fee
    (it spent its STRK) reverts, and still pays."""
    from .vm import TxContext

    context = TxContext(
        account_address=tx.sender,
        transaction_hash=tx.hash,
        signature=tuple(tx.signature),
        nonce=tx.nonce,
        version=tx.version,
    )
    validation = dataclasses.replace(context, validate=True)
    step = ex.child()
    execution: CallOutcome | None = None
    artifact = None
    code_bytes = 0
    if tx.type == "DEPLOY_ACCOUNT":
        if step.compiled_class_hash(tx.class_hash) == 0:
            raise RpcError(CLASS_HASH_NOT_FOUND, data=hex(tx.class_hash))
        _check_nonce(step, tx)
        execution = step.deploy(tx.sender, tx.class_hash, tx.constructor_calldata, tx=context)
        if execution.failed:
            raise RpcError(VALIDATION_FAILURE, data=f"the account's constructor failed: {execution.error}")
        checks = []
        if validate:
            calldata = [tx.class_hash, tx.contract_address_salt, *tx.constructor_calldata]
            checks.append(step.call(tx.sender, _selector("__validate_deploy__"), calldata, tx=validation))
    else:
        if step.class_hash_at(tx.sender) == 0:
            raise RpcError(VALIDATION_FAILURE, data=f"no contract is deployed at the sender {hex(tx.sender)}")
        _check_nonce(step, tx)
        checks = []
        if tx.type == "DECLARE":
            if step.compiled_class_hash(tx.class_hash) != 0:
                raise RpcError(CLASS_ALREADY_DECLARED, data=hex(tx.class_hash))
            artifact = artifact_for(tx)
            code_bytes = 32 * (len(artifact.sierra["sierra_program"]) + len(artifact.casm["bytecode"]))
            code_bytes += len(artifact.sierra["abi"])
            if validate:
                checks.append(
                    step.call(tx.sender, _selector("__validate_declare__"), [tx.class_hash], tx=validation)
                )
        elif validate:
            checks.append(step.call(tx.sender, _selector("__validate__"), tx.calldata, tx=validation))
    for check in checks:
        if check.failed:
            raise RpcError(VALIDATION_FAILURE, data=check.error)
        if check.retdata != [VALID]:
            raise RpcError(
                VALIDATION_FAILURE, data=f"the account's validation returned {check.retdata}, not 'VALID'"
            )
    step.increment_nonce(tx.sender)
    ex.merge(step)

    reverted, reason, events = False, None, list(execution.events) if execution else []
    work = ex.child()
    if tx.type == "INVOKE":
        execution = work.call(tx.sender, _selector("__execute__"), tx.calldata, tx=context)
        reverted, reason, events = execution.failed, execution.error, execution.events
    elif tx.type == "DECLARE":
        assert artifact is not None
        work.declare(artifact.class_hash, artifact.compiled_class_hash)
    resources = sum((c.resources for c in checks), execution.resources if execution else _empty_resources())
    diff = ex.diff() if reverted else _merged_diff(ex, work)
    gas = fees.gas_usage(
        tx_type={"INVOKE": "INVOKE_FUNCTION"}.get(tx.type, tx.type),
        n_steps=resources.n_steps,
        builtins=resources.builtins,
        syscalls=resources.syscalls,
        calldata_length=len(tx.calldata) + len(tx.constructor_calldata),
        signature_length=len(tx.signature),
        events=[] if reverted else [(len(e.keys), len(e.data)) for e in events],
        state_diff=diff,
        code_bytes=code_bytes,
    )
    if not reverted and enforce_bounds:
        reason = _bounds_shortfall(tx, gas)
        reverted = reason is not None
    fee = fees.charged_fee(gas, tx.resource_bounds) if enforce_bounds else gas.fee
    if not reverted and fee_recipient is not None and feetoken.balance(work, tx.sender) < fee:
        reverted = True
        reason = (f"Insufficient fee token balance after execution: {feetoken.balance(work, tx.sender)} fri left, "
                  f"the fee is {fee} fri.")
    if reverted:
        events = []
    else:
        ex.merge(work)
    if fee_recipient is not None:
        feetoken.transfer_fee(ex, tx.sender, fee_recipient, fee)
    return TxOutcome(
        tx=tx,
        reverted=reverted,
        revert_reason=reason,
        events=events,
        gas=gas,
        fee=fee,
        contract_address=tx.sender if tx.type == "DEPLOY_ACCOUNT" else None,
        artifact=artifact,
        state_diff=ex.diff(),
        validate_trace=checks[0].trace if checks else None,
        execute_trace=execution.trace if execution is not None else None,
        resources=resources,
    )


def _check_nonce(ex: Execution, tx: ParsedTx) -> None:
    nonce = ex.nonce(tx.sender)
    if tx.nonce != nonce:
        raise RpcError(
            INVALID_TRANSACTION_NONCE,
            data=f"Invalid transaction nonce of contract at address {hex(tx.sender)}. "
            f"Account nonce: {hex(nonce)}; got: {hex(tx.nonce)}.",
        )


def receipt(outcome: TxOutcome) -> dict[str, Any]:
    """The receipt of an included transaction (without the block fields)."""
    result: dict[str, Any] = {
        "type": outcome.tx.type,
        "transaction_hash": hex(outcome.tx.hash),
        "actual_fee": {"amount": hex(outcome.fee), "unit": "FRI"},
        "execution_status": "REVERTED" if outcome.reverted else "SUCCEEDED",
        "finality_status": "ACCEPTED_ON_L2",
        "messages_sent": [],
        "events": [
            {
                "from_address": hex(e.from_address),
                "keys": [hex(k) for k in e.keys],
                "data": [hex(d) for d in e.data],
            }
            for e in outcome.events
        ],
        "execution_resources": outcome.gas.to_resources(),
    }
    if outcome.reverted:
        result["revert_reason"] = outcome.revert_reason
    if outcome.contract_address is not None:
        result["contract_address"] = hex(outcome.contract_address)
    return result


def _empty_resources() -> Any:
    from .vm import Resources

    return Resources()


def _merged_diff(ex: Execution, work: Execution) -> StateDiff:
    """The diff `ex` would have once `work` (its child) is merged, without merging it."""
    diff = ex.diff()
    extra = work.diff()
    return StateDiff(
        storage={**diff.storage, **extra.storage},
        nonces={**diff.nonces, **extra.nonces},
        deployed={**diff.deployed, **extra.deployed},
        declared={**diff.declared, **extra.declared},
    )


def _bounds_shortfall(tx: ParsedTx, gas: fees.GasUsage) -> str | None:
    """Why the transaction's resource bounds do not cover what it used, if they do not."""
    used = {
        "l1_gas": ("L1Gas", gas.l1_gas),
        "l2_gas": ("L2Gas", gas.l2_gas),
        "l1_data_gas": ("L1DataGas", gas.l1_data_gas),
    }
    for name, (label, amount) in used.items():
        bound = tx.resource_bounds[name].max_amount
        if amount > bound:
            return f"Insufficient max {label}: max amount: {bound}, actual used: {amount}."
    return None
