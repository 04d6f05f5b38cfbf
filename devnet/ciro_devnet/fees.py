"""Gas and fee of a transaction, from the Cairo resources it used (Starknet 0.13.x VM-resource rules, simplified).

- L2 gas: the heaviest Cairo resource (steps, each builtin) weighted in L1 gas as Starknet's versioned constants do,
  converted at 40,000 L2 gas per L1 gas (100 per step), after adding the OS's cost of each syscall and of the
  transaction itself; plus the archival cost of calldata, signature, events and declared code.
- L1 data gas: 32 per felt of the state diff (storage writes, nonces, deployments, declarations).
- L1 gas: 0 (no L2->L1 messages).

The fee is charged in the fee token (STRK, `feetoken`), from the sender to the sequencer, like Starknet's v3 fee:
each resource used, capped at the transaction's max amount of it, times the block's gas price (every block has the
prices below; a transaction's max price per unit must reach them). `starknet_estimateFee` reports the same gas, so a
transaction sent on an unchanged state is charged exactly its estimate. Not charged: the fee transfer itself (its
writes and steps), as the fee is fixed before it runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from typing import Any

from .classes import starkware_root
from .state import StateDiff

# L1 gas per unit of each Cairo resource (Starknet's vm_resource_fee_cost).
RESOURCE_WEIGHTS = {
    "n_steps": Fraction(25, 10_000),
    "pedersen_builtin": Fraction(8, 100),
    "range_check_builtin": Fraction(4, 100),
    "ecdsa_builtin": Fraction(512, 100),
    "bitwise_builtin": Fraction(16, 100),
    "ec_op_builtin": Fraction(256, 100),
    "poseidon_builtin": Fraction(8, 100),
    "keccak_builtin": Fraction(512, 100),
    "add_mod_builtin": Fraction(4, 100),
    "mul_mod_builtin": Fraction(4, 100),
    "range_check96_builtin": Fraction(4, 100),
}
L2_GAS_PER_STEP = 100
L2_GAS_PER_L1_GAS = int(L2_GAS_PER_STEP / RESOURCE_WEIGHTS["n_steps"])  # 40,000
GAS_PER_DATA_FELT = 5120
EVENT_KEY_FACTOR = 2
GAS_PER_CODE_BYTE = 1280
DATA_GAS_PER_FELT = 32

# Gas prices of every block, in fri (10^-18 STRK) per unit.
L1_GAS_PRICE = 10**12
L1_DATA_GAS_PRICE = 10**9
L2_GAS_PRICE = 10**9
PRICES = {"l1_gas": L1_GAS_PRICE, "l1_data_gas": L1_DATA_GAS_PRICE, "l2_gas": L2_GAS_PRICE}


@dataclass(frozen=True)
class GasUsage:
    l1_gas: int
    l1_data_gas: int
    l2_gas: int

    @property
    def fee(self) -> int:
        return self.l1_gas * L1_GAS_PRICE + self.l1_data_gas * L1_DATA_GAS_PRICE + self.l2_gas * L2_GAS_PRICE

    def to_estimate(self) -> dict[str, Any]:
        """The FEE_ESTIMATE object of `starknet_estimateFee`."""
        return {
            "l1_gas_consumed": hex(self.l1_gas),
            "l1_gas_price": hex(L1_GAS_PRICE),
            "l2_gas_consumed": hex(self.l2_gas),
            "l2_gas_price": hex(L2_GAS_PRICE),
            "l1_data_gas_consumed": hex(self.l1_data_gas),
            "l1_data_gas_price": hex(L1_DATA_GAS_PRICE),
            "overall_fee": hex(self.fee),
            "unit": "FRI",
        }

    def to_resources(self) -> dict[str, int]:
        """The EXECUTION_RESOURCES object of a receipt."""
        return {"l1_gas": self.l1_gas, "l1_data_gas": self.l1_data_gas, "l2_gas": self.l2_gas}


def charged_fee(gas: GasUsage, bounds: Mapping[str, Any]) -> int:
    """The fee a transaction pays: each resource it used, capped at its bound's max amount, at the block's price
    (a transaction that ran out of a resource is reverted and pays the whole bound of it)."""
    used = {"l1_gas": gas.l1_gas, "l1_data_gas": gas.l1_data_gas, "l2_gas": gas.l2_gas}
    return sum(min(amount, bounds[name].max_amount) * PRICES[name] for name, amount in used.items())


@cache
def _os_resources() -> dict[str, Any]:
    """Starknet's per-syscall and per-transaction OS costs, from cairo-lang's versioned constants."""
    path = starkware_root() / "starknet" / "definitions" / "versioned_constants.json"
    return dict(json.loads(path.read_text())["os_resources"])


def _add(total: dict[str, int], resources: dict[str, Any], times: int = 1) -> None:
    total["n_steps"] = total.get("n_steps", 0) + int(resources.get("n_steps", 0)) * times
    for name, count in resources.get("builtin_instance_counter", {}).items():
        total[name] = total.get(name, 0) + int(count) * times


def gas_usage(
    *,
    tx_type: str,
    n_steps: int,
    builtins: dict[str, int],
    syscalls: dict[str, int],
    calldata_length: int,
    signature_length: int,
    events: list[tuple[int, int]],  # (number of keys, number of data felts) of each event
    state_diff: StateDiff,
    code_bytes: int = 0,
) -> GasUsage:
    os_resources = _os_resources()
    total: dict[str, int] = {"n_steps": n_steps, **builtins}
    for name, count in syscalls.items():
        _add(total, os_resources["execute_syscalls"].get(name, {}), count)
    tx_costs = os_resources["execute_txs_inner"].get(tx_type, {})
    if "constant" in tx_costs:
        _add(total, tx_costs["constant"])
        factor = tx_costs["calldata_factor"]
        _add(total, factor["resources"], calldata_length // int(factor["scaling_factor"]))
    else:
        _add(total, tx_costs)
    l1_equivalent = max(RESOURCE_WEIGHTS.get(name, Fraction(0)) * count for name, count in total.items())
    archival = GAS_PER_DATA_FELT * (calldata_length + signature_length)
    archival += sum(GAS_PER_DATA_FELT * (EVENT_KEY_FACTOR * n_keys + n_data) for n_keys, n_data in events)
    archival += GAS_PER_CODE_BYTE * code_bytes
    l2_gas = math.ceil(l1_equivalent * L2_GAS_PER_L1_GAS) + archival
    contracts = {address for address, _ in state_diff.storage} | set(state_diff.nonces) | set(state_diff.deployed)
    diff_felts = 2 * len(state_diff.storage) + 2 * len(contracts) + len(state_diff.nonces)
    diff_felts += len(state_diff.deployed) + 2 * len(state_diff.declared)
    return GasUsage(l1_gas=0, l1_data_gas=DATA_GAS_PER_FELT * diff_felts, l2_gas=l2_gas)
